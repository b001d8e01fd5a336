"""The OpenAI-compatible server, from the outside: the official ``openai`` client (and raw HTTP where
the client hides what is tested) against real uvicorn servers on loopback, over the tiny models.

The tiny models emit random bytes, so tests compare texts between requests rather than expecting words.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from edgespec import Pair
from edgespec.engine import Step
from edgespec.errors import LlamaError
from edgespec.server import Running, ServerConfig, create_app, start_in_thread

MODEL = "tiny"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]
LONG_PROMPT = "x45"
"""A raw prompt the tiny target continues greedily for 300 tokens without an end-of-generation token."""
TIMING_KEYS = {
    "prompt_n",
    "prompt_ms",
    "prompt_per_second",
    "predicted_n",
    "predicted_ms",
    "predicted_per_second",
    "draft_n",
    "draft_n_accepted",
}


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Device cost measurements (the auto strategy) go to a temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESPEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def _serve(pair: Pair, **config: Any) -> Running:
    return start_in_thread(create_app(pair, ServerConfig(MODEL, **config)))


@pytest.fixture(scope="module")
def pair(tiny: dict[str, Path]) -> Iterator[Pair]:
    """The tiny target with its identical draft (every guess accepted)."""
    with Pair(tiny["target"], tiny["draft-same"], n_ctx=512, n_threads=1) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def server(pair: Pair) -> Iterator[Running]:
    """A server over the tiny pair."""
    running = _serve(pair)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: Running) -> openai.OpenAI:
    """The official client, pointed at the server."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _slowed(pair: Pair, delay_s: float) -> None:
    """Make every token of ``pair``'s generations take ``delay_s`` longer (slept step by step)."""
    steps = pair.engine.steps

    def slow_steps(*args: Any, **kwargs: Any) -> Iterator[Step]:
        for step in steps(*args, **kwargs):
            time.sleep(delay_s * len(step.tokens))
            yield step

    pair.engine.steps = slow_steps  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def slow_server(tiny: dict[str, Path]) -> Iterator[Running]:
    """A server whose tokens take 20 ms each, with one place in its queue."""
    with Pair(tiny["target"], tiny["draft-same"], n_ctx=512, n_threads=1) as loaded:
        _slowed(loaded, 0.02)
        running = _serve(loaded, queue_size=1)
        yield running
        running.stop()


def _health(server: Running) -> dict[str, Any]:
    response = httpx.get(server.url + "/health")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _timings(response: Any) -> dict[str, Any]:
    timings: dict[str, Any] = response.model_extra["timings"]
    return timings


# --- the happy paths ---------------------------------------------------------------------------


def test_models_lists_the_pair(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].model_extra is not None
    assert models[0].model_extra["target"] == "tiny-target.gguf"
    assert client.models.retrieve(MODEL).id == MODEL


def test_health(server: Running) -> None:
    health = _health(server)
    assert health["status"] == "ok"
    assert health["model"] == MODEL


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=40, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion"
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= 40
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    timings = _timings(reply)
    assert timings.keys() >= TIMING_KEYS
    assert timings["predicted_n"] == reply.usage.completion_tokens
    assert timings["prompt_n"] + timings["cache_n"] == reply.usage.prompt_tokens


def test_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt=LONG_PROMPT, max_tokens=20, temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 20
    assert _timings(reply).keys() >= TIMING_KEYS


def test_chat_stream_with_usage_equals_whole(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=60, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=60,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    last = chunks[-1]
    assert last.choices == [] and last.usage == whole.usage
    assert _timings(last).keys() >= TIMING_KEYS


def test_text_stream_equals_whole(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt=LONG_PROMPT, max_tokens=50, temperature=0)
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=LONG_PROMPT,
            max_tokens=50,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage == whole.usage


def test_stream_without_usage_has_no_usage_chunk(server: Running) -> None:
    body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 5, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(chunk["choices"] for chunk in chunks)
    assert "timings" in chunks[-1]


def test_strategies_agree_and_speculate(client: openai.OpenAI, pair: Pair) -> None:
    texts = {}
    for strategy in ("none", "draft", "lookup", "auto"):
        reply = client.completions.create(
            model=MODEL,
            prompt=LONG_PROMPT,
            max_tokens=80,
            temperature=0,
            extra_body={"strategy": strategy},
        )
        texts[strategy] = reply.choices[0].text
        timings = _timings(reply)
        assert timings["draft_n_accepted"] <= timings["draft_n"]
        if strategy == "none":
            assert timings["draft_n"] == 0
        if strategy == "draft":  # the identical draft: every guess is accepted
            assert timings["draft_n"] > 0 and timings["draft_n_accepted"] == timings["draft_n"]
    assert len(set(texts.values())) == 1, texts


def test_mtp_guesses_count_in_the_timings(tiny: dict[str, Path]) -> None:
    """A target with MTP layers and no draft: ``strategy: mtp`` guesses, counted in ``draft_n``; a
    target without them refuses it with a 400 saying so."""
    with Pair(tiny["qwen35-mtp-agree-target"], n_ctx=512, n_threads=1, p_min=0.0) as loaded:
        running = _serve(loaded)
        try:
            client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
            texts = {}
            for strategy in ("none", "mtp"):
                reply = client.completions.create(
                    model=MODEL,
                    prompt="hello world",
                    max_tokens=30,
                    temperature=0,
                    extra_body={"strategy": strategy},
                )
                texts[strategy], timings = reply.choices[0].text, _timings(reply)
            assert 0 < timings["draft_n_accepted"] < timings["draft_n"]
            assert texts["mtp"] == texts["none"]
        finally:
            running.stop()
    with Pair(tiny["qwen35-target"], n_ctx=512, n_threads=1) as plain:
        running = _serve(plain)
        try:
            body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, "strategy": "mtp"}
            error = _assert_openai_error(_post(running, "/v1/completions", body), 400)
            assert "needs a target with MTP layers" in error["message"]
        finally:
            running.stop()


@pytest.mark.parametrize("field", ["max_draft", "speculative.n_max"])
def test_draft_length_cap(tiny: dict[str, Path], field: str) -> None:
    # With p_min 0 the identical draft always guesses as many tokens as it may, and every guess is
    # kept: a step adds k guesses and the target's own token.
    with Pair(tiny["target"], tiny["draft-same"], n_ctx=512, n_threads=1, p_min=0.0) as loaded:
        running = _serve(loaded)
        try:
            client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)

            def drafted(**extra: object) -> tuple[int, int]:
                reply = client.completions.create(
                    model=MODEL,
                    prompt=LONG_PROMPT,
                    max_tokens=40,
                    temperature=0,
                    extra_body={"strategy": "draft", **extra},
                )
                timings = _timings(reply)
                return timings["draft_n"], timings["predicted_n"]

            n_drafted, n_tokens = drafted(**{field: 1})
            assert 0 < n_drafted <= (n_tokens + 1) // 2  # one guess per step
            # The cap holds for that request only: the next one guesses the pair's 16 per step.
            n_drafted, n_tokens = drafted()
            assert n_drafted >= n_tokens * 16 // 17 - 16
        finally:
            running.stop()


@pytest.mark.parametrize("strategy", ["none", "draft"])
def test_seed_repeats_sampled_text(client: openai.OpenAI, strategy: str) -> None:
    # Under "auto" the plan follows measured timings, so the random numbers a seed gives may go to
    # different uses from one run to the next: the same seed is the same text with a fixed strategy.
    def sample(seed: int) -> str:
        reply = client.completions.create(
            model=MODEL,
            prompt="Hello",
            max_tokens=30,
            temperature=1.0,
            top_p=1.0,
            seed=seed,
            extra_body={"strategy": strategy},
        )
        return reply.choices[0].text

    assert sample(7) == sample(7)


def test_nulls_mean_defaults(server: Running) -> None:
    nulls = dict.fromkeys(["max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream"])
    nulls.update(dict.fromkeys(["stream_options", "top_k", "min_p", "strategy", "max_draft"]))
    body = {"model": MODEL, "messages": HELLO, **nulls, "max_completion_tokens": 3}
    reply = _post(server, "/v1/chat/completions", body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] <= 3


def test_stop_string(client: openai.OpenAI) -> None:
    full = client.completions.create(model=MODEL, prompt=LONG_PROMPT, max_tokens=60, temperature=0)
    text = full.choices[0].text
    ascii_at = [
        i for i in range(5, len(text) - 2) if text[i : i + 2].isascii() and text[i : i + 2].isprintable()
    ]
    assert ascii_at, f"no printable ASCII pair to stop at in {text!r}"
    stop = text[ascii_at[0] : ascii_at[0] + 2]
    for given in (stop, [stop, "\u2603never"]):
        reply = client.completions.create(
            model=MODEL, prompt=LONG_PROMPT, max_tokens=60, temperature=0, stop=given
        )
        assert reply.choices[0].text == text[: text.index(stop)]
        assert reply.choices[0].finish_reason == "stop"


def test_multipart_text_content_and_developer_role(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        max_tokens=20,
        temperature=0,
    )
    parts = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}],
            },
        ],
        max_tokens=20,
        temperature=0,
    )
    assert parts.choices[0].message.content == plain.choices[0].message.content


def test_token_id_prompt(client: openai.OpenAI, pair: Pair) -> None:
    tokens = pair.prompter.tokenize(LONG_PROMPT)
    by_ids = client.completions.create(model=MODEL, prompt=tokens, max_tokens=20, temperature=0)
    by_text = client.completions.create(model=MODEL, prompt=LONG_PROMPT, max_tokens=20, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_continued_conversation_reuses_the_cache(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, temperature=0)
    messages: list[ChatCompletionMessageParam] = [
        *HELLO,
        {"role": "assistant", "content": first.choices[0].message.content or ""},
        {"role": "user", "content": "And then?"},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    assert _timings(second)["cache_n"] >= _timings(first)["prompt_n"]


def test_four_concurrent_clients(client: openai.OpenAI) -> None:
    def ask(i: int) -> str:
        if i % 2:
            stream = client.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=40, temperature=0, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=40, temperature=0)
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(ask, range(4)))
    assert len(texts) == 4 and len(set(texts)) == 1


# --- errors ------------------------------------------------------------------------------------


def _post(server: Running, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    if isinstance(body, (str, bytes)):
        return httpx.post(
            server.url + path, content=body, headers={"content-type": "application/json"}, **kwargs
        )
    return httpx.post(server.url + path, json=body, **kwargs)


def _assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


CHAT = {"model": MODEL, "messages": HELLO, "max_tokens": 4}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"model": "tiny", "messages": [', None),  # malformed JSON
        ("[1, 2]", None),  # not an object
        ({"model": MODEL}, "messages"),  # missing field
        ({"messages": HELLO}, "model"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "temperature": "0.5"}, "temperature"),  # wrong types
        ({**CHAT, "max_tokens": 4.5}, "max_tokens"),
        ({**CHAT, "stream": "yes"}, "stream"),
        ({**CHAT, "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({**CHAT, "temperature": 2.5}, "temperature"),  # out of range
        ({**CHAT, "top_p": 1.5}, "top_p"),
        ({**CHAT, "min_p": -0.1}, "min_p"),
        ({**CHAT, "top_k": -1}, "top_k"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "max_completion_tokens": -3}, "max_completion_tokens"),
        ({**CHAT, "n": 2}, "n"),
        ({**CHAT, "strategy": "fastest"}, "strategy"),
        ({**CHAT, "max_draft": 0}, "max_draft"),
        ({**CHAT, "stop": ["a"] * 17}, None),
        ({**CHAT, "model": "gpt-4o"}, "model"),  # unknown model
        ({**CHAT, "messages": "Hello"}, "messages"),
    ],
)
def test_chat_client_mistakes_are_400(server: Running, body: Any, param: str | None) -> None:
    _assert_openai_error(_post(server, "/v1/chat/completions", body), 400, param)


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("messages", "param", "words"),
    [
        ([*HELLO, {"role": "bogus", "content": "hi"}], "messages[1].role", "'bogus'"),
        ([{"role": "user"}], "messages[0].content", "missing"),
        ([{"role": "user", "content": None}], "messages[0].content", "missing"),
        ([*HELLO, {"role": "assistant", "content": None}], "messages[1].content", "tool_calls"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "Hi"}, IMAGE]}],
            "messages[0].content[1].type",
            "no vision",
        ),
        ([{"role": "user", "content": []}], "messages[0].content", "at least one"),
        ([{"role": "tool", "content": "3"}], "messages[0].tool_call_id", "missing"),
        ([], "messages", "at least one"),
    ],
)
def test_messages_openai_refuses_are_400(
    client: openai.OpenAI, messages: Any, param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    error = caught.value
    assert error.param == param and words in error.message, error.body
    assert error.code in ("invalid_value", "missing_required_parameter", "unsupported_content", "empty_array")


def test_messages_openai_takes_are_answered(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Add 1 and 2."},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},  # type: ignore[list-item]
        {"role": "tool", "content": "3", "tool_call_id": "call_1"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "prompt": [10**9]}, "prompt"),  # not a token
        ({"model": MODEL, "prompt": [-1]}, "prompt"),
        ({"model": MODEL, "prompt": ["a", "b"]}, "prompt"),  # several prompts
        ({"model": MODEL, "prompt": []}, "prompt"),
        ({"model": MODEL, "prompt": {"text": "a"}}, None),
        ({"model": MODEL}, "prompt"),
        ('{"model": "tiny", "prompt": "a lone surrogate: \\ud800"}', None),
    ],
)
def test_completion_client_mistakes_are_400(server: Running, body: Any, param: str | None) -> None:
    _assert_openai_error(_post(server, "/v1/completions", body), 400, param)


def test_prompt_over_the_context_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="a" * 2000, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as caught:  # the same when streamed: before any event
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "a" * 2000}], max_tokens=4, stream=True
        )
    assert caught.value.code == "context_length_exceeded"
    assert client.completions.create(model=MODEL, prompt="Hi", max_tokens=4).choices  # and all is well


def test_empty_prompt_is_answered(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="", max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_openai_client_sees_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=HELLO, temperature=3)


def test_unknown_route_and_method(server: Running) -> None:
    _assert_openai_error(httpx.get(server.url + "/v1/nothing"), 404)
    _assert_openai_error(httpx.get(server.url + "/v1/chat/completions"), 405)
    _assert_openai_error(httpx.get(server.url + "/v1/models/nope"), 404, "model")


@pytest.fixture(scope="module")
def keyed_server(pair: Pair) -> Iterator[Running]:
    """A server that wants an API key and lets one browser origin call it."""
    running = _serve(pair, api_key="sesame", cors=["http://app.example"])
    yield running
    running.stop()


def test_api_key(keyed_server: Running) -> None:
    url = keyed_server.url + "/v1"
    wrong = openai.OpenAI(base_url=url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    _assert_openai_error(httpx.get(url + "/models"), 401)
    _assert_openai_error(_post(keyed_server, "/v1/chat/completions", "{broken"), 401)
    right = openai.OpenAI(base_url=url, api_key="sesame", max_retries=0)
    assert right.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4).choices
    assert httpx.get(keyed_server.url + "/health").status_code == 200  # health needs no key


def test_cors(keyed_server: Running) -> None:
    headers = {
        "Origin": "http://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    preflight = httpx.options(keyed_server.url + "/v1/chat/completions", headers=headers)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.options(
        keyed_server.url + "/v1/chat/completions", headers={**headers, "Origin": "http://evil"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_target_without_template_or_draft(tiny: dict[str, Path]) -> None:
    with Pair(tiny["notemplate"], n_ctx=256, n_threads=1) as loaded:
        running = _serve(loaded)
        try:
            client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
            with pytest.raises(openai.BadRequestError, match="chat template"):
                client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
            with pytest.raises(openai.BadRequestError, match="draft model"):
                client.completions.create(
                    model=MODEL, prompt="Hi", max_tokens=4, extra_body={"strategy": "draft"}
                )
            assert client.completions.create(model=MODEL, prompt="Hi", max_tokens=4).choices
            assert client.models.list().data[0].model_extra == {
                "target": "tiny-notemplate.gguf",
                "draft": None,
                "n_ctx": 256,
            }
        finally:
            running.stop()


def test_llama_failure_mid_generation(tiny: dict[str, Path]) -> None:
    with Pair(tiny["target"], n_ctx=256, n_threads=1) as loaded:
        steps = loaded.engine.steps

        def failing_steps(*args: Any, **kwargs: Any) -> Iterator[Step]:
            yield next(steps(*args, **kwargs))
            raise LlamaError("llama_decode failed (-3)")

        loaded.engine.steps = failing_steps  # type: ignore[method-assign]
        running = _serve(loaded)
        try:
            body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 20, "stream": True}
            with httpx.stream("POST", running.url + "/v1/completions", json=body) as response:
                assert response.status_code == 200  # the failure came after the headers
                data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
            assert data[-1] == "[DONE]"
            error = json.loads(data[-2])["error"]
            assert error["type"] == "server_error" and "llama_decode" in error["message"]
            whole = _post(running, "/v1/completions", {**body, "stream": False})
            assert _assert_openai_error(whole, 500)["code"] == "llama_error"
            assert _health(running)["status"] == "ok"
        finally:
            running.stop()


# --- one at a time: cancellation and the full queue --------------------------------------------


LONG = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 300, "temperature": 0, "stream": True}
"""Six seconds of tokens on the slow server."""


def test_disconnect_cancels_and_the_next_request_runs(slow_server: Running) -> None:
    short = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 10, "temperature": 0}
    before = _post(slow_server, "/v1/completions", short, timeout=30).json()["choices"][0]["text"]
    cancelled = _health(slow_server)["cancelled"]
    with httpx.stream("POST", slow_server.url + "/v1/completions", json=LONG, timeout=30) as response:
        lines = response.iter_lines()
        assert sum(line.startswith("data: ") for line in (next(lines), next(lines), next(lines))) >= 2
        assert _health(slow_server)["busy"]
    t0 = time.monotonic()
    assert _wait_for(lambda: not _health(slow_server)["busy"], 2.0), "the generation went on"
    assert time.monotonic() - t0 < 2.0  # far less than the 6 s the whole generation takes
    assert _health(slow_server)["cancelled"] == cancelled + 1
    after = _post(slow_server, "/v1/completions", short, timeout=30).json()["choices"][0]["text"]
    assert after == before


def test_disconnect_while_waiting_never_runs(slow_server: Running) -> None:
    health0 = _health(slow_server)
    with httpx.stream("POST", slow_server.url + "/v1/completions", json=LONG, timeout=30) as running:
        lines = running.iter_lines()  # kept: a collected iterator closes the connection
        next(lines)
        with httpx.Client(timeout=httpx.Timeout(30, read=0.3)) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.post(slow_server.url + "/v1/completions", json={**LONG, "stream": False})
        assert _health(slow_server)["busy"]
    assert _wait_for(lambda: not _health(slow_server)["busy"] and _health(slow_server)["waiting"] == 0, 3.0)
    health = _health(slow_server)
    assert health["served"] == health0["served"]
    assert health["cancelled"] == health0["cancelled"] + 2


def test_full_queue_is_503_with_retry_after(slow_server: Running) -> None:
    results: list[httpx.Response] = []
    with httpx.stream("POST", slow_server.url + "/v1/completions", json=LONG, timeout=30) as running:
        lines = running.iter_lines()  # kept: a collected iterator closes the connection
        next(lines)
        short = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 5}
        waiter = threading.Thread(
            target=lambda: results.append(_post(slow_server, "/v1/completions", short, timeout=30))
        )
        waiter.start()
        assert _wait_for(lambda: _health(slow_server)["waiting"] == 1, 5.0)
        refused = _post(slow_server, "/v1/completions", short)
        error = _assert_openai_error(refused, 503)
        assert error["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        busy = openai.OpenAI(base_url=slow_server.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            busy.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    waiter.join(30)
    assert results and results[0].status_code == 200


# --- the command ------------------------------------------------------------------------------


def test_serve_command(tiny: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "EDGESPEC_CACHE_DIR": str(tmp_path)}
    args = ["--target", str(tiny["target"]), "--draft", str(tiny["draft-same"]), "--ctx-size", "256"]
    command = [sys.executable, "-m", "edgespec", "serve", *args, "--port", "0", "--alias", "mine"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, line + (
            process.stderr.read() if process.poll() is not None else ""
        )
        base = line.split(" at ")[1].split()[0]
        client = openai.OpenAI(base_url=base, api_key="x", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["mine"]
        assert client.chat.completions.create(model="mine", messages=HELLO, max_tokens=4).choices
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(15)
    assert process.returncode in (0, 130, -signal.SIGINT)


def test_serve_refuses_a_taken_port(tiny: dict[str, Path], server: Running) -> None:
    port = server.url.rsplit(":", 1)[1]
    command = [sys.executable, "-m", "edgespec", "serve", "--target", str(tiny["target"]), "--port", port]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "cannot listen" in done.stderr and "Traceback" not in done.stderr


# --- the real pair -----------------------------------------------------------------------------


@pytest.mark.real
def test_real_pair(real_paths: dict[str, Path]) -> None:
    with Pair(real_paths["target"], real_paths["draft"], n_ctx=1024) as loaded:
        running = _serve(loaded)
        try:
            client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0, timeout=600)
            content = "Write a Python function that returns the sum of a list."

            def ask(stream: bool) -> Any:
                # The same strategy each time, so the same verification batches: the greedy text is
                # then bit-identical (other batch shapes may flip near-ties of the target's logits).
                return client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": content}],
                    max_tokens=48,
                    temperature=0,
                    stream=stream,
                    extra_body={"strategy": "draft"},
                )

            whole = ask(stream=False)
            text = whole.choices[0].message.content or ""
            assert "def " in text
            timings = _timings(whole)
            assert timings["draft_n"] > 0 and 0 < timings["draft_n_accepted"] <= timings["draft_n"]
            assert timings["predicted_per_second"] > 0
            streamed = "".join(c.choices[0].delta.content or "" for c in ask(stream=True) if c.choices)
            assert streamed == text
        finally:
            running.stop()
