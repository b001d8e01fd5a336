"""Structured output and tool calls on the real Qwen2.5-Coder pair, through the official ``openai``
client: a tool call comes back parsed (plain and streamed), JSON under a strict schema always
validates (greedy under every strategy, token-identical; 20 seeded sampled runs), tool results
are fed back through Qwen's own template, and bad schemas and tools are 400s naming the field,
refused before any token is generated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from edgespec import Pair
from edgespec.constraint import Constraint
from edgespec.server import Running, ServerConfig, create_app, start_in_thread
from edgespec.tools import check_tools

pytestmark = pytest.mark.real

MODEL = "qwen"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
        "languages": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
    },
    "required": ["name", "age", "city", "languages"],
    "additionalProperties": False,
}
EXTRACT: list[ChatCompletionMessageParam] = [
    {
        "role": "user",
        "content": "Extract the person as JSON: Maria Lopez, 34, lives in Lyon, speaks Spanish and French.",
    }
]
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
ASK_WEATHER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What's the weather in Paris right now, in celsius?"}
]


@pytest.fixture(scope="module")
def pair(real_paths: dict[str, Path]) -> Iterator[Pair]:
    with Pair(real_paths["target"], real_paths["draft"], n_ctx=2048, n_threads=2, max_draft=8) as p:
        yield p


@pytest.fixture(scope="module")
def server(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESPEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        running: Running = start_in_thread(create_app(pair, ServerConfig(MODEL)))
        yield running
        running.stop()


@pytest.fixture(scope="module")
def client(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def _person(client: openai.OpenAI, strategy: str, **sampling: Any) -> tuple[str, Any]:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=EXTRACT,
        max_tokens=80,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
        extra_body={"strategy": strategy},
        **sampling,
    )
    text = reply.choices[0].message.content or ""
    assert reply.choices[0].finish_reason == "stop", text
    data = json.loads(text)
    jsonschema.validate(data, PERSON)
    return text, data


def _sampled(client: openai.OpenAI, seed: int, sampling: Any) -> str:
    # An open question, so that sampled replies can differ (an extraction is near-certain).
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person living in a European city, as JSON."}],
        max_tokens=80,
        seed=seed,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
        **sampling,
    )
    text = reply.choices[0].message.content or ""
    assert reply.choices[0].finish_reason == "stop", text
    jsonschema.validate(json.loads(text), PERSON)
    return text


def test_strict_json_schema_output_validates_and_greedy_output_agrees_across_strategies(
    client: openai.OpenAI,
) -> None:
    want, data = _person(client, "none", temperature=0)
    assert data["name"] == "Maria Lopez" and data["age"] == 34  # a real extraction, not just valid JSON
    for strategy in ("draft", "lookup", "auto"):
        assert _person(client, strategy, temperature=0)[0] == want


def test_greedy_tokens_under_a_constraint_are_identical_across_strategies(pair: Pair) -> None:
    # The server compares texts; this compares the token ids themselves.
    constraint = Constraint.json_schema(PERSON)
    runs = {}
    for strategy in ("none", "draft", "lookup", "auto"):
        pair.reset(forget_earlier=True)
        runs[strategy] = pair.generate(
            EXTRACT, max_tokens=80, temperature=0, strategy=strategy, constraint=constraint
        )
    assert runs["none"].finish_reason == "stop"
    jsonschema.validate(json.loads(runs["none"].text), PERSON)
    assert runs["draft"].stats.drafted > 0 and runs["auto"].stats.drafted > 0  # speculation did run
    assert all(r.token_ids == runs["none"].token_ids for r in runs.values())


def test_twenty_seeded_sampled_runs_all_validate(client: openai.OpenAI) -> None:
    texts = {
        _sampled(client, seed, {"temperature": 1.0, "extra_body": {"strategy": strategy}})
        for strategy in ("none", "draft", "lookup", "auto")
        for seed in range(5)
    }
    assert len(texts) > 5  # sampled: not one text twenty times


def test_a_tool_call_comes_back_parsed(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=[WEATHER], max_tokens=80, temperature=0
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"


def test_a_required_tool_call_streams_as_delta_tool_calls(client: openai.OpenAI) -> None:
    kwargs: Any = {
        "model": MODEL,
        "messages": ASK_WEATHER,
        "tools": [WEATHER],
        "max_tokens": 80,
        "temperature": 0,
    }
    whole = client.chat.completions.create(tool_choice="required", **kwargs).choices[0]
    chunks = list(client.chat.completions.create(tool_choice="required", stream=True, **kwargs))
    deltas = [c for chunk in chunks if chunk.choices for c in (chunk.choices[0].delta.tool_calls or [])]
    assert [(d.function.name, d.function.arguments) for d in deltas if d.function] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls or []
    ]
    assert json.loads(deltas[0].function.arguments) == {"city": "Paris", "unit": "celsius"}  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason == "tool_calls"


def test_tool_results_are_fed_back_through_qwens_template(pair: Pair) -> None:
    tools = check_tools([WEATHER])
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        *ASK_WEATHER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'},
    ]
    text = pair.prompter.render(messages, None, tools)  # type: ignore[arg-type]
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert '<|im_start|>user\n<tool_response>\n{"temp_c": 18}\n</tool_response><|im_end|>' in text


def _schema_format(schema: Any) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}


@pytest.mark.parametrize(
    ("kwargs", "param", "words"),
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
        (
            {"tools": [{"type": "function", "function": {"description": "no name"}}]},
            "tools[0].function.name",
            "missing",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "fly"}}},
            "tool_choice",
            "no tool is named 'fly'",
        ),
    ],
)
def test_bad_schemas_and_tools_are_400s_before_any_token(
    client: openai.OpenAI, server: Running, kwargs: Any, param: str, words: str
) -> None:
    served = httpx.get(server.url + "/health").json()["served"]
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=EXTRACT, max_tokens=20, **kwargs)
    error = raised.value
    assert error.status_code == 400
    assert error.param == param and error.type == "invalid_request_error"
    assert words in error.message and "\n" not in error.message
    assert httpx.get(server.url + "/health").json()["served"] == served  # no generation ran
