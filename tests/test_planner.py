"""Planner decisions on synthetic cost curves and acceptance histories."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from edgespec.calibration import Calibration, copy_calibration
from edgespec.costs import CostModel
from edgespec.lookup import PromptLookup
from edgespec.planner import AutoPlanner
from edgespec.plans import DraftPlan
from edgespec.proposers import Plan, Proposal
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
# The heavy target (F16 1.5B with the Q4 0.5B draft, DESIGN.md): the draft costs 0.2 of a step.
HEAVY = CostModel({1: 0.1, 2: 0.131, 4: 0.154, 8: 0.223, 16: 0.334, 32: 0.6, 64: 1.16}, draft_s=0.02)
# A GPU: single steps are memory-bound, so 8 tokens cost about as much as one; a cheap draft.
GPU = CostModel({1: 0.010, 2: 0.0101, 4: 0.0103, 8: 0.0107, 16: 0.0118, 32: 0.014, 64: 0.02}, draft_s=0.002)


class FakeDraft:
    """Stands in for DraftModel: guesses the given tokens with the given confidences, asking the
    plan after each guess as DraftModel does, and records what it was asked."""

    name = "draft"

    def __init__(
        self,
        confidence: Sequence[float] = (0.9,) * 64,
        tokens: Sequence[int] = range(1000, 1064),
        name: str = "draft",
        continues_copies: bool = True,
    ) -> None:
        self.name = name
        self.continues_copies = continues_copies
        self.calls = 0
        self.confidence = list(confidence)
        self.tokens = list(tokens)
        self.histories: list[list[int]] = []
        self.verified: list[int] = []

    def lag(self, history: Sequence[int]) -> int:
        return 2

    def propose(
        self,
        history: Sequence[int],
        k: int,
        params: object,
        rng: object,
        plan: Plan,
        verified: int | None = None,
    ) -> Proposal:
        self.calls += 1
        self.histories.append(list(history))
        self.verified.append(len(history) if verified is None else verified)
        n = 0
        while n < k:
            wanted = plan(n, self.confidence[n])
            if wanted <= n:
                break
            n += 1
            if n >= wanted:
                break
        return Proposal(self.tokens[:n], self.name, confidence=self.confidence[:n], match=[0] * n)

    def reset(self) -> None:
        pass


def planner(
    costs: CostModel, draft: FakeDraft | None = None, *, drafting: bool = True
) -> tuple[AutoPlanner, FakeDraft]:
    """auto's planner on ``costs`` with a fake draft model (none when not ``drafting``)."""
    fake = draft or FakeDraft()
    costs = CostModel(dict(costs.verify_s), costs.draft_s)  # a copy: planners learn costs as they go
    p = AutoPlanner(costs, PromptLookup(), [fake] if drafting else [], max_draft=16)
    p.begin()
    p.propose([1], 8, GREEDY, RNG)  # the first step of a generation never speculates
    return p, fake


def teach(calibration: Calibration, score: float, rate: float, steps: int = 300) -> None:
    """Verifications of guesses with this score, kept at this rate."""
    rng = np.random.default_rng(1)
    for _ in range(steps):
        calibration.observe([score], [bool(rng.random() < rate)])


def test_cost_curve_interpolates_and_captures_steps() -> None:
    assert CPU.verify(16) < CPU.verify(12)
    assert CPU.verify(10) == pytest.approx((6.7 + 8.3) / 2 * STEP)
    assert CPU.relative()[64] == pytest.approx(23.6)
    assert CPU.curve(15)[9] == pytest.approx(CPU.verify(10))


def test_first_step_is_the_target_alone() -> None:
    p, _fake = planner(GPU)
    p.begin()
    assert p.propose([1, 2, 3], 8, GREEDY, RNG).tokens == []
    assert p.propose([1, 2, 3], 8, GREEDY, RNG).source == "draft"


def test_cpu_curve_never_pays_for_a_draft_model_even_at_high_acceptance() -> None:
    p, fake = planner(CPU, FakeDraft([0.999] * 64))
    teach(p.drafters[0].confidence, 0.999, 1.0)
    proposal = p.propose([5, 6, 7, 8], 16, GREEDY, RNG)
    assert proposal.tokens == [] and fake.calls == 0


def test_flat_curve_uses_the_draft_model() -> None:
    p, _fake = planner(GPU)
    teach(p.drafters[0].confidence, 0.9, 0.8)
    proposal = p.propose([5, 6, 7, 8], 16, GREEDY, RNG)
    assert proposal.source == "draft" and len(proposal.tokens) >= 3


def test_flat_curve_drops_a_draft_that_is_never_right() -> None:
    p, fake = planner(GPU)
    teach(p.drafters[0].confidence, 0.9, 0.0)
    assert p.propose([5, 6, 7, 8], 16, GREEDY, RNG).tokens == [] and fake.calls == 0


def plan_length(curve: CostModel, confidence: list[float], calibration: Calibration, rate: float) -> int:
    assert curve.draft_s is not None
    plan = DraftPlan(curve.curve(len(confidence)), curve.draft_s, rate, calibration, pooled=0.8)
    n = 0
    while n < len(confidence):
        wanted = plan(n, confidence[n])
        if wanted <= n:
            break
        n += 1
    return n


def test_draft_continuation_stops_where_the_marginal_rate_falls() -> None:
    # Every guess is kept at the rate its confidence says (a calibrated draft).
    calibration = Calibration([0.0, 0.5, 0.9], np.array([0.3, 0.7, 0.95]), prior_weight=1e9)
    rate = 2.0 / HEAVY.verify(1)  # the step aims at twice the target alone
    # Sure guesses are drafted on until an unsure one: it is not worth the seconds it adds.
    assert plan_length(HEAVY, [0.95, 0.95, 0.95, 0.2, 0.95], calibration, rate) == 3
    # On the flat heavy curve a long confident run goes on; each guess is worth its cost.
    assert plan_length(HEAVY, [0.95] * 12, calibration, rate) == 12
    # With verification as dear as on the CPU, sure guesses stop where the curve rises (5 tokens
    # cost 3.85 steps, 4 cost 2.9): the drafting already done is sunk, the verification is not.
    assert plan_length(CPU, [0.95] * 12, calibration, 1.0 / CPU.verify(1)) == 3
    # A lower target rate (a step that already pays less) accepts the unsure guess.
    assert plan_length(HEAVY, [0.95, 0.95, 0.95, 0.6], calibration, 0.5 / HEAVY.verify(1)) == 4


def test_calibration_learns_what_a_confidence_is_worth() -> None:
    p, _fake = planner(HEAVY, FakeDraft([0.97] * 4 + [0.5] * 60))
    first = p.propose([5, 6, 7, 8], 16, GREEDY, RNG)
    assert len(first.tokens) > 4  # a prior that trusts the draft's word: 0.5 is kept half the time
    for _ in range(100):  # but guesses at 0.5 are nearly always rejected, those at 0.97 kept
        p.drafters[0].confidence.observe([0.97, 0.97, 0.97, 0.97, 0.5], [True, True, True, True, False])
    assert len(p.propose([5, 6, 7, 8], 16, GREEDY, RNG).tokens) == 4


def copy_history(n: int = 80) -> list[int]:
    text = list(range(100, 100 + n))
    return [*text, 1, 2, *text[:20]]  # the output is copying the text: a long lookup match


def test_cpu_curve_takes_long_lookups_where_the_curve_steps() -> None:
    p, _ = planner(CPU, drafting=False)
    for m in (16, 24, 32, 48, 64, 96):
        teach(p.copies, m, 0.995)
    proposal = p.propose(copy_history(), 63, GREEDY, RNG)
    assert proposal.source == "lookup" and len(proposal.tokens) == 63  # 64 tokens for 23.6 steps
    # 16 tokens cost less than 12 on this curve and 21 cost 11.4: where generation runs at twice
    # the target alone, the copy ends at the step.
    p.rate = 2.0 / STEP
    assert len(p.propose(copy_history(), 20, GREEDY, RNG).tokens) == 15


def test_copies_are_judged_by_how_far_they_have_been_kept() -> None:
    p, _ = planner(CPU, drafting=False)
    for m in (1, 2, 3, 4, 6):
        teach(p.copies, m, 0.2)  # copies fail where they start
    for m in (8, 12, 16, 24, 32, 48, 64):
        teach(p.copies, m, 0.99)  # and go on once they run
    assert p.propose([*range(100, 140), 1, 2, 100, 101, 102], 63, GREEDY, RNG).tokens == []
    assert len(p.propose([*range(100, 140), 1, 2, *range(100, 120)], 63, GREEDY, RNG).tokens) >= 15


def test_cpu_curve_stops_looking_up_when_copies_are_rejected() -> None:
    p, _ = planner(CPU, drafting=False)
    for m in range(1, 40):
        teach(p.copies, m, 0.2)
    assert p.propose(copy_history(), 63, GREEDY, RNG).tokens == []


def test_an_unproven_lookup_is_tried_briefly() -> None:
    p, _ = planner(CPU, drafting=False)
    proposal = p.propose(copy_history(), 63, GREEDY, RNG)
    assert proposal.source == "lookup" and 1 <= len(proposal.tokens) <= 4


def test_learning_from_observations() -> None:
    p, _ = planner(CPU, drafting=False)
    history = copy_history()
    for _ in range(60):  # every lookup guess is kept: the planner grows bolder
        proposal = p.propose(history, 63, GREEDY, RNG)
        p.observe(proposal, len(proposal.tokens), 0.0, CPU.verify(len(proposal.tokens) + 1))
    assert len(p.propose(history, 63, GREEDY, RNG).tokens) >= 15
    for _ in range(60):  # now none is kept: it stops guessing
        proposal = p.propose(history, 63, GREEDY, RNG)
        p.observe(proposal, 0, 0.0, CPU.verify(len(proposal.tokens) + 1))
    assert p.propose(history, 63, GREEDY, RNG).tokens == []


def test_calibration_counts_only_judged_guesses_and_decays() -> None:
    c = copy_calibration()
    prior = c.rate(8)
    c.observe([8, 9, 10], [True, True, False])
    assert c.tried[c._bin(8)] == pytest.approx(1 + 0.98 + 0.98**2) and c.rate(8) < prior
    for _ in range(1000):
        c.observe([12], [False])  # another bin's evidence leaves this one as it was
        c.observe([100], [True])
    assert c.rate(8) < prior and c.rate(12) < 0.1 and c.rate(100) > 0.9
    for _ in range(1000):
        c.observe([8], [True])  # old evidence fades
    assert c.rate(8) > 0.95


def test_every_proposal_respects_max_k() -> None:
    for costs in (CPU, HEAVY, GPU):
        p, _ = planner(costs, FakeDraft([0.999] * 64))
        teach(p.drafters[0].confidence, 0.999, 1.0)
        for m in range(1, 64):
            teach(p.copies, m, 1.0)
        for max_k in (1, 2, 3, 5, 8):
            assert len(p.propose(copy_history(), max_k, GREEDY, RNG).tokens) <= max_k


def test_a_copy_that_turns_doubtful_goes_on_with_the_draft() -> None:
    p, fake = planner(HEAVY, FakeDraft([0.99] * 64))
    teach(p.drafters[0].confidence, 0.99, 0.95)
    for m in range(2, 10):
        teach(p.copies, m, 0.99)
    for m in (12, 16, 24, 32):
        teach(p.copies, m, 0.05)  # copies break after twelve matched tokens here
    history = [*range(100, 110), 1, 2, *range(100, 108)]
    proposal = p.propose(history, 12, GREEDY, RNG)
    assert proposal.source == "lookup+draft"
    copied = [108, 109, 1, 2]  # matched 8 to 11 tokens
    assert proposal.tokens[:4] == copied and proposal.tokens[4:] == fake.tokens[: len(proposal.tokens) - 4]
    assert fake.histories[-1] == [*history, *copied]  # the draft goes on from the copied text
    assert fake.verified[-1] == len(history)  # of which only the history is verified
    assert list(proposal.match[:4]) == [8, 9, 10, 11] and not any(proposal.match[4:])
    assert len(proposal.tokens) <= 12


def test_a_copy_goes_on_only_with_a_drafter_that_can_read_unverified_text() -> None:
    # The MTP layers read each token with the target's row for it: a copied guess has none yet.
    p, draft, mtp = two_drafters(0.0005, HEAVY)
    teach(p.drafters[0].confidence, 0.9, 0.7)
    teach(p.drafters[1].confidence, 0.9, 0.8)  # worth more than the draft model, less than the copy
    for m in range(2, 10):
        teach(p.copies, m, 0.99)
    for m in (12, 16, 24, 32):
        teach(p.copies, m, 0.05)
    history = [*range(100, 110), 1, 2, *range(100, 108)]
    assert p.propose(history, 12, GREEDY, RNG).source == "lookup+draft"
    assert mtp.calls == 0
    p.drafters = [p.drafters[1]]  # the MTP layers alone
    assert p.propose(history, 12, GREEDY, RNG).source == "lookup"
    assert mtp.calls == 0 and draft.calls == 1


def test_a_draft_that_meets_an_earlier_span_goes_on_by_copying() -> None:
    # The draft's first guesses are the start of a span seen before; it is unsure after them.
    p, _fake = planner(
        HEAVY, FakeDraft([0.99, 0.99, 0.99, 0.3] + [0.3] * 60, tokens=[100, 101, 102, 7] + [7] * 60)
    )
    for _ in range(100):
        p.drafters[0].confidence.observe([0.99, 0.99, 0.99, 0.3], [True, True, True, False])
    for m in range(2, 40):
        teach(p.copies, m, 0.98)
    history = [*range(100, 130), 1, 2]
    proposal = p.propose(history, 20, GREEDY, RNG)
    assert proposal.source == "draft+lookup"
    assert proposal.tokens[:3] == [100, 101, 102] and proposal.tokens[3:] == list(
        range(103, 103 + len(proposal.tokens) - 3)
    )
    assert len(proposal.tokens) > 6 and list(proposal.match[:4]) == [0, 0, 0, 3]


def run(p: AutoPlanner, steps: int, kept: float, history: Sequence[int] = (5, 6, 7, 8)) -> list[Proposal]:
    """Plan and observe ``steps`` steps; each guess is kept with probability ``kept``, and the
    seconds charged are the curve's."""
    rng = np.random.default_rng(2)
    out = []
    for _ in range(steps):
        proposal = p.propose(list(history), 16, GREEDY, RNG)
        n = 0
        while n < len(proposal.tokens) and rng.random() < kept:
            n += 1
        drafting = len(proposal.tokens) * p.costs.draft_s if proposal.source == "draft" else 0.0  # type: ignore[operator]
        p.observe(proposal, n, drafting, p.costs.verify(len(proposal.tokens) + 1))
        out.append(proposal)
    return out


def test_a_draft_written_off_is_tried_within_a_bounded_cost() -> None:
    p, _ = planner(CPU, FakeDraft([0.99] * 64))
    steps = run(p, 2000, kept=0.0)  # on the CPU the draft never pays, and here it is never right
    tried = [s for s in steps if s.tokens]
    assert 1 <= len(tried) <= 40
    extra = sum(CPU.verify(len(s.tokens) + 1) - CPU.verify(1) + len(s.tokens) * 0.6 * STEP for s in tried)
    assert extra <= 0.012 * 2000 * CPU.verify(1)  # about 1 % of the time spent


def test_auto_learns_that_a_draft_it_wrote_off_is_kept() -> None:
    p, _ = planner(HEAVY, FakeDraft([0.9] * 64))
    for _ in range(100):
        p.drafters[0].confidence.observe([0.9], [False])  # what it believed: the draft is never right
    assert run(p, 1, kept=0.95)[0].tokens == []
    steps = run(p, 1500, kept=0.95)  # but now nearly every guess is kept: tries find out
    assert sum(s.source == "draft" for s in steps[-100:]) > 90
    assert np.mean([len(s.tokens) for s in steps[-100:]]) > 4


def test_a_slow_recent_rate_does_not_make_auto_bolder() -> None:
    # After a run of failed guesses generation ran slower than the target alone would; weighing
    # options at that rate would make every long guess look cheap.
    p, _ = planner(CPU, drafting=False)
    at_target_rate = p.propose(copy_history(), 63, GREEDY, RNG).tokens
    p.rate = 0.3 / STEP
    assert p.propose(copy_history(), 63, GREEDY, RNG).tokens == at_target_rate


def test_a_new_generation_trusts_old_copies_less() -> None:
    p, _ = planner(CPU, None)
    prior = p.copies.rate(6)
    teach(p.copies, 6, 1.0)
    learned = p.copies.rate(6)
    p.begin()
    assert prior < p.copies.rate(6) < learned


def test_costs_follow_what_generation_observes() -> None:
    costs = CostModel({1: 0.03, 4: 0.09, 16: 0.25})
    for _ in range(100):
        costs.observe(1, 0.06)  # the device got twice as slow
        costs.observe(3, 1.0)  # not a measured size: interpolation covers it
    assert costs.verify(1) == pytest.approx(0.06, rel=1e-3)
    assert costs.verify(4) == 0.09 and 3 not in costs.verify_s
    assert costs.curve(3)[0] == pytest.approx(0.06, rel=1e-3)


# ---------------------------------------------------------------------------- recurrent targets


def test_a_restore_is_charged_beyond_what_the_target_drops_natively() -> None:
    plain = CostModel(dict(HEAVY.verify_s))
    rollback = CostModel(dict(HEAVY.verify_s), restore_s=0.005, native_depth=16)
    checkpoint = CostModel(dict(HEAVY.verify_s), restore_s=0.005, native_depth=0)
    np.testing.assert_allclose(rollback.curve(40)[:17], plain.curve(40)[:17])
    np.testing.assert_allclose(rollback.curve(40)[17:], plain.curve(40)[17:] + 0.005)
    assert checkpoint.curve(8)[0] == plain.curve(8)[0]  # no guess, nothing to cut back
    np.testing.assert_allclose(checkpoint.curve(8)[1:], plain.curve(8)[1:] + 0.005)


def test_a_recurrent_drafts_rewind_is_charged_with_its_catching_up() -> None:
    from edgespec.plans import catch_up_s

    costs = CostModel(dict(HEAVY.verify_s), 0.02, draft_rewind_s=0.003)
    base = CostModel(dict(HEAVY.verify_s), 0.02)
    for lag in (1, 2, 40):
        charged, plain = (catch_up_s(c.draft_batch, lag, c.draft_rewind_s) for c in (costs, base))
        assert charged == pytest.approx(plain + 0.003)


def test_pending_tokens_price_the_batch_they_start() -> None:
    """After a cut back to a checkpoint the kept guesses are read again with the next batch: guesses
    cost the rows they add after them. On a curve that is flat to 8 tokens and steep after, a copy
    taken with one token pending is declined with eight."""
    cliff = CostModel({1: STEP, 2: 1.05 * STEP, 4: 1.1 * STEP, 8: 1.2 * STEP, 9: 5 * STEP, 64: 60 * STEP})
    p, _ = planner(cliff, FakeDraft(confidence=[0.0] * 64))
    for _ in range(40):  # copies are kept: long matches have paid so far
        p.copies.observe([20] * 10, [True] * 10)
    history = [*range(100, 130), 1, 2, *range(100, 110)]
    assert 0 < len(p.propose(history, 16, GREEDY, RNG, n_pending=1).tokens) <= 7
    assert p.propose(history, 16, GREEDY, RNG, n_pending=8).tokens == []


def two_drafters(mtp_step_s: float, curve: CostModel = GPU) -> tuple[AutoPlanner, FakeDraft, FakeDraft]:
    """auto on ``curve`` with its draft model and the target's MTP layers (``mtp_step_s`` a guess,
    their catching up nearly flat)."""
    batch = {1: mtp_step_s, 2: 1.1 * mtp_step_s, 8: 1.5 * mtp_step_s, 64: 4 * mtp_step_s}
    costs = CostModel(dict(curve.verify_s), curve.draft_s, mtp_batch_s=batch)
    draft, mtp = FakeDraft(), FakeDraft(tokens=range(2000, 2064), name="mtp", continues_copies=False)
    p = AutoPlanner(costs, PromptLookup(), [draft, mtp], max_draft=16)
    p.begin()
    p.propose([1], 8, GREEDY, RNG)
    return p, draft, mtp


def test_auto_weighs_each_drafter_on_its_own_costs_and_keep_rates() -> None:
    p, _, _ = two_drafters(0.0005)
    d, m = p.drafters
    assert (d.name, m.name) == ("draft", "mtp") and m.step_s == 0.0005
    teach(d.confidence, 0.9, 0.8)
    teach(m.confidence, 0.9, 0.8)
    assert p.propose([5, 6, 7, 8], 16, GREEDY, RNG).source == "mtp"  # as sure, and cheaper
    teach(m.confidence, 0.9, 0.05)  # creative text: the MTP layers are seldom kept
    assert p.propose([5, 6, 7, 8], 16, GREEDY, RNG).source == "draft"
    teach(d.confidence, 0.9, 0.0)
    teach(m.confidence, 0.9, 0.0)
    assert p.propose([5, 6, 7, 8], 16, GREEDY, RNG).tokens == []  # neither is kept: no guess


def test_a_drafter_as_sure_but_dearer_is_passed_over() -> None:
    p, _, _ = two_drafters(0.005)  # an MTP guess costs half a target step, a draft guess 0.2
    for drafter in p.drafters:
        teach(drafter.confidence, 0.9, 0.8)
    assert p.propose([5, 6, 7, 8], 16, GREEDY, RNG).source == "draft"


def test_each_drafters_guesses_teach_only_its_own_calibration() -> None:
    p, _, _ = two_drafters(0.0005)
    d, m = p.drafters
    before = d.confidence.tried_all
    p.observe(Proposal([1, 2, 3], "mtp", None, [0.9, 0.9, 0.9], [0, 0, 0]), 1, 0.0, 0.01)
    assert m.confidence.tried_all == pytest.approx(2.0, rel=0.05)  # the kept guess and the rejected one
    assert d.confidence.tried_all == pytest.approx(before * 0.998)  # only aged
    p.observe(Proposal([1, 2], "lookup+mtp", None, [0.0, 0.9], [5, 0]), 2, 0.0, 0.01)
    assert m.confidence.tried_all > 2.5 and d.confidence.tried_all < 0.01


def test_auto_learns_to_stop_guessing_with_a_drafter_never_kept() -> None:
    """Random MTP weights (an MTP guess 0.2 of a step), on the heavy target's curve where they would
    pay if kept: every guess is wrong, so after trying them auto drafts nothing, save its tries."""
    p, _, _ = two_drafters(0.2 * HEAVY.verify(1), HEAVY)
    p.drafters = p.explorer.drafters = [p.drafters[1]]  # the MTP layers alone
    steps = run(p, 1000, kept=0.0)
    assert sum(bool(s.tokens) for s in steps[:20]) >= 2  # an unproven drafter is tried
    # then seldom: tries paid from 1 % of the time, a few guesses each
    assert sum(bool(s.tokens) for s in steps[200:]) <= 24
