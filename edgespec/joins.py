"""Proposals from two proposers in one verification batch: a copy a drafter continues where the
copy runs out or turns doubtful, and drafted text extended by copying where it matches an earlier
span. Each part's guesses keep their own rows (``confidence``, ``match``, ``q``), so the verifier and
the planner's calibrations treat each guess as its proposer made it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgespec.calibration import Calibration
from edgespec.lookup import PromptLookup
from edgespec.plans import Drafter, Weighing, copied, join
from edgespec.proposers import Proposal


class Joins:
    """Joins a step's chosen proposal with another proposer's, where the planner's terms say the
    longer batch pays."""

    def __init__(self, lookup: PromptLookup | None, copies: Calibration) -> None:
        self.lookup = lookup
        self.copies = copies

    def continue_with_draft(
        self, history: Sequence[int], copy: Proposal, w: Weighing, max_draft: int, drafter: Drafter | None
    ) -> Proposal:
        """``copy``, or its guesses up to where it turns doubtful (a guess less likely kept than a
        drafted one) continued by ``drafter``, which first decodes what it missed and the copied
        guesses, then drafts under its :class:`~edgespec.plans.DraftPlan`."""
        if drafter is None:
            return copy
        pooled = drafter.pooled()
        rates = self.copies.rates(copy.match)
        j = next((i for i, r in enumerate(rates) if r < pooled), len(rates))
        room = min(w.max_k - j, max_draft)
        if room <= 0:
            return copy
        survival = float(np.prod(rates[:j]))
        more = np.arange(1, room + 1)
        gain = survival * np.cumsum(pooled**more)
        cost = w.curve[j + 1 : j + 1 + room] - w.curve[j] + drafter.seconds(history, room, extra=j)[1:]
        if np.max(gain - w.rate * cost) <= 0:
            return copy
        kept = copied(copy, j)
        plan = drafter.plan(w.curve, w.rate, rows=j, survival=survival)
        drafted = drafter.proposer.propose(
            [*history, *kept.tokens], room, w.params, w.rng, plan, len(history)
        )
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
