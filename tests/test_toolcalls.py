"""Tool calls read out of replies (Hermes/Qwen and Llama 3.1 formats, whole and streamed in pieces),
the formats found from chat templates, the tools checked, and the grammars that make a call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgespec.constraint import Constraint
from edgespec.errors import ConstraintError
from edgespec.toolcalls import Hermes, Llama3, detect, reply_constraint, split
from edgespec.tools import ToolCall, check_tools, template_messages

NAMES = ("get_weather", "add")
QWEN_TEMPLATE = "{%- if tools %}...<tool_call>...{%- endif %}"
LLAMA_TEMPLATE = "<|start_header_id|>system<|end_header_id|>{% if tools %}...{% endif %}"


def _pieces(fmt: Hermes, text: str, size: int) -> list[str | ToolCall]:
    """Everything a splitter gives for ``text`` pushed ``size`` characters at a time."""
    splitter = fmt.splitter()
    out = []
    for i in range(0, len(text), size):
        out += splitter.push(text[i : i + size])
    return [*out, *splitter.finish()]


def _calls(pieces: list[str | ToolCall]) -> list[tuple[str, Any]]:
    return [(p.name, json.loads(p.arguments)) for p in pieces if isinstance(p, ToolCall)]


HERMES_CASES = [
    (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        [("get_weather", {"city": "Paris"})],
    ),
    (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
        "Let me check.",
        [("get_weather", {"city": "Oslo"}), ("add", {"a": 1, "b": 2})],
    ),
    ("No tools needed: 2 < 3 and <b>bold</b>.", "No tools needed: 2 < 3 and <b>bold</b>.", []),
    (
        '<tool_call>\n{"name": "add", "arguments": {"a": 1',
        '<tool_call>\n{"name": "add", "arguments": {"a": 1',
        [],
    ),
    ('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n', "", [("add", {"a": 1, "b": 2})]),
    ("<tool_call>not json</tool_call> after", "<tool_call>not json</tool_call> after", []),
    ('```json\n{"name": "add", "arguments": {"a": 5, "b": 3}}\n```', "", [("add", {"a": 5, "b": 3})]),
    ('{"name": "add", "arguments": {"a": 5}}', "", [("add", {"a": 5})]),
    ('{"name": "fly", "arguments": {}}', '{"name": "fly", "arguments": {}}', []),  # no such tool: content
    ('{"answer": 42}', '{"answer": 42}', []),
]


@pytest.mark.parametrize(("text", "content", "calls"), HERMES_CASES)
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_hermes_replies_split_into_content_and_calls(
    text: str, content: str, calls: list[tuple[str, Any]], size: int
) -> None:
    fmt = Hermes(NAMES)
    pieces = _pieces(fmt, text, size)
    assert "".join(p for p in pieces if isinstance(p, str)) == content
    assert _calls(pieces) == calls
    whole_content, whole_calls = split(fmt, text)
    assert whole_content == content and [(c.name, json.loads(c.arguments)) for c in whole_calls] == calls


def test_content_streams_before_the_reply_ends_and_a_tag_is_held_back() -> None:
    splitter = Hermes(NAMES).splitter()
    assert splitter.push("Sure, ") == ["Sure,"]  # the space waits: a call may follow it
    assert splitter.push("one moment <tool") == [" one moment"]  # "<tool" may open a call
    assert splitter.push('_call>\n{"name": "add", "arguments": {}}') == []
    [call] = splitter.push("\n</tool_call>")
    assert isinstance(call, ToolCall) and call.name == "add" and call.arguments == "{}"
    assert splitter.finish() == []
    assert call.id.startswith("call_") and call.to_openai()["function"] == {"name": "add", "arguments": "{}"}


LLAMA_CASES = [
    ('{"name": "get_weather", "parameters": {"city": "Rome"}}', "", [("get_weather", {"city": "Rome"})]),
    ('  {"name": "add", "parameters": {"a": 1, "b": 2}}', "", [("add", {"a": 1, "b": 2})]),
    ("The weather is fine.", "The weather is fine.", []),
    ('{"name": "add", "parameters": {"a": 1', '{"name": "add", "parameters": {"a": 1', []),
]


@pytest.mark.parametrize(("text", "content", "calls"), LLAMA_CASES)
@pytest.mark.parametrize("size", [1, 1000])
def test_llama3_replies_split_into_content_and_calls(
    text: str, content: str, calls: list[tuple[str, Any]], size: int
) -> None:
    pieces = _pieces(Llama3(NAMES), text, size)
    assert "".join(p for p in pieces if isinstance(p, str)) == content.strip()
    assert _calls(pieces) == calls


def test_the_format_is_found_from_the_template() -> None:
    fmt, takes = detect(QWEN_TEMPLATE)
    assert type(fmt) is Hermes and takes
    fmt, takes = detect(LLAMA_TEMPLATE)
    assert type(fmt) is Llama3 and takes
    fmt, takes = detect("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert type(fmt) is Hermes and not takes  # described in a system message, read as Hermes


def _tool(name: str, **params: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": params, "required": list(params), "additionalProperties": False}
    return {"type": "function", "function": {"name": name, "parameters": schema}}


WEATHER = _tool("get_weather", city={"type": "string"})
ADD = _tool("add", a={"type": "integer"}, b={"type": "integer"})


def test_check_tools_reads_the_choice() -> None:
    tools = check_tools([WEATHER, ADD])
    assert tools is not None and tools.choice == "auto" and tools.forced == ()
    assert check_tools([WEATHER, ADD], "required").forced == tools.tools  # type: ignore[union-attr]
    named = check_tools([WEATHER, ADD], {"type": "function", "function": {"name": "add"}})
    assert named is not None and [t.name for t in named.forced] == ["add"]
    assert check_tools(None) is None and check_tools([]) is None
    no_params = check_tools([{"type": "function", "function": {"name": "now"}}])
    assert no_params is not None and no_params.tools[0].parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("tools", "choice", "param"),
    [
        ({"type": "function"}, None, "tools"),
        ([{"type": "function", "function": {}}], None, "tools[0].function.name"),
        ([{"type": "function", "function": {"name": "x" * 65}}], None, "tools[0].function.name"),
        (
            [{"type": "function", "function": {"name": "f", "description": 3}}],
            None,
            "tools[0].function.description",
        ),
        ([WEATHER], "sometimes", "tool_choice"),
        ([WEATHER], {"type": "function"}, "tool_choice"),
        ([WEATHER], {"type": "function", "function": {"name": "add"}}, "tool_choice"),
        (None, "required", "tool_choice"),
    ],
)
def test_check_tools_refuses_what_openai_refuses(tools: object, choice: object, param: str) -> None:
    with pytest.raises(ConstraintError) as err:
        check_tools(tools, choice)
    assert err.value.param == param and str(err.value).startswith(param)


def test_a_tool_calls_arguments_become_an_object_for_templates() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    [message] = template_messages([{"role": "assistant", "content": "", "tool_calls": [call]}])
    assert message["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    bad = {**call, "function": {"name": "add", "arguments": "not json"}}
    [message] = template_messages([{"role": "assistant", "content": "", "tool_calls": [bad]}])
    assert message["tool_calls"][0]["function"]["arguments"] == "not json"


def _matches(constraint: Constraint, text: str) -> bool:
    """Whether llguidance's grammar takes ``text`` whole (an empty byte tokenizer reads any bytes)."""
    import llguidance

    tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTokenizer()))
    matcher = llguidance.LLMatcher(tokenizer, constraint.compiled, log_level=0)
    ok = matcher.consume_tokens(list(text.encode()))
    return bool(ok and matcher.is_accepting())


class _ByteTokenizer:
    """One token per byte, and an end token (256): enough to run a grammar over text."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([b]) for b in range(256)] + [b"\xff</s>"]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


def test_the_hermes_grammar_admits_calls_of_the_chosen_tools_only() -> None:
    never_special = lambda _text: False  # noqa: E731
    required = check_tools([WEATHER, ADD], "required")
    assert required is not None
    grammar = reply_constraint(Hermes(NAMES), required, None, never_special)
    assert grammar is not None
    call = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    assert _matches(grammar, call) and _matches(grammar, call + "\n" + call + "\n")
    assert not _matches(grammar, '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>')
    assert not _matches(grammar, "Hello")
    named = check_tools([WEATHER, ADD], {"type": "function", "function": {"name": "get_weather"}})
    assert named is not None
    one = reply_constraint(Hermes(NAMES), named, None, never_special)
    assert one is not None and not _matches(one, call)  # only get_weather
    assert _matches(one, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    assert not _matches(
        one, 2 * '<tool_call>\n{"name": "get_weather", "arguments": {"city": "O"}}\n</tool_call>'
    )
    auto = check_tools([ADD])
    assert auto is not None and reply_constraint(Hermes(NAMES), auto, None, never_special) is None
    either = reply_constraint(Hermes(NAMES), auto, Constraint.json_object(), never_special)
    assert either is not None and _matches(either, '{"x": 1}') and _matches(either, call)
    with pytest.raises(ConstraintError, match="cannot go with tools"):
        reply_constraint(Hermes(NAMES), auto, Constraint.regex("a+"), never_special)


def test_the_llama3_grammar_is_a_json_call() -> None:
    required = check_tools([ADD], "required")
    assert required is not None
    grammar = reply_constraint(Llama3(NAMES), required, None, lambda _t: False)
    assert grammar is not None and grammar.kind == "json_schema"
    assert _matches(grammar, '{"name": "add", "parameters": {"a": 1, "b": 2}}')
    assert not _matches(grammar, '{"name": "add", "arguments": {"a": 1, "b": 2}}')
