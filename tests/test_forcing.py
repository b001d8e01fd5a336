"""The grammar as a proposer: forced tokens taken first where their rows pay, joined with what the
planner chooses after them, never calibrated as drafts; the draft takes them without drafting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgespec.constraint import Constraint
from edgespec.costs import CostModel
from edgespec.forcing import forced_lead
from edgespec.grammar import FREE, Matcher
from edgespec.llama import Context, Model
from edgespec.lookup import PromptLookup
from edgespec.planner import AutoPlanner
from edgespec.plans import join
from edgespec.proposers import DraftModel, Proposal
from edgespec.sampling import SamplingParams

KEYS = Constraint.grammar('start: "{\\"alpha\\": " /[0-9]+/ ", \\"beta\\": " /[0-9]+/ "}"')
FLAT = CostModel({1: 0.1, 2: 0.101, 4: 0.103, 8: 0.107, 16: 0.118, 32: 0.14, 64: 0.2}, draft_s=0.002)
STEEP = CostModel({1: 0.03, 2: 0.075, 4: 0.16, 8: 0.33, 16: 0.66, 32: 1.3, 64: 2.6})  # rows cost > a step


@pytest.fixture(scope="module")
def target(tiny: dict[str, Path]) -> Iterator[Model]:
    model = Model(tiny["target"])
    yield model
    model.close()


def _params(target: Model, history: list[int]) -> SamplingParams:
    return SamplingParams(temperature=0.0, grammar=Matcher(KEYS, target, len(history), greedy=True))


def test_forced_tokens_are_taken_where_their_rows_pay(target: Model) -> None:
    history = [1, 2, 3]
    params = _params(target, history)
    flat = FLAT.curve(20)
    lead = forced_lead(history, 20, flat, 1 / flat[0], params)
    assert target.detokenize(lead.tokens) == '{"alpha": '
    assert lead.source == "grammar" and all(lead.forced) and lead.q is None
    steep = STEEP.curve(20)
    assert forced_lead(history, 20, steep, 1 / steep[0], params).tokens == []  # each row costs more
    assert len(forced_lead(history, 3, flat, 1 / flat[0], params).tokens) == 3  # at most max_k
    assert forced_lead(history, 20, flat, 1 / flat[0], SamplingParams(temperature=0.0)).tokens == []


def test_auto_puts_forced_tokens_first_and_weighs_the_rest_after_them(target: Model) -> None:
    history = [1, 2, 3]
    params = _params(target, history)
    planner = AutoPlanner(CostModel(dict(FLAT.verify_s), FLAT.draft_s), PromptLookup())
    planner.begin()
    planner.propose(history, 20, params, np.random.default_rng(0))  # the first step: the target alone
    proposal = planner.propose(history, 20, params, np.random.default_rng(0))
    assert proposal.source.startswith("grammar")
    n = len(target.tokenize('{"alpha": ', add_special=False))
    assert proposal.forced[:n] == [True] * n


def test_forced_rows_teach_a_drafters_calibration_nothing() -> None:
    """Forced tokens continued by the draft: only the draft's own guesses are calibrated."""
    from test_planner import FakeDraft

    planner = AutoPlanner(CostModel(dict(FLAT.verify_s), FLAT.draft_s), PromptLookup(), [FakeDraft()])
    forced = Proposal([5, 6, 7], "grammar", None, [1.0] * 3, [0] * 3, [True] * 3)
    proposal = join(forced, Proposal([8, 9], "draft", None, [0.9, 0.9], [0, 0]))
    assert proposal.source == "grammar+draft"
    planner.observe(proposal, 5, 0.0, 0.1)
    assert round(planner.drafters[0].confidence.tried_all) == 2  # the two drafted rows, not the forced


def test_the_draft_takes_forced_tokens_without_drafting_them(tiny: dict[str, Path], target: Model) -> None:
    draft_model = Model(tiny["draft-same"])
    ctx = Context(draft_model, n_ctx=256, n_threads=1)
    try:
        draft = DraftModel(ctx, target.n_vocab)
        history = target.tokenize("hi", add_special=True)
        params = _params(target, history)
        proposal = draft.propose(history, 12, params, np.random.default_rng(0), lambda i, top: 12)
        text = target.detokenize(proposal.tokens)
        assert text.startswith('{"alpha": ')
        n_forced = len(target.tokenize('{"alpha": ', add_special=False))
        assert list(proposal.forced[:n_forced]) == [True] * n_forced
        assert not any(proposal.forced[n_forced : n_forced + 1])  # the digits are the draft's
        assert all(c == 1.0 for c in proposal.confidence[:n_forced])
        with params.grammar.at(history) as g:
            assert g.valid(proposal.tokens) == len(proposal.tokens)  # every guess the grammar allows
        free = draft.propose(
            history, 4, SamplingParams(temperature=0.0, grammar=FREE), np.random.default_rng(0)
        )
        assert free.forced == ()
    finally:
        ctx.close()
        draft_model.close()


def test_forced_tokens_are_not_continued_by_a_drafter_that_reads_only_verified_text(target: Model) -> None:
    """The MTP layers read each token with the target's hidden row: after forced tokens the target
    has not decoded yet they have none, so auto lets only drafters that can continue copies go on."""
    from test_planner import FakeDraft

    history = [1, 2, 3]
    params = _params(target, history)
    costs = CostModel(dict(FLAT.verify_s), mtp_batch_s={1: 0.001, 8: 0.002})
    for continues in (False, True):  # the control: a drafter that may continue them does
        mtp = FakeDraft(confidence=(0.99,) * 64, name="mtp", continues_copies=continues)
        planner = AutoPlanner(costs, PromptLookup(), [mtp])
        planner.begin()
        planner.propose(history, 20, params, np.random.default_rng(0))  # the first step: the target alone
        proposal = planner.propose(history, 20, params, np.random.default_rng(0))
        assert proposal.source.startswith("grammar")
        assert ("mtp" in proposal.source.split("+")) == continues, proposal.source
