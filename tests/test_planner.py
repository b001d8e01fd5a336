"""Planner decisions on synthetic cost curves and acceptance histories."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from edgespec.planner import Acceptance, AutoPlanner, CostModel
from edgespec.proposers import PromptLookup, Proposal
from edgespec.sampling import GREEDY

RNG = np.random.default_rng(0)
STEP = 0.0315  # seconds for one target token on the 2-core CPU (docs/design.md)
# docs/design.md's measured curve on a 2-core CPU, in single-step units: verification is nearly linear.
CPU = CostModel(
    {
        1: STEP,
        2: 1.74 * STEP,
        4: 2.9 * STEP,
        8: 6.7 * STEP,
        12: 8.3 * STEP,
        16: 7.8 * STEP,
        24: 13.5 * STEP,
        32: 13.3 * STEP,
        64: 23.6 * STEP,
    },
    draft_s=0.6 * STEP,
)
# A GPU: single steps are memory-bound, so 8 tokens cost about as much as one; a cheap draft.
GPU = CostModel({1: 0.010, 2: 0.0101, 4: 0.0103, 8: 0.0107, 16: 0.0118, 32: 0.014, 64: 0.02}, draft_s=0.002)


class FakeDraft:
    """Stands in for DraftModel: guesses ``k`` copies of token 7 and counts calls."""

    name = "draft"

    def __init__(self) -> None:
        self.calls = 0

    def propose(self, history: Sequence[int], k: int, params: object, rng: object) -> Proposal:
        self.calls += 1
        return Proposal([7] * k, "draft")

    def reset(self) -> None:
        pass


def planner(costs: CostModel, draft: bool = True) -> tuple[AutoPlanner, FakeDraft]:
    fake = FakeDraft()
    costs = CostModel(dict(costs.verify_s), costs.draft_s)  # a copy: planners learn costs as they go
    p = AutoPlanner(costs, PromptLookup(), fake if draft else None, max_draft=16)  # type: ignore[arg-type]
    p.begin()
    p.propose([1], 8, GREEDY, RNG)  # the first step of a generation never speculates
    return p, fake


def teach(acceptance: Acceptance, rate: float, steps: int = 200, k: int = 8) -> None:
    rng = np.random.default_rng(1)
    for _ in range(steps):
        n = 0
        while n < k and rng.random() < rate:
            n += 1
        acceptance.observe(k, n)


def test_cost_curve_interpolates_and_captures_steps() -> None:
    assert CPU.verify(16) < CPU.verify(12)
    assert CPU.verify(10) == pytest.approx((6.7 + 8.3) / 2 * STEP)
    assert CPU.relative()[64] == pytest.approx(23.6)


def test_first_step_is_the_target_alone() -> None:
    p, _fake = planner(GPU)
    p.begin()
    assert p.propose([1, 2, 3], 8, GREEDY, RNG).tokens == []
    assert p.propose([1, 2, 3], 8, GREEDY, RNG).source == "draft"


def test_cpu_curve_never_pays_for_a_draft_model_even_at_high_acceptance() -> None:
    p, fake = planner(CPU)
    teach(p.draft_acceptance, 0.95)
    proposal = p.propose([5, 6, 7, 8], 16, GREEDY, RNG)
    assert proposal.tokens == [] and fake.calls == 0


def test_flat_curve_uses_the_draft_model() -> None:
    p, _fake = planner(GPU)
    teach(p.draft_acceptance, 0.8)
    proposal = p.propose([5, 6, 7, 8], 16, GREEDY, RNG)
    assert proposal.source == "draft" and len(proposal.tokens) >= 3


def test_flat_curve_drops_a_draft_that_is_never_right() -> None:
    p, _fake = planner(GPU)
    teach(p.draft_acceptance, 0.0)
    assert p.propose([5, 6, 7, 8], 16, GREEDY, RNG).tokens == []


def copy_history(n: int = 80) -> list[int]:
    text = list(range(100, 100 + n))
    return [*text, 1, 2, *text[:20]]  # the output is copying the text: a long lookup match


def test_cpu_curve_takes_long_lookups_when_copies_are_kept() -> None:
    p, _ = planner(CPU)
    for band in p.lookup_acceptance:
        teach(band, 0.995, k=32)
    proposal = p.propose(copy_history(), 63, GREEDY, RNG)
    assert proposal.source == "lookup" and len(proposal.tokens) >= 15


def test_cpu_curve_stops_looking_up_when_copies_are_rejected() -> None:
    p, _ = planner(CPU)
    for band in p.lookup_acceptance:
        teach(band, 0.2)
    assert p.propose(copy_history(), 63, GREEDY, RNG).tokens == []


def test_an_unproven_lookup_is_tried_briefly() -> None:
    p, _ = planner(CPU)
    proposal = p.propose(copy_history(), 63, GREEDY, RNG)
    assert proposal.source == "lookup" and 1 <= len(proposal.tokens) <= 4


def test_learning_from_observations() -> None:
    p, _ = planner(CPU)
    history = copy_history()
    for _ in range(60):  # every lookup guess is kept: the planner grows bolder
        proposal = p.propose(history, 63, GREEDY, RNG)
        p.observe(proposal, len(proposal.tokens), 0.0, CPU.verify(len(proposal.tokens) + 1))
    assert len(p.propose(history, 63, GREEDY, RNG).tokens) >= 15
    for _ in range(60):  # now none is kept: it stops guessing
        proposal = p.propose(history, 63, GREEDY, RNG)
        p.observe(proposal, 0, 0.0, CPU.verify(len(proposal.tokens) + 1))
    assert p.propose(history, 63, GREEDY, RNG).tokens == []


def test_acceptance_by_position_shrinks_to_the_pooled_rate() -> None:
    a = Acceptance(prior_rate=0.5)
    for _ in range(50):
        a.observe(2, 2)  # positions 0 and 1 always kept; 2+ never tried
    rates = a.rates(5)
    assert rates[0] > 0.9 and rates[1] > 0.9
    assert rates[4] == pytest.approx(a.pooled())
    assert a.expected_tokens(2)[-1] == pytest.approx(1 + rates[0] + rates[0] * rates[1])


def test_costs_follow_what_generation_observes() -> None:
    costs = CostModel({1: 0.03, 4: 0.09, 16: 0.25})
    for _ in range(100):
        costs.observe(1, 0.06)  # the device got twice as slow
        costs.observe(3, 1.0)  # not a measured size: interpolation covers it
    assert costs.verify(1) == pytest.approx(0.06, rel=1e-3)
    assert costs.verify(4) == 0.09 and 3 not in costs.verify_s
