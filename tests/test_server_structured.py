"""Structured output and tool calls through the official ``openai`` client: ``response_format``,
llama-server's ``json_schema`` and ``grammar``, ``tools`` with every ``tool_choice``, plain and
streamed, and the 400s for bad schemas and tools. On the tiny models (random text, so every
structure comes from the constraint); the real pair's tool calls are in test_real_structured.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from edgespec import Pair
from edgespec.server import Running, ServerConfig, create_app, start_in_thread

MODEL = "tiny"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "n": {"type": "integer", "maximum": 99}},
    "required": ["name", "n"],
    "additionalProperties": False,
}
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "maximum": 999},
                "b": {"type": "integer", "maximum": 999},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESPEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def server(tiny: dict[str, Path]) -> Iterator[Running]:
    # The tools are described in a system prompt of some 900 byte tokens: room for it.
    with Pair(tiny["target"], tiny["draft-noisy"], n_ctx=2048, n_threads=1) as pair:
        running = start_in_thread(create_app(pair, ServerConfig(MODEL)))
        yield running
        running.stop()


@pytest.fixture(scope="module")
def client(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _schema_format(schema: dict[str, Any]) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}


@pytest.mark.parametrize("strategy", ["none", "draft", "lookup", "auto"])
def test_json_schema_replies_validate_and_greedy_ones_agree(client: openai.OpenAI, strategy: str) -> None:
    def ask(strategy: str, **sampling: Any) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=100, response_format=_schema_format(SCHEMA),
            extra_body={"strategy": strategy}, **sampling,
        )  # fmt: skip
        assert reply.choices[0].finish_reason == "stop"
        text = reply.choices[0].message.content
        assert text is not None
        jsonschema.validate(json.loads(text), SCHEMA)
        return text

    assert ask(strategy, temperature=0) == ask("none", temperature=0)
    for seed in range(3):
        ask(strategy, temperature=1.0, seed=seed)


def test_json_object_and_llama_server_fields(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=60, temperature=0, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
    text = (
        client.completions.create(
            model=MODEL,
            prompt="x",
            max_tokens=30,
            temperature=0.9,
            seed=1,
            extra_body={"grammar": 'root ::= "ab" [0-9]+'},
        )
        .choices[0]
        .text
    )
    assert re.fullmatch("ab[0-9]+", text)
    text = (
        client.completions.create(
            model=MODEL, prompt="x", max_tokens=100, temperature=0, extra_body={"json_schema": SCHEMA}
        )
        .choices[0]
        .text
    )
    jsonschema.validate(json.loads(text), SCHEMA)


def test_json_schema_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=100,
        temperature=0,
        stream=True,
        response_format=_schema_format(SCHEMA),
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), SCHEMA)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_a_required_tool_call_comes_back_parsed(client: openai.OpenAI, choice: Any) -> None:
    # One call: the tiny model, free to go on, calls again and again.
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=200, temperature=0, tools=[WEATHER, ADD], tool_choice=choice,
        parallel_tool_calls=False,
    )  # fmt: skip
    choice_ = reply.choices[0]
    assert choice_.finish_reason == "tool_calls"
    calls = choice_.message.tool_calls
    assert calls and choice_.message.content is None
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        tool = {"get_weather": WEATHER, "add": ADD}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
    if isinstance(choice, dict):
        assert [c.function.name for c in calls] == ["add"]  # the named one, once


def test_a_tool_call_streams_as_delta_tool_calls(client: openai.OpenAI) -> None:
    kwargs: Any = {"model": MODEL, "messages": HELLO, "max_tokens": 200, "temperature": 0, "tools": [WEATHER]}
    kwargs["parallel_tool_calls"] = False
    whole = client.chat.completions.create(tool_choice="required", **kwargs).choices[0]
    chunks = list(client.chat.completions.create(tool_choice="required", stream=True, **kwargs))
    deltas = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert [(d.function.name, d.function.arguments) for d in deltas if d.function] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls or []
    ]
    assert all(d.id and d.type == "function" for d in deltas)
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=20, temperature=0, tools=[WEATHER], tool_choice="none"
    )
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_tool_results_are_fed_back(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=200, temperature=0, tools=[ADD], tool_choice="required",
        parallel_tool_calls=False,
    )  # fmt: skip
    call = (first.choices[0].message.tool_calls or [])[0]
    messages: list[ChatCompletionMessageParam] = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, tools=[ADD])
    assert reply.usage is not None and first.usage is not None
    # The call and its result were read: this template knows no tools, so they are written out as
    # <tool_call> and <tool_response> blocks (byte tokens here: one a character).
    written = len(
        f"<tool_call>\n{call.function.arguments}\n</tool_call><tool_response>\n42\n</tool_response>"
    )
    assert reply.usage.prompt_tokens >= first.usage.prompt_tokens + written


def _error(server: Running, body: dict[str, Any], path: str = "/v1/chat/completions") -> dict[str, Any]:
    response = httpx.post(
        server.url + path, json={"model": MODEL, "messages": HELLO, "max_tokens": 5, **body}
    )
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "\n" not in error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            {"response_format": _schema_format({"type": "strin"})},
            "response_format.json_schema.schema",
            "Invalid type",
        ),
        (
            {"response_format": _schema_format({"type": "array", "uniqueItems": True})},
            "response_format.json_schema.schema",
            "Unimplemented keys",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "missing"),
        ({"response_format": {"type": "yaml"}}, "response_format.type", "json_schema"),
        ({"grammar": "start: nope"}, "grammar", "unknown name"),
        ({"grammar": "x", "json_schema": {}}, "grammar", "not both"),
        (
            {"tools": [{"type": "function", "function": {"description": "no name"}}]},
            "tools[0].function.name",
            "missing",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools[0].function.name",
            "invalid name",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", "second tool"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type", "'function'"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]},
            "tools[0].function.parameters",
            "Invalid type",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "fly"}}},
            "tool_choice",
            "no tool is named 'fly'",
        ),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice", "invalid value"),
        ({"tool_choice": "required"}, "tool_choice", "give tools"),
        ({"tools": [WEATHER], "grammar": 'root ::= "x"'}, "response_format", "cannot go with tools"),
    ],
)
def test_bad_schemas_and_tools_are_400s_naming_the_field(
    server: Running, body: dict[str, Any], param: str, words: str
) -> None:
    error = _error(server, body)
    assert error["param"] == param
    assert words in error["message"]
    assert _health(server)["served"] >= 0


def _health(server: Running) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(server.url + "/health").json()
    return result


def test_completions_refuse_a_bad_schema_too(server: Running) -> None:
    error = _error(server, {"prompt": "x", "json_schema": {"type": "strin"}}, "/v1/completions")
    assert error["param"] == "json_schema"
