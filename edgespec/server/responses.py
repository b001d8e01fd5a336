"""OpenAI-shaped answers: whole completions, stream chunks, usage, and llama-server's ``timings``."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from edgespec.generate import Result, Stats
from edgespec.tools import ToolCall

FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}
"""edgespec's finish reasons in OpenAI's words; others (``interrupted``, ``constraint``) are ``stop``."""


def _per_second(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def _per_token_ms(n: int, seconds: float) -> float:
    return seconds * 1000 / n if n else 0.0


def timings(stats: Stats) -> dict[str, Any]:
    """llama-server's ``timings`` object, from one generation's statistics.

    ``prompt_n`` counts the prompt tokens decoded for this request; ``cache_n`` those reused from
    the KV cache of an earlier request (a continued conversation), including the last prompt
    token, which is decoded with the first generated one. ``draft_n`` tokens were guessed (by the
    draft model or by lookup) and ``draft_n_accepted`` of them were what the target would have
    produced: each of those is a target step saved.
    """
    prompt_n, prompt_s = stats.prompt_prefilled, stats.prompt_seconds
    predicted_n, predicted_s = stats.n_tokens, stats.decode_seconds
    return {
        "cache_n": stats.prompt_tokens - prompt_n,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_s * 1000,
        "prompt_per_token_ms": _per_token_ms(prompt_n, prompt_s),
        "prompt_per_second": _per_second(prompt_n, prompt_s),
        "predicted_n": predicted_n,
        "predicted_ms": predicted_s * 1000,
        "predicted_per_token_ms": _per_token_ms(predicted_n, predicted_s),
        "predicted_per_second": _per_second(predicted_n, predicted_s),
        "draft_n": stats.drafted,
        "draft_n_accepted": stats.accepted,
    }


def usage(result: Result) -> dict[str, int]:
    """OpenAI's ``usage``: prompt, completion and total tokens."""
    prompt, completion = result.stats.prompt_tokens, len(result.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(result: Result) -> str:
    """OpenAI's finish reason: ``stop``, ``length`` or ``tool_calls``."""
    return FINISH_REASONS.get(result.finish_reason, "stop")


@dataclass
class Reply:
    """The answers to one request, whole or as stream chunks; ``chat`` picks the chat shapes."""

    model: str
    chat: bool
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex

    def _head(self, stream: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (
            ".chunk" if stream and self.chat else ""
        )
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _choice(self, text: str | None, reason: str | None, stream: bool) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
        if stream:
            delta = {} if text is None else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        message = {"role": "assistant", "content": text}
        return {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}

    def whole(self, result: Result) -> dict[str, Any]:
        """The non-streamed answer; a chat reply that called tools has them in ``tool_calls``,
        and its content is what it said besides (null when nothing)."""
        choice = self._choice(result.text, finish_reason(result), stream=False)
        if self.chat and result.tool_calls:
            choice["message"]["content"] = result.content or None
            choice["message"]["tool_calls"] = [call.to_openai() for call in result.tool_calls]
        return {
            **self._head(stream=False),
            "choices": [choice],
            "usage": usage(result),
            "timings": timings(result.stats),
        }

    def tool_call_chunk(self, call: ToolCall, index: int) -> dict[str, Any]:
        """One whole call, as OpenAI streams a call's pieces (``delta.tool_calls``)."""
        delta = {"tool_calls": [{"index": index, **call.to_openai()}]}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return {**self._head(stream=True), "choices": [choice]}

    def first_chunk(self) -> dict[str, Any]:
        """Chat streams open with the assistant's role."""
        chunk = self.chunk("")
        chunk["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return chunk

    def chunk(self, text: str) -> dict[str, Any]:
        """One piece of text."""
        return {**self._head(stream=True), "choices": [self._choice(text, None, stream=True)]}

    def last_chunk(self, result: Result) -> dict[str, Any]:
        """The finish reason, with the timings as llama-server sends them."""
        return {
            **self._head(stream=True),
            "choices": [self._choice(None, finish_reason(result), stream=True)],
            "timings": timings(result.stats),
        }

    def usage_chunk(self, result: Result) -> dict[str, Any]:
        """``stream_options.include_usage``: no choices, the usage (and timings)."""
        return {
            **self._head(stream=True),
            "choices": [],
            "usage": usage(result),
            "timings": timings(result.stats),
        }
