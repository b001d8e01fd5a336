"""Proposals from both proposers in one verification batch: a copy the draft model continues where
the copy runs out or turns doubtful, and drafted text extended by copying where it matches an
earlier span. Each part's guesses keep their own rows (``confidence``, ``match``, ``q``), so the
verifier and the planner's calibrations treat each guess as its proposer made it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgespec.calibration import Calibration
from edgespec.costs import CostModel
from edgespec.plans import DraftPlan, Weighing, catch_up_s, copied, join
from edgespec.proposers import DraftModel, PromptLookup, Proposal


class Joins:
    """Joins a step's chosen proposal with the other proposer's, where the planner's terms say the
    longer batch pays."""

    def __init__(
        self,
        costs: CostModel,
        lookup: PromptLookup | None,
        draft: DraftModel | None,
        confidence: Calibration,
        copies: Calibration,
    ) -> None:
        self.costs = costs
        self.lookup = lookup
        self.draft = draft
        self.confidence = confidence
        self.copies = copies

    def continue_with_draft(
        self, history: Sequence[int], copy: Proposal, w: Weighing, max_draft: int
    ) -> Proposal:
        """``copy``, or its guesses up to where it turns doubtful (a guess less likely kept than a
        drafted one) continued by the draft model, which first decodes what it missed and the
        copied guesses, then drafts under a :class:`DraftPlan`."""
        if self.draft is None or self.costs.draft_s is None:
            return copy
        rates = self.copies.rates(copy.match)
        j = next((i for i, r in enumerate(rates) if r < w.pooled), len(rates))
        room = min(w.max_k - j, max_draft)
        if room <= 0:
            return copy
        survival = float(np.prod(rates[:j]))
        more = np.arange(1, room + 1)
        gain = survival * np.cumsum(w.pooled**more)
        cost = (
            w.curve[j + 1 : j + 1 + room]
            - w.curve[j]
            + catch_up_s(self.costs, self.draft.lag(history) + j)
            + self.costs.draft_s * (more - 1)
        )
        if np.max(gain - w.rate * cost) <= 0:
            return copy
        kept = copied(copy, j)
        plan = DraftPlan(
            w.curve, self.costs.draft_s, w.rate, self.confidence, w.pooled, rows=j, survival=survival
        )
        drafted = self.draft.propose([*history, *kept.tokens], room, w.params, w.rng, plan, len(history))
        return join(kept, drafted) if drafted.tokens else copy

    def extend_by_copy(
        self, history: Sequence[int], drafted: Proposal, survival: float, w: Weighing
    ) -> Proposal:
        """``drafted``, followed by a copy of what came after an earlier span its text matches,
        as far as the copy pays (copying costs no drafting)."""
        n = len(drafted.tokens)
        if self.lookup is None or n == 0 or n >= w.max_k:
            return drafted
        copy = self.lookup.propose(history, w.max_k - n, w.params, w.rng, extra=drafted.tokens)
        if not copy.tokens:
            return drafted
        gain = survival * np.cumsum(np.cumprod(self.copies.rates(copy.match)))
        value = gain - w.rate * (w.curve[n + 1 : n + 1 + len(copy.tokens)] - w.curve[n])
        j = int(np.argmax(value))
        if value[j] <= 0:
            return drafted
        return join(drafted, copied(copy, j + 1))
