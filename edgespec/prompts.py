"""Prompts as the target's tokens: raw text as it is, chat messages through a chat template.

>>> prompter = Prompter(model)
>>> prompter.tokenize([{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

from collections.abc import Sequence

from edgespec import chat, toolcalls
from edgespec.errors import InvalidParameterError, TemplateError
from edgespec.llama import Model
from edgespec.messages import check_messages
from edgespec.tools import Tools, template_messages

Prompt = str | Sequence[chat.Message]
"""A raw text prompt, or chat messages rendered with the target's chat template."""


class Prompter:
    """Renders and tokenizes prompts for one model (the target: its template, its vocabulary)."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def special_text(self, token: int) -> str:
        """A control token's text, as templates write it (``bos_token``, ``eos_token``)."""
        return self.model.token_bytes(token, special=True).decode("utf-8", "replace")

    def render(
        self, messages: Sequence[chat.Message], chat_template: str | None = None, tools: Tools | None = None
    ) -> str:
        """Chat messages as prompt text, through ``chat_template`` or the model's own template.

        With ``tools``, a template that takes ``tools`` gets them (unless the choice is
        ``none``); another gets them described in a system message (the same), and earlier calls
        and results written out as text (the Hermes way, :mod:`edgespec.toolcalls`)."""
        template = self.template(chat_template)
        bos, eos = self.special_text(self.model.bos), self.special_text(self.model.eos)
        if tools is None:
            return chat.render(template, messages, bos_token=bos, eos_token=eos)
        offered = tools.specs() if tools.choice != "none" else None
        fmt, takes_tools = toolcalls.detect(template)
        if takes_tools:
            return chat.render(template, messages, bos_token=bos, eos_token=eos, tools=offered)
        plain = fmt.plain_messages(template_messages(check_messages(messages)))
        if offered:
            described = fmt.system_prompt(tools)
            if plain[0]["role"] == "system":
                plain[0] = {"role": "system", "content": f"{plain[0]['content']}\n\n{described}"}
            else:
                plain.insert(0, {"role": "system", "content": described})
        return chat.render(template, plain, bos_token=bos, eos_token=eos)

    def template(self, chat_template: str | None = None) -> str:
        """``chat_template``, or else the model's own; :class:`TemplateError` when it has none."""
        template = chat_template or self.model.chat_template()
        if template is None:
            raise TemplateError(
                f"{self.model.path.name} has no chat template; give a raw prompt (--raw) or a template"
            )
        return template

    def tokenize(
        self, prompt: Prompt | list[int], chat_template: str | None = None, tools: Tools | None = None
    ) -> list[int]:
        """Prompt tokens: raw text as is, chat messages through the chat template (with ``tools``),
        token ids as given."""
        if isinstance(prompt, str):
            return self.model.tokenize(prompt, add_special=True, parse_special=True)
        ids = [t for t in prompt if isinstance(t, int)]
        if len(ids) == len(prompt):  # token ids (or none at all)
            return ids
        if ids:
            raise InvalidParameterError("a prompt is text, chat messages or token ids, not a mix of them")
        text = self.render([m for m in prompt if not isinstance(m, int)], chat_template, tools)
        # Templates that write the BOS themselves must not get a second one from add_special.
        bos = self.special_text(self.model.bos)
        return self.model.tokenize(text, add_special=not (bos and text.startswith(bos)), parse_special=True)
