"""A bounded schemathesis run over the server's OpenAPI schema: no request, however odd, is a 500.

Generation is capped at a few tokens so that the run stays well under a minute on the tiny models.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from edgespec import Pair
from edgespec.server import Running, ServerConfig, create_app, start_in_thread

MODEL = "tiny"


@pytest.fixture(scope="module")
def fuzz_server(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server over the tiny pair that generates at most 4 tokens a request."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESPEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        with Pair(tiny["target"], tiny["draft-same"], n_ctx=256, n_threads=1) as pair:
            running = start_in_thread(
                create_app(pair, ServerConfig(MODEL, max_tokens_limit=4, queue_size=64))
            )
            yield running
            running.stop()


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
CASES = [
    ("POST", "/v1/chat/completions", POSITIVE),
    ("POST", "/v1/chat/completions", NEGATIVE),
    ("POST", "/v1/completions", POSITIVE),
    ("POST", "/v1/completions", NEGATIVE),
    ("GET", "/v1/models", POSITIVE),
    ("GET", "/v1/models/{model}", POSITIVE),
    ("GET", "/health", POSITIVE),
]
"""Negative cases (bodies that break the schema) where there is a body to break."""


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=lambda v: getattr(v, "value", v))
def test_no_request_is_a_server_error(fuzz_server: Running, method: str, path: str, mode: Any) -> None:
    operation = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case: Any) -> None:
        if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
            case.body["model"] = MODEL  # reach the model, not only the unknown-model refusal
        response = case.call(timeout=30)
        assert response.status_code < 500, f"{method} {path}: {response.status_code} {response.text}"
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    check()
    if mode == POSITIVE and method == "POST":
        # Schema-valid is not always valid (our message rules are stricter than the schema), so
        # how many generated cases get a 200 varies; a request we know is valid must still be
        # answered after the fuzzing, not refused.
        body: dict[str, Any] = {"model": MODEL, "max_tokens": 2}
        body.update({"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {"prompt": "hi"})
        answer = httpx.post(fuzz_server.url + path, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
