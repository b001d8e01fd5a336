"""Tool calls in a model's own words: how a family writes them, reading them back out of the text
(as it streams), and the grammar that makes a model call one.

Two families are covered:

- **Hermes** (Qwen2.5, Qwen3, Hermes 2/3, and any chat template that writes ``<tool_call>``): each
  call is ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, possibly after text.
- **Llama 3.1 / 3.2** (templates with ``<|start_header_id|>``): the whole reply is one JSON
  object ``{"name": ..., "parameters": {...}}``.

A chat template that does not take ``tools`` at all gets the tools described in a system
message in the Hermes way (the wording of Qwen's template), and is read as Hermes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from edgespec.constraint import JSON_LAYOUT, Constraint
from edgespec.errors import ConstraintError, InvalidParameterError
from edgespec.llama.vocab import is_special
from edgespec.options import GenerationOptions
from edgespec.tools import Tool, ToolCall, Tools

if TYPE_CHECKING:
    from edgespec.prompts import Prompter

Piece = str | ToolCall
"""What a reply is made of: content text, and calls."""

_HERMES_SYSTEM = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": '
    "<args-json-object>}}\n</tool_call>"
)


def _call(obj: object, arguments_key: str) -> ToolCall | None:
    """A call from a parsed ``{"name": ..., "<arguments_key>": {...}}``, or None if it is not one."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get(arguments_key, obj.get("arguments", {}))
    if not isinstance(arguments, Mapping):
        return None
    return ToolCall(obj["name"], json.dumps(arguments, ensure_ascii=False))


def _call_schema(tools: Sequence[Tool], arguments_key: str) -> dict[str, Any]:
    """A JSON schema that admits one call of one of ``tools``, laid out so that its keys are forced."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, arguments_key: t.parameters},
            "required": ["name", arguments_key],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return {"x-guidance": JSON_LAYOUT, **(options[0] if len(options) == 1 else {"anyOf": options})}


def _answer_schema(answer: Constraint) -> dict[str, Any]:
    """The JSON schema of a constraint on the answer; only JSON constraints combine with tools."""
    if answer.kind not in ("json_schema", "json_object"):
        raise ConstraintError(
            f"a {answer.kind} constraint cannot go with tools the model may call; use a JSON schema, "
            "json_object, or tool_choice 'none'",
            "response_format",
        )
    schema: dict[str, Any] = json.loads(answer.source or '{"type": "object"}')
    return {"x-guidance": JSON_LAYOUT, **schema}


class Hermes:
    """``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, any number, after any text."""

    name = "hermes"
    OPEN, CLOSE = "<tool_call>", "</tool_call>"

    def __init__(self, names: Collection[str] = ()) -> None:
        self.names = tuple(names)
        """The functions a reply may call."""

    def splitter(self) -> Splitter:
        """A reader of one reply's text, as it streams."""
        return HermesSplitter(self.names)

    def grammar(
        self, tools: Tools, special: Callable[[str], bool], answer: Constraint | None = None
    ) -> Constraint:
        """The grammar of a reply that calls one of the tools (of :attr:`Tools.forced`), or one
        or more if parallel calls are allowed; with ``answer`` (a JSON constraint, and a choice
        that lets the model answer) a reply may instead be that JSON. ``special(text)`` says
        whether the model has a special token spelled so (Qwen's ``<tool_call>``), which the
        grammar then names."""
        tag = {t: t if special(t) else json.dumps(t) for t in (self.OPEN, self.CLOSE)}
        schema = json.dumps(_call_schema(tools.forced or tools.tools, "arguments"), ensure_ascii=False)
        rules = [
            f'call: {tag[self.OPEN]} "\\n" %json {schema} "\\n" {tag[self.CLOSE]}',
            # A newline may follow the last call (Qwen writes one), so the model may end after it.
            'calls: call ("\\n" call)* "\\n"?'
            if tools.parallel and tools.choice == "required"
            else 'calls: call "\\n"?',
        ]
        if answer is not None and not tools.forced:
            rules.append(f"answer: %json {json.dumps(_answer_schema(answer), ensure_ascii=False)}")
            rules.insert(0, "start: calls | answer")
        else:
            rules.insert(0, "start: calls")
        return Constraint.grammar("\n".join(rules))

    def system_prompt(self, tools: Tools) -> str:
        """The tools described for a model whose template does not take them."""
        return _HERMES_SYSTEM.format(
            tools="\n".join(json.dumps(s, ensure_ascii=False) for s in tools.specs())
        )

    def plain_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Earlier calls and their results written out as text, for a template that knows no tools
        (``messages`` as :func:`~edgespec.tools.template_messages` gives them: arguments as objects)."""
        out = []
        for m in messages:
            content = m.get("content") or ""
            if m.get("role") == "assistant" and m.get("tool_calls"):
                calls = [
                    f"{self.OPEN}\n{json.dumps(c['function'], ensure_ascii=False)}\n{self.CLOSE}"
                    for c in m["tool_calls"]
                ]
                content = "\n".join([content, *calls] if content else calls)
                m = {"role": "assistant", "content": content}
            elif m.get("role") == "tool":
                m = {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
            out.append(dict(m))
        return out


class Llama3(Hermes):
    """The whole reply one JSON object: ``{"name": ..., "parameters": {...}}`` (Llama 3.1, 3.2)."""

    name = "llama3"

    def splitter(self) -> Splitter:
        return Splitter(self.names, "parameters")

    def grammar(
        self, tools: Tools, special: Callable[[str], bool], answer: Constraint | None = None
    ) -> Constraint:
        schema = _call_schema(tools.forced or tools.tools, "parameters")
        if answer is not None and not tools.forced:
            schema = {"x-guidance": JSON_LAYOUT, "anyOf": [schema, _answer_schema(answer)]}
        return Constraint.json_schema(schema)


def prepare(
    tools: Tools | None,
    prompt: object,
    prompter: Prompter,
    chat_template: str | None,
    options: GenerationOptions,
) -> tuple[Hermes | None, GenerationOptions]:
    """For a generation with ``tools``: the format to read its calls in (None when it may call
    none), and ``options`` with the constraint its reply must follow."""
    if tools is None:
        return None, options
    if isinstance(prompt, str):  # token ids are taken as rendered with the tools
        raise InvalidParameterError("tools need a prompt of chat messages")
    if tools.choice == "none":
        return None, options
    fmt = detect(prompter.template(chat_template), tools.names())[0]
    special = partial(is_special, prompter.model)
    return fmt, options.replace(constraint=reply_constraint(fmt, tools, options.constraint, special))


def reply_constraint(
    fmt: Hermes, tools: Tools, answer: Constraint | None, special: Callable[[str], bool]
) -> Constraint | None:
    """The constraint on a reply with ``tools``: a call of one of them when the choice forces one;
    a call or the ``answer`` constraint (JSON) when the model may do either; else none, or just
    ``answer`` when the model may call nothing."""
    if tools.choice == "none":
        return answer
    if tools.forced or answer is not None:
        return fmt.grammar(tools, special, answer)
    return None


def detect(template: str | None, names: Collection[str] = ()) -> tuple[Hermes, bool]:
    """The tool-call format of a chat template (reading calls of ``names``), and whether the
    template takes ``tools`` itself."""
    text = template or ""
    takes_tools = "tools" in text
    if "<|start_header_id|>" in text and "<tool_call>" not in text:
        return Llama3(names), takes_tools
    return Hermes(names), takes_tools


class Splitter:
    """Reads one reply's text as it streams: content goes out as soon as it cannot be part of a
    call; a call goes out once whole. Whitespace between content and calls is dropped.

    Small models often write a call as a bare JSON object (or in a ```json fence) rather than in
    their family's way: a reply that is nothing but such an object, naming one of ``names``, is
    read as that call. So a reply that starts with ``{`` or a fence is held until its end."""

    def __init__(self, names: Collection[str], arguments_key: str = "arguments") -> None:
        self.calls: list[ToolCall] = []
        self.names = set(names)
        self.arguments_key = arguments_key
        self._space = ""  # whitespace held until more content follows it
        self._held: str | None = ""  # the reply so far while it may be a bare call; None once not

    def push(self, text: str) -> list[Piece]:
        """The pieces ``text`` completes."""
        if self._held is None:
            return self._stream(text)
        self._held += text
        start = self._held.lstrip()
        if not start or start.startswith(("{", "[", "`")):
            return []
        text, self._held = self._held, None
        return self._stream(text)

    def finish(self) -> list[Piece]:
        """The pieces left at the end of the reply."""
        if self._held is not None:
            text, self._held = self._held, None
            calls = _bare_calls(text, self.names, self.arguments_key)
            if calls:
                return self._calls(calls)
            out = self._stream(text)
            return [*out, *self._end()]
        return self._end()

    def _stream(self, text: str) -> list[Piece]:
        return self._content(text)

    def _end(self) -> list[Piece]:
        return []

    def _content(self, text: str) -> list[Piece]:
        if not text:
            return []
        stripped = text.rstrip()
        if not stripped:
            self._space += text
            return []
        out, self._space = self._space + stripped, text[len(stripped) :]
        return [out]

    def _calls(self, calls: Sequence[ToolCall]) -> list[Piece]:
        self._space = ""
        self.calls.extend(calls)
        return list(calls)


class HermesSplitter(Splitter):
    """``<tool_call>`` blocks among text (a block naming any function counts)."""

    def __init__(self, names: Collection[str]) -> None:
        super().__init__(names)
        self._buf = ""
        self._inside = False

    def _stream(self, text: str) -> list[Piece]:
        self._buf += text
        out: list[Piece] = []
        while True:
            if not self._inside:
                i = self._buf.find(Hermes.OPEN)
                if i < 0:
                    keep = _partial_suffix(self._buf, Hermes.OPEN)
                    out += self._content(self._buf[: len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep :]
                    return out
                out += self._content(self._buf[:i])
                self._buf, self._inside = self._buf[i + len(Hermes.OPEN) :], True
            else:
                j = self._buf.find(Hermes.CLOSE)
                if j < 0:
                    return out
                out += self._block(self._buf[:j], closed=True)
                self._buf, self._inside = self._buf[j + len(Hermes.CLOSE) :], False

    def _end(self) -> list[Piece]:
        rest, self._buf = self._buf, ""
        if self._inside:  # the reply ended inside a block: a call if its JSON is whole
            return self._block(rest, closed=False)
        return self._content(rest)

    def _block(self, body: str, closed: bool) -> list[Piece]:
        try:
            call = _call(json.loads(body), "arguments")
        except json.JSONDecodeError:
            call = None
        if call is None:  # not a call after all: the text stays content
            return self._content(Hermes.OPEN + body + (Hermes.CLOSE if closed else ""))
        return self._calls([call])


def _bare_calls(text: str, names: Collection[str], arguments_key: str) -> list[ToolCall]:
    """The calls a reply that is only a JSON call object (or a list of them, or either in a fence)
    makes, each naming one of ``names``; empty when it is anything else."""
    body = text.strip()
    if body.startswith("```"):
        body = body.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return []
    calls = [_call(o, arguments_key) for o in (obj if isinstance(obj, list) else [obj])]
    if not calls or any(c is None or c.name not in names for c in calls):
        return []
    return [c for c in calls if c is not None]


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that begins ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def split(fmt: Hermes, text: str) -> tuple[str, list[ToolCall]]:
    """A whole reply's content (calls taken out) and calls."""
    splitter = fmt.splitter()
    pieces = [*splitter.push(text), *splitter.finish()]
    return "".join(p for p in pieces if isinstance(p, str)), splitter.calls
