"""The real Qwen2.5-Coder pair (1.5B target, 0.5B draft): speculation never changes greedy output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgespec import Pair
from edgespec.bench import NEAR_TIE, top_two_gap

pytestmark = pytest.mark.real

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Rename the variable `total` to `acc` in this code and change nothing else:\n\n"
    "def sum_list(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n",
    "In one sentence, what is a hash table?",
]


@pytest.fixture(scope="module")
def pair(real_paths: dict[str, Path]) -> Iterator[Pair]:
    with Pair(real_paths["target"], real_paths["draft"], n_ctx=1024, n_threads=2, max_draft=6) as p:
        yield p


@pytest.mark.parametrize(
    ("prompt", "expected"),
    list(zip(PROMPTS, ["def", "acc", "hash"], strict=True)),
    ids=["generate", "edit", "question"],
)
def test_greedy_speculation_equals_target_alone(pair: Pair, prompt: str, expected: str) -> None:
    messages = [{"role": "user", "content": prompt}]
    want = pair.generate(messages, max_tokens=48, temperature=0, strategy="none")
    assert len(want.token_ids) > 10
    assert expected in want.text.lower()  # the target answered the prompt: a real reply to compare
    for strategy in ("draft", "lookup"):
        got = pair.generate(messages, max_tokens=48, temperature=0, strategy=strategy)
        assert got.stats.drafted > 0 or strategy == "lookup"
        if got.token_ids == want.token_ids:
            continue
        # Batched verification and single-token decoding may round differently; a divergence is
        # only acceptable where the target's top two logits are (nearly) tied.
        i = next(i for i, (a, b) in enumerate(zip(got.token_ids, want.token_ids, strict=False)) if a != b)
        gap = top_two_gap(pair, pair.prompter.tokenize(messages) + want.token_ids[:i])
        assert gap < NEAR_TIE, f"{strategy} diverged at token {i} with a top-two gap of {gap:.3f}"


def test_draft_model_is_accepted_often_on_code(pair: Pair) -> None:
    messages = [{"role": "user", "content": PROMPTS[0]}]
    result = pair.generate(messages, max_tokens=48, temperature=0, strategy="draft")
    assert result.stats.acceptance > 0.5  # the 0.5B and 1.5B coders agree on most code tokens
