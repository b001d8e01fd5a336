"""Exact mode: greedy speculation bit-identical to the target alone, and a self-check that refuses
configurations whose batches do not decode to the bits of single steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgespec import Pair, exactness
from edgespec.conversation import Conversation
from edgespec.errors import NotExactError
from edgespec.llama import Context, Model
from edgespec.options import GenerationOptions

STRATEGIES = ("draft", "lookup", "auto")
MAX_TOKENS = 128

_MODULE = '''import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Task:
    """One item of work: a title, a priority and the tags it carries."""

    title: str
    priority: int = 0
    tags: list[str] = field(default_factory=list)
    done: bool = False

    def matches(self, tag: str) -> bool:
        return tag in self.tags


class TaskStore:
    """Tasks kept in a JSON file, loaded on start and written back on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tasks: list[Task] = []
        if path.exists():
            self.tasks = [Task(**t) for t in json.loads(path.read_text())]

    def add(self, title: str, priority: int = 0, tags: list[str] | None = None) -> Task:
        task = Task(title, priority, tags or [])
        self.tasks.append(task)
        self.save()
        return task

    def complete(self, title: str) -> None:
        for task in self.tasks:
            if task.title == title:
                task.done = True
        self.save()

    def pending(self) -> list[Task]:
        return sorted((t for t in self.tasks if not t.done), key=lambda t: -t.priority)

    def by_tag(self, tag: str) -> list[Task]:
        return [t for t in self.tasks if t.matches(tag)]

    def save(self) -> None:
        self.path.write_text(json.dumps([t.__dict__ for t in self.tasks], indent=2))
'''

PROMPTS = {
    "code": "Write a Python class implementing an LRU cache with get and put, with docstrings and a short "
    "usage example.",
    "edit": "Add type hints and a docstring to every method of this code and change nothing else:\n\n"
    + _MODULE[_MODULE.index("class TaskStore") :],
    "prose": "Explain in three paragraphs how a hash table works, what a collision is and how resizing "
    "keeps lookups fast.",
    "translation": "Translate into French: The library opens at nine in the morning. Members may borrow "
    "up to five books for three weeks. Late returns cost ten cents a day. The reading room is quiet; "
    "please keep phones silent. Children's books are on the second floor, next to the study rooms, "
    "and the cafe on the ground floor serves coffee and sandwiches until four in the afternoon. On "
    "Saturdays the library closes at one, and on Sundays it stays closed. New members need a photo ID and "
    "a proof of address; the card is free for students and costs five euros a year for everyone else.",
    "long-context": "Here is a module:\n\n```python\n"
    + _MODULE
    + "\n```\n\nAnd here is a second version of it:\n\n```python\n"
    + _MODULE.replace("TaskStore", "TodoStore").replace("priority", "rank")
    + "\n```\n\nList every difference between the two versions, then rewrite the second one so "
    "that it also supports removing a task.",
}


@pytest.fixture(scope="module")
def exact_pair(real_paths: dict[str, Path]) -> Iterator[Pair]:
    pair = Pair(real_paths["target"], real_paths["draft"], n_ctx=2048, n_threads=2, max_draft=8, exact=True)
    yield pair
    pair.close()


def _first_difference(a: list[int], b: list[int]) -> int | None:
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.mark.real
def test_exact_pair_verifies_batches(exact_pair: Pair) -> None:
    # Repacking off, flash attention and a q8_0 cache decode 2..7 tokens bit-identically on every
    # x86 CPU measured; with the tiled matmul off (a fresh process) far more.
    assert exact_pair.batch_cap is not None and exact_pair.batch_cap >= 2
    assert exact_pair.target_ctx.kv_type == "q8_0" and not exact_pair.target.repack


@pytest.mark.real
@pytest.mark.parametrize("name", list(PROMPTS))
def test_exact_greedy_speculation_is_token_identical(exact_pair: Pair, name: str) -> None:
    messages = [{"role": "user", "content": PROMPTS[name]}]
    if name == "long-context":
        assert len(exact_pair.prompter.tokenize(messages)) > 600
    want = exact_pair.generate(messages, max_tokens=MAX_TOKENS, temperature=0, strategy="none")
    assert len(want.token_ids) == MAX_TOKENS, want.text  # a full-length reply, not an early stop
    for strategy in STRATEGIES:
        got = exact_pair.generate(messages, max_tokens=MAX_TOKENS, temperature=0, strategy=strategy)
        assert _first_difference(got.token_ids, want.token_ids) is None, strategy
        if strategy == "draft":
            assert got.stats.accepted > 0  # speculation really happened


@pytest.mark.real
def test_exact_chat_continuation_reusing_the_cache(exact_pair: Pair) -> None:
    replies: dict[str, list[list[int]]] = {}
    for strategy in ("none", *STRATEGIES):
        exact_pair.reset()
        settings = GenerationOptions(temperature=0, max_tokens=MAX_TOKENS, strategy=strategy)
        conv = Conversation(exact_pair, settings=settings)
        tokens = []
        for text in ("Write a Python function that parses a CSV line with quoted fields.", "Now add tests."):
            with conv.send(text) as reply:
                for _ in reply:
                    pass
            tokens.append(reply.generation.token_ids)
        second = conv.turns[-1].stats
        assert second.prompt_prefilled < second.prompt_tokens / 2  # the first turn came from the cache
        replies[strategy] = tokens
    assert all(len(t) == MAX_TOKENS for t in replies["none"])
    for strategy in STRATEGIES:
        assert replies[strategy] == replies["none"], strategy


@pytest.mark.real
def test_self_check_refuses_repacking_at_four_tokens(real_paths: dict[str, Path]) -> None:
    # llama.cpp's repacked weights switch kernel at 4 rows: the self-check sees it.
    model = Model(real_paths["target"], repack=True)
    ctx = Context(model, n_ctx=256, n_batch=64, n_threads=2, flash_attn=True, kv_type="q8_0")
    try:
        with pytest.raises(NotExactError, match=r"weight repacking on.*a batch of 4 tokens"):
            exactness.require_invariant(ctx, 4, n_prefix=32)
        assert exactness.batch_cap(ctx, 4, n_prefix=32) == 3
    finally:
        ctx.close()
        model.close()


def test_exact_mode_without_an_invariant_batch_generates_alone(
    tiny: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # The tiny models' float32 weights go through llamafile's sgemm from 2 rows on, which rounds
    # differently from single steps: exact mode finds no invariant batch, says so, and guesses nothing.
    pair = Pair(tiny["target"], tiny["draft-same"], n_ctx=128, n_threads=1, exact=True)
    try:
        assert pair.batch_cap == 1
        assert "generating with the target alone" in caplog.text
        want = pair.generate("hello", max_tokens=24, temperature=0, strategy="none")
        got = pair.generate("hello", max_tokens=24, temperature=0, strategy="draft")
        assert got.token_ids == want.token_ids and got.stats.drafted == 0
    finally:
        pair.close()


def test_self_check_accepts_what_is_invariant_and_refuses_what_is_not(tiny: dict[str, Path]) -> None:
    model = Model(tiny["target"])
    ctx = Context(model, n_ctx=128, n_batch=16, n_threads=1)
    try:
        diffs = exactness.batch_differences(ctx, 6, n_prefix=16, stop_at_first=False)
        assert set(diffs) == {2, 3, 4, 5, 6} and any(diffs.values())
        first = min(n for n, d in diffs.items() if d)
        assert exactness.batch_cap(ctx, 6, n_prefix=16) == first - 1
        exactness.require_invariant(ctx, first - 1, n_prefix=16)  # within the cap: accepted
        with pytest.raises(NotExactError, match=f"a batch of {first} tokens"):
            exactness.require_invariant(ctx, 6, n_prefix=16)
    finally:
        ctx.close()
        model.close()


_DIFFERENCES = """
import json, sys
from edgespec import exactness
from edgespec.llama import Model
model = Model(sys.argv[1], **exactness.MODEL_OPTIONS)
ctx = exactness.make_context(model, n_ctx=128, n_batch=16, n_threads=2)
print(json.dumps(exactness.batch_differences(ctx, 10, n_prefix=32, stop_at_first=False)))
"""


@pytest.mark.real
@pytest.mark.parametrize("tiled", ["1", "0"])
def test_the_tiled_matmul_is_what_differs_from_eight_tokens(real_paths: dict[str, Path], tiled: str) -> None:
    # ggml-cpu's tiled K-quant matmul takes batches of 8 rows or more; ggml reads its switch once
    # per process, hence a fresh interpreter for each setting.
    env = {**os.environ, "GGML_CPU_TILED_MM": tiled}
    out = subprocess.run(
        [sys.executable, "-c", _DIFFERENCES, str(real_paths["target"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    diffs = {int(n): d for n, d in json.loads(out.stdout.splitlines()[-1]).items()}
    assert all(diffs[n] == 0 for n in range(2, 8))
    if tiled == "1":
        assert all(diffs[n] > 0 for n in range(8, 11))
    else:
        assert all(diffs[n] == 0 for n in range(8, 11))
