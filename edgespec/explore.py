"""Trying, now and then, an option the planner's estimates rule out: else ``auto`` would never learn
that a draft it had written off is kept after all (it once never tried a draft that was 93 % kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgespec.calibration import Calibration, expected_tokens
from edgespec.costs import CostModel
from edgespec.plans import Option, Weighing, copied
from edgespec.proposers import DraftModel, Proposal

EXPLORE_SHARE = 0.01  # of the time spent, what trying options the estimates rule out may add
EXPLORE_K = 2  # guesses such a try makes


class Explorer:
    """Pays for tries from a budget of :data:`EXPLORE_SHARE` of the time spent.

    What a try is expected to lose against the best option, in seconds at the step's rate and with
    the draft's catching up charged in full, is paid from the budget; the option with the least
    recent evidence goes first.
    """

    def __init__(
        self, costs: CostModel, draft: DraftModel | None, confidence: Calibration, copies: Calibration
    ) -> None:
        self.costs = costs
        self.draft = draft
        """The planner's draft model: None without one or without its measured cost."""
        self.confidence = confidence
        self.copies = copies
        self.budget = 0.0
        """Seconds tries may still lose."""

    def choose(
        self, history: Sequence[int], best: Option, copy: Proposal, w: Weighing, k: int
    ) -> Proposal | None:
        """A try of up to ``k`` guesses by a proposer other than ``best``'s, or None when the budget
        does not cover one. Each call (one a step) adds the step's share to the budget."""
        self.budget += EXPLORE_SHARE * float(w.curve[best.k])
        if k <= 0:
            return None
        choices: list[tuple[float, float, str]] = []  # (evidence, expected loss in guesses, source)
        if self.draft is not None and self.costs.draft_s is not None and best.source != "draft":
            catch_up = self.costs.draft_batch(self.draft.lag(history))
            seconds = float(w.curve[k]) + catch_up + self.costs.draft_s * (k - 1)
            tokens = expected_tokens(np.full(k, w.pooled))[k]
            choices.append((self.confidence.tried_all, best.value - tokens + w.rate * seconds, "draft"))
        if copy.tokens and best.source != "lookup":
            k = min(k, len(copy.tokens))
            tokens = expected_tokens(self.copies.rates(copy.match[:k]))[k]
            choices.append(
                (self.copies.tried_all, best.value - tokens + w.rate * float(w.curve[k]), "lookup")
            )
        if not choices:
            return None
        _, loss, source = min(choices)
        loss_s = max(loss, 0.0) / w.rate
        if loss_s > self.budget:
            return None
        self.budget -= loss_s
        if source == "lookup":
            return copied(copy, k)
        assert self.draft is not None
        return self.draft.propose(history, k, w.params, w.rng, lambda i, top: k)
