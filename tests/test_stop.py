"""Stopping during the prompt: llama.cpp's abort callback ends even the chunk in progress, the chunks
read before stay cached (recurrent states too), and the next request reads only the rest."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgespec import Pair
from edgespec.errors import Cancelled
from edgespec.llama import Context, Model
from edgespec.llama.context import STOPPABLE_FROM

ARCHS = ["target", "lfm2-target", "qwen35-target", "mamba2-target", "granitehybrid-target"]
TEXT = "the quick brown fox jumps over the lazy dog. " * 40
CHUNK = 128


class StopAfter(threading.Event):
    """A cancel event that sets itself the ``n``-th time it is asked: a stop that lands at a known
    node of llama.cpp's graph, where a real one lands wherever a button is pressed."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.asked = itertools.count(1)
        self.n = n

    def is_set(self) -> bool:
        if next(self.asked) >= self.n:
            self.set()
        return super().is_set()


def nodes_per_chunk(ctx: Context, tokens: list[int]) -> int:
    """How often llama.cpp asks the abort callback during one chunk of ``CHUNK`` tokens."""
    asked = itertools.count()
    ctx.stop_when(lambda: next(asked) < 0)
    ctx.decode(tokens[: STOPPABLE_FROM + 1], 0, 0)  # long enough to be stoppable, in one chunk
    ctx.clear()
    ctx.stop_when(None)
    return next(asked)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_stop_in_the_third_chunk_keeps_two_and_the_rest_reads_on_exactly(
    tiny: dict[str, Path], arch: str
) -> None:
    model = Model(tiny[arch])
    ctx = Context(model, n_ctx=1024, n_batch=CHUNK, n_threads=1)
    tokens = model.tokenize(TEXT, add_special=False)[:600]
    whole = ctx.decode(tokens, 0, 1)
    ctx.clear()
    nodes = nodes_per_chunk(ctx, tokens)
    ctx.stop_when(StopAfter(2 * nodes + nodes // 2).is_set)  # halfway through the third chunk's graph
    with pytest.raises(Cancelled, match=f"{2 * CHUNK} tokens read are kept"):
        ctx.decode(tokens, 0, 0)
    assert ctx.n_past == 2 * CHUNK
    ctx.stop_when(None)
    # What was read is what a whole prefill reads: the next logits are the same bits. Without
    # going back to the state saved before the chunk, a recurrent model keeps a half-written
    # state that llama.cpp reports as read (lfm2: 384 tokens "held", logits 0.5 off).
    rest = ctx.decode(tokens[2 * CHUNK :], 2 * CHUNK, 1)
    np.testing.assert_array_equal(rest, whole)


def test_ctrl_c_inside_the_abort_callback_stops_the_decode_and_is_raised(tiny: dict[str, Path]) -> None:
    # A KeyboardInterrupt raised while the callback runs (a signal handler in the main thread)
    # would be swallowed by ctypes: it stops the decode and comes out of decode() instead.
    model = Model(tiny["target"])
    ctx = Context(model, n_ctx=1024, n_batch=CHUNK, n_threads=1)
    tokens = model.tokenize(TEXT, add_special=False)[:600]
    asked = itertools.count()

    def check() -> bool:
        if next(asked) == 10:
            raise KeyboardInterrupt
        return False

    ctx.stop_when(check)
    with pytest.raises(KeyboardInterrupt):
        ctx.decode(tokens, 0, 0)
    assert ctx.n_past == 0
    assert ctx.decode(tokens[: STOPPABLE_FROM + 1], 0, 1).shape == (1, model.n_vocab)  # and usable after


def test_a_verification_step_asks_no_callback(tiny: dict[str, Path]) -> None:
    # Short decodes run without the callback: no call into Python at each node of each step.
    model = Model(tiny["target"])
    ctx = Context(model, n_ctx=1024, n_batch=CHUNK, n_threads=1)
    asked = itertools.count()
    ctx.stop_when(lambda: next(asked) < 0)
    ctx.decode(model.tokenize("hello", add_special=False), 0, 1)
    ctx.decode([5] * STOPPABLE_FROM, ctx.n_past, 4)
    assert next(asked) == 0
    ctx.decode([5] * (STOPPABLE_FROM + 1), ctx.n_past, 1)
    assert next(asked) > 1


@pytest.fixture(scope="module", params=["target", "lfm2-target"])
def pair(tiny: dict[str, Path], request: pytest.FixtureRequest) -> Iterator[Pair]:
    arch = request.param
    draft = arch.replace("target", "draft-same")
    with Pair(tiny[arch], tiny[draft], n_ctx=1024, n_batch=CHUNK, n_threads=1) as p:
        yield p


def reference(pair: Pair, prompt: list[int]) -> list[int]:
    """The greedy reply read from an empty cache."""
    pair.reset()
    return pair.generate(prompt, temperature=0, max_tokens=16, strategy="none").token_ids


def test_a_stopped_prompt_is_kept_and_the_next_request_reads_only_the_rest(pair: Pair) -> None:
    prompt = pair.target.tokenize(TEXT, add_special=False)[:600]
    want = reference(pair, prompt)
    pair.reset()
    nodes = nodes_per_chunk(pair.target_ctx, prompt)
    with pytest.raises(Cancelled):
        pair.stream(prompt, temperature=0, max_tokens=16, strategy="none", cancel=StopAfter(3 * nodes + 5))
    assert pair.target_ctx.n_past == 3 * CHUNK and not pair.access.busy
    again = pair.generate(prompt, temperature=0, max_tokens=16, strategy="none")
    assert again.stats.prompt_prefilled == len(prompt) - 1 - 3 * CHUNK
    assert again.token_ids == want


def test_a_stop_while_the_draft_catches_up_ends_the_reply_and_keeps_its_cache_right(pair: Pair) -> None:
    # The draft reads a long prompt in the first step: a stop there ends the reply at once.
    assert pair.draft_model is not None
    prompt = pair.target.tokenize(TEXT, add_special=False)[:600]
    want = reference(pair, prompt)
    pair.reset()
    nodes = nodes_per_chunk(pair.draft_model.ctx, prompt)
    prefill = len(prompt) - 1  # the target's prompt: read in chunks, each asking the check
    cancel = StopAfter(nodes * (-(-prefill // CHUNK) + 2) + 3)  # then two chunks of the draft's
    gen = pair.stream(prompt, temperature=0, max_tokens=16, strategy="draft", cancel=cancel)
    assert list(gen) == [] and gen.result.finish_reason == "interrupted"
    draft = pair.draft_model
    assert draft.ctx.n_past == 2 * CHUNK and draft.cached == prompt[: 2 * CHUNK]
    again = pair.generate(prompt, temperature=0, max_tokens=16, strategy="draft")
    assert again.token_ids == want
    assert again.stats.acceptance == 1.0  # the draft is the target: a wrong draft cache would show


def test_cancel_from_another_thread_stops_after_the_step_in_progress(pair: Pair) -> None:
    prompt = pair.target.tokenize("hello world", add_special=False)  # a long reply from both
    pair.reset()
    gen = pair.stream(prompt, temperature=0, max_tokens=200, strategy="none")
    seen = []
    for event in gen:
        seen.append(event.token)
        if len(seen) == 5:
            threading.Thread(target=gen.cancel).start()
            threading.Event().wait(0.05)
    assert gen.result.finish_reason == "interrupted"
    assert len(gen.result.token_ids) == len(seen) <= 6  # a step of strategy none is one token
    assert not pair.access.busy
