"""End to end on tiny models: speculative greedy output equals the target alone's, token for token."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgespec import Pair
from edgespec.costs import CostModel
from edgespec.planner import AutoPlanner
from edgespec.proposers import Proposal

PROMPTS = ["hello world", "The quick brown fox jumps over the lazy dog. " * 3, "def f(x):\n    return x"]


@pytest.fixture(scope="module")
def pairs(tiny: dict[str, Path]) -> dict[str, Pair]:
    return {
        kind: Pair(tiny["target"], tiny[kind], n_ctx=512, n_threads=1, p_min=0.0)
        for kind in ("draft-same", "draft-noisy", "draft-unrelated")
    }


def reference(pair: Pair, prompt: str, n: int = 60) -> list[int]:
    return pair.generate(prompt, max_tokens=n, temperature=0, strategy="none").token_ids


@pytest.mark.parametrize("kind", ["draft-same", "draft-noisy", "draft-unrelated"])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_greedy_draft_output_equals_target_alone(pairs: dict[str, Pair], kind: str, k: int) -> None:
    pair = pairs[kind]
    pair.max_draft = k
    for prompt in PROMPTS:
        want = reference(pair, prompt)
        got = pair.generate(prompt, max_tokens=60, temperature=0, strategy="draft")
        assert got.token_ids == want
        assert got.stats.drafted > 0
        assert (
            max(got.stats.to_dict()["drafted_by_position"] or [0])
            and len(
                got.stats.to_dict()["drafted_by_position"]  # type: ignore[arg-type]
            )
            <= k
        )


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("strategy", ["lookup", "auto"])
def test_greedy_lookup_and_auto_output_equals_target_alone(
    pairs: dict[str, Pair], k: int, strategy: str
) -> None:
    # The cap goes with each generation: the auto planner, built once per pair, must obey it too.
    pair = pairs["draft-noisy"]
    drafted = 0
    for prompt in PROMPTS:
        got = pair.generate(prompt, max_tokens=60, temperature=0, strategy=strategy, max_draft=k)
        assert got.token_ids == reference(pair, prompt)
        assert len(got.stats.to_dict()["drafted_by_position"]) <= k  # type: ignore[arg-type]
        drafted += got.stats.drafted
    assert drafted > 0  # something was guessed, so the comparison tested speculation


def test_acceptance_follows_how_alike_the_draft_is(pairs: dict[str, Pair]) -> None:
    rates = {}
    for kind, pair in pairs.items():
        pair.max_draft = 4
        rates[kind] = pair.generate(
            PROMPTS[1], max_tokens=80, temperature=0, strategy="draft"
        ).stats.acceptance
    assert rates["draft-same"] == 1.0
    assert 0.1 < rates["draft-noisy"] < 0.95
    assert rates["draft-unrelated"] < rates["draft-noisy"]


def test_came_from_draft_pattern(pairs: dict[str, Pair]) -> None:
    pair = pairs["draft-same"]
    pair.max_draft = 4
    gen = pair.stream(PROMPTS[0], max_tokens=30, temperature=0, strategy="draft")
    flags = [e.from_draft for e in gen if e.token is not None]
    # Every guess of an identical draft is kept: four guessed tokens, then the target's own.
    assert flags == ([True] * 4 + [False]) * 6
    stats = gen.result.stats
    assert stats.accepted == sum(flags) == 24 and stats.steps == 6

    noisy = pairs["draft-noisy"]
    noisy.max_draft = 4
    gen = noisy.stream(PROMPTS[1], max_tokens=60, temperature=0, strategy="draft")
    flags = [e.from_draft for e in gen if e.token is not None]
    result = gen.result
    # One target token per step, except the last when an end-of-generation token cut it short.
    assert flags.count(False) == result.stats.steps - (result.finish_reason == "stop")
    assert sum(flags) <= result.stats.accepted


@pytest.mark.parametrize("k", [2, 4, 8])
def test_max_tokens_landing_inside_a_block(pairs: dict[str, Pair], k: int) -> None:
    pair = pairs["draft-same"]
    pair.max_draft = k
    want = reference(pair, PROMPTS[2], 20)
    for m in range(1, 14):
        got = pair.generate(PROMPTS[2], max_tokens=m, temperature=0, strategy="draft")
        assert got.token_ids == want[:m]
        assert got.finish_reason == "length"


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_real_eos_inside_a_draft_block(pairs: dict[str, Pair], k: int) -> None:
    # The tiny target ends "hello world" with an end-of-generation token after 37 tokens.
    pair = pairs["draft-same"]
    pair.max_draft = k
    want = pair.generate(PROMPTS[0], max_tokens=60, temperature=0, strategy="none")
    assert want.finish_reason == "stop" and len(want.token_ids) == 37
    got = pair.generate(PROMPTS[0], max_tokens=60, temperature=0, strategy="draft")
    assert got.token_ids == want.token_ids and got.finish_reason == "stop"
    assert got.stats.steps < len(want.token_ids)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_end_of_generation_inside_a_draft_block(pairs: dict[str, Pair], k: int) -> None:
    # The tiny models rarely emit EOS, so a token from the middle of the reference output is
    # made a stop token: it takes the same path as EOS (generation ends before it).
    pair = pairs["draft-same"]
    pair.max_draft = k
    want = reference(pair, PROMPTS[0], 40)
    at = next(i for i in range(5, 40) if want[i] not in want[:i])
    for strategy in ("none", "draft", "lookup", "auto"):
        got = pair.generate(
            PROMPTS[0], max_tokens=40, temperature=0, strategy=strategy, stop_token_ids=[want[at]]
        )
        assert got.token_ids == want[:at]
        assert got.finish_reason == "stop"


def test_full_context_ends_with_length(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["target"], tiny["draft-same"], n_ctx=256, n_threads=1, p_min=0.0)
    prompt = list(range(3, 243))  # 240 byte tokens
    want = pair.generate(prompt, max_tokens=100, temperature=0, strategy="none")
    assert want.finish_reason == "length"
    assert len(prompt) + len(want.token_ids) == pair.n_ctx + 1
    for strategy in ("draft", "lookup", "auto"):
        got = pair.generate(prompt, max_tokens=100, temperature=0, strategy=strategy)
        assert got.token_ids == want.token_ids


def test_sampled_generation_is_reproducible_with_a_seed(pairs: dict[str, Pair]) -> None:
    pair = pairs["draft-noisy"]
    pair.max_draft = 4
    for strategy in ("none", "draft", "lookup"):
        a = pair.generate(PROMPTS[1], max_tokens=40, temperature=0.9, seed=11, strategy=strategy)
        b = pair.generate(PROMPTS[1], max_tokens=40, temperature=0.9, seed=11, strategy=strategy)
        assert a.token_ids == b.token_ids and len(a.token_ids) > 0


def test_a_continued_prompt_prefills_only_new_tokens(pairs: dict[str, Pair]) -> None:
    pair = pairs["draft-same"]
    pair.max_draft = 4
    first = pair.generate(PROMPTS[0], max_tokens=10, temperature=0, strategy="draft")
    prompt = pair.prompter.tokenize(PROMPTS[0]) + first.token_ids
    assert pair.draft_model is not None
    before = pair.draft_model.n_prefilled
    second = pair.generate([*prompt, 50, 51, 52], max_tokens=5, temperature=0, strategy="draft")
    assert second.stats.prompt_prefilled == 3  # the cache held the prompt and the reply
    assert pair.draft_model.n_prefilled - before <= 5  # the draft caught up only on the new tokens


def test_sampling_with_a_draft_that_guesses_nothing(tiny: dict[str, Path]) -> None:
    # p_min = 1 stops the draft before its first guess: the step is the target alone.
    pair = Pair(tiny["target"], tiny["draft-noisy"], n_ctx=256, n_threads=1, p_min=1.0)
    result = pair.generate(
        PROMPTS[1], max_tokens=8, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=3, strategy="draft"
    )
    assert len(result.token_ids) > 0 and result.stats.drafted == 0


def test_a_stream_closed_early_reports_interrupted(pairs: dict[str, Pair]) -> None:
    pair = pairs["draft-same"]
    pair.max_draft = 4
    gen = pair.stream(PROMPTS[1], max_tokens=40, temperature=0, strategy="draft")
    events = iter(gen)
    first = [next(events).token for _ in range(3)]
    gen.close()
    assert gen.result.finish_reason == "interrupted" and gen.result.token_ids == first
    # The next generation starts from a consistent cache.
    assert pair.generate(PROMPTS[1], max_tokens=20, temperature=0, strategy="draft").token_ids == reference(
        pair, PROMPTS[1], 20
    )


def test_stats_merge_sums_counts(pairs: dict[str, Pair]) -> None:
    from edgespec.generate import Stats

    pair = pairs["draft-noisy"]
    pair.max_draft = 4
    a = pair.generate(PROMPTS[1], max_tokens=20, temperature=0, strategy="draft").stats
    b = pair.generate(PROMPTS[2], max_tokens=20, temperature=0, strategy="lookup").stats
    total = Stats()
    total.merge(a)
    total.merge(b)
    assert total.steps == a.steps + b.steps and total.n_tokens == a.n_tokens + b.n_tokens
    assert total.steps_by_source == {"draft": a.steps, **b.steps_by_source}
    assert total.drafted_by_position[0] == a.drafted_by_position[0] + b.drafted_by_position[0]


class ModelTimePlanner(AutoPlanner):
    """auto on a made-up flat curve: the tiny models' real timings would make it never guess."""

    def observe(self, proposal: Proposal, n_accepted: int, propose_s: float, verify_s: float) -> None:
        super().observe(proposal, n_accepted, 0.0, self.costs.verify(len(proposal.tokens) + 1))


FLAT = {1: 1.0, 2: 1.05, 4: 1.1, 8: 1.2, 16: 1.4, 32: 2.0, 64: 3.0}


def model_time_planner(pair: Pair, draft_s: float, max_draft: int) -> ModelTimePlanner:
    """auto's planner for ``pair`` on the flat curve, taking copies as sure while short and as
    doubtful after: the draft goes on where a copy stops."""
    assert pair.draft_model is not None
    planner = ModelTimePlanner(CostModel(dict(FLAT), draft_s), pair.lookup, [pair.draft_model], max_draft)
    for m in range(1, 200, 3):
        planner.copies.observe([m] * 20, [m < 6] * 20)
    return planner


@pytest.mark.parametrize("kind", ["draft-same", "draft-noisy"])
def test_greedy_output_of_joined_proposals_equals_target_alone(pairs: dict[str, Pair], kind: str) -> None:
    pair = pairs[kind]
    sources: set[str] = set()
    for max_draft, draft_s in ((3, 0.05), (8, 0.1), (16, 0.2)):
        planner = model_time_planner(pair, draft_s, max_draft)
        for prompt in PROMPTS:
            want = reference(pair, prompt, 80)
            pair.reset(forget_earlier=True)  # or the reply just generated would be copied whole
            got = pair.generate(prompt, max_tokens=80, temperature=0, max_draft=max_draft, planner=planner)
            assert got.token_ids == want
            assert max(len(p) for p in [got.stats.to_dict()["drafted_by_position"]]) <= max_draft  # type: ignore[arg-type]
            sources |= set(got.stats.steps_by_source)
    if kind == "draft-noisy":  # a perfect draft leaves copies nothing to do
        assert {"lookup+draft", "draft+lookup", "draft"} <= sources, sources


def test_sampling_with_joined_proposals_is_reproducible(pairs: dict[str, Pair]) -> None:
    # Planners learn as they go and lookups copy from earlier requests, so each run starts afresh.
    pair = pairs["draft-noisy"]
    sources: set[str] = set()
    for prompt in PROMPTS:
        runs = []
        for _ in range(2):
            pair.reset(forget_earlier=True)
            planner = model_time_planner(pair, 0.1, 8)
            runs.append(pair.generate(prompt, max_tokens=60, temperature=0.9, seed=5, planner=planner))
        assert runs[0].token_ids == runs[1].token_ids and runs[0].token_ids
        sources |= set(runs[0].stats.steps_by_source)
    assert any("+" in s for s in sources), sources


def test_lookup_copies_from_earlier_requests(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["target"], tiny["draft-noisy"], n_ctx=512, n_threads=1)
    first = pair.generate(PROMPTS[2], max_tokens=40, temperature=0, strategy="none")
    pair.reset()  # a new conversation: nothing in the caches, the history starts again
    again = pair.generate(PROMPTS[2], max_tokens=40, temperature=0, strategy="lookup", max_draft=8)
    assert again.token_ids == first.token_ids
    # The earlier reply is copied from the process's memory: nearly every guess is kept.
    assert again.stats.accepted >= 30 and again.stats.steps <= 10
    fresh = Pair(tiny["target"], tiny["draft-noisy"], n_ctx=512, n_threads=1)
    alone = fresh.generate(PROMPTS[2], max_tokens=40, temperature=0, strategy="lookup", max_draft=8)
    assert alone.token_ids == first.token_ids and alone.stats.accepted < 10
