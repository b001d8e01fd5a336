"""Chat prompts: the model's own ``tokenizer.chat_template`` rendered in jinja2's sandbox.

A chat template comes from the model file, so it is untrusted code: the sandbox keeps it away
from Python's internals (attributes such as ``__class__`` or ``__globals__``, methods that mutate),
and any attempt to reach them stops the rendering with a :class:`TemplateError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgespec.errors import TemplateError
from edgespec.messages import check_messages
from edgespec.tools import template_messages

Message = Mapping[str, Any]
"""A chat message: ``{"role": "user", "content": "Hi"}``; :mod:`edgespec.messages` has the rules."""


def _raise(message: str) -> None:
    raise TemplateError(f"the chat template refused the conversation: {message}")


class _Sandbox(ImmutableSandboxedEnvironment):
    """jinja2's sandbox, refusing outright what it would otherwise hand back as undefined.

    The stock sandbox renders a lone unsafe attribute (``{{ x.__class__ }}``) as nothing and fails
    only when the template goes further; a template that reaches for internals is hostile, so any
    such reach stops the rendering.
    """

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    # The settings Hugging Face's apply_chat_template uses, so templates render as their authors expect.
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False, **_: json.dumps(
        x, indent=indent, ensure_ascii=ensure_ascii
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the chat template does not parse: {exc}") from exc


def render(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Render ``messages`` with a jinja chat template, ready for the assistant's reply; ``tools``
    (OpenAI's tool objects) go to the template's ``tools`` variable.

    Messages OpenAI's API would refuse raise :class:`~edgespec.errors.MessageError`; a template
    that fails, or reaches for Python internals, raises :class:`TemplateError`.
    """
    checked = template_messages(check_messages(messages))
    try:
        return _compile(template).render(
            messages=checked,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            tools=list(tools) if tools else None,
        )
    except TemplateError:
        raise
    except SecurityError as exc:
        raise TemplateError(
            f"the sandbox stopped the chat template: {exc} (a template may not reach Python internals)"
        ) from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the chat template failed to render: {exc}") from exc
