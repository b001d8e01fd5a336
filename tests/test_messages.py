"""Chat messages checked as OpenAI checks them: the rule itself, and the Python API that follows it.

The server's side (the same rule answered as a 400) is in test_server.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from edgespec import Pair
from edgespec.errors import InvalidParameterError, MessageError
from edgespec.messages import check_messages

USER = {"role": "user", "content": "Hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}


@pytest.mark.parametrize(
    ("messages", "param", "code", "words"),
    [
        ([], "messages", "empty_array", "at least one"),
        ("Hi", "messages", "invalid_type", "a string"),
        ({"role": "user"}, "messages", "invalid_type", "an object"),
        ([USER, "Hi"], "messages[1]", "invalid_type", "a string"),
        ([USER, {"role": "bogus", "content": "hi"}], "messages[1].role", "invalid_value", "'bogus'"),
        ([{"content": "hi"}], "messages[0].role", "missing_required_parameter", "'developer'"),
        ([{"role": 3, "content": "hi"}], "messages[0].role", "invalid_value", "3"),
        ([{"role": "user"}], "messages[0].content", "missing_required_parameter", "text parts"),
        ([{"role": "user", "content": None}], "messages[0].content", "missing_required_parameter", "missing"),
        ([USER, {"role": "assistant"}], "messages[1].content", "missing_required_parameter", "tool_calls"),
        ([{"role": "user", "content": 3}], "messages[0].content", "invalid_type", "a number"),
        ([{"role": "user", "content": []}], "messages[0].content", "empty_array", "at least one"),
        ([{"role": "user", "content": ["Hi"]}], "messages[0].content[0]", "invalid_type", "a string"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}],
                }
            ],
            "messages[0].content[1].type",
            "unsupported_content",
            "no vision",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio"}]}],
            "messages[0].content[0].type",
            "unsupported_content",
            "only 'text'",
        ),
        ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text", None, "missing"),
        ([{"role": "user", "content": "a", "name": 5}], "messages[0].name", "invalid_type", "a number"),
        (
            [USER, {"role": "assistant", "tool_calls": []}],
            "messages[1].tool_calls",
            "invalid_type",
            "non-empty",
        ),
        (
            [USER, {"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]}],
            "messages[1].tool_calls[0].type",
            "invalid_value",
            "'function'",
        ),
        (
            [USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "add"}}]}],
            "messages[1].tool_calls[0].function.arguments",
            "missing_required_parameter",
            "string",
        ),
        (
            [{"role": "tool", "content": "3"}],
            "messages[0].tool_call_id",
            "missing_required_parameter",
            "string",
        ),
    ],
)
def test_refusals_name_the_field(messages: Any, param: str, code: str | None, words: str) -> None:
    with pytest.raises(MessageError) as caught:
        check_messages(messages)
    error = caught.value
    assert error.param == param
    assert code is None or error.code == code
    message = str(error)
    assert message.startswith(param + ": ") and words in message and "\n" not in message


def test_accepted_messages_come_out_as_templates_take_them() -> None:
    messages = [
        {"role": "developer", "content": "Be brief.", "id": "front-end-field"},
        {"role": "user", "content": [{"type": "text", "text": "Add "}, {"type": "text", "text": "1 and 2."}]},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "3", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "3.", "name": "calc"},
    ]
    assert check_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add 1 and 2."},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "3", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "3.", "name": "calc"},
    ]
    assert check_messages(check_messages(messages)) == check_messages(messages)  # checked output passes


def test_the_python_api_refuses_what_openai_refuses(tiny_pair: Pair) -> None:
    for bad in ([{"role": "bogus", "content": "hi"}], [{"role": "user"}], [USER, {"role": "assistant"}]):
        with pytest.raises(InvalidParameterError, match=r"^messages\[\d\]\.(role|content): "):
            tiny_pair.generate(bad, max_tokens=2, strategy="none")
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    with pytest.raises(InvalidParameterError, match="no vision"):
        tiny_pair.stream(image, strategy="none")
    with pytest.raises(InvalidParameterError, match="at least one message"):
        tiny_pair.prompter.render([])


def test_the_python_api_takes_what_openai_takes(tiny_pair: Pair) -> None:
    parts = [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}, USER]
    plain = [{"role": "system", "content": "Be brief."}, USER]
    assert tiny_pair.prompter.tokenize(parts) == tiny_pair.prompter.tokenize(plain)
    result = tiny_pair.generate(parts, max_tokens=3, temperature=0, strategy="none")
    assert result.text == tiny_pair.generate(plain, max_tokens=3, temperature=0, strategy="none").text
