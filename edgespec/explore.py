"""Trying, now and then, an option the planner's estimates rule out: else ``auto`` would never learn
that a draft it had written off is kept after all (it once never tried a draft that was 93 % kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgespec.calibration import Calibration, expected_tokens
from edgespec.plans import Drafter, Option, Weighing, copied
from edgespec.proposers import Proposal

EXPLORE_SHARE = 0.01  # of the time spent, what trying options the estimates rule out may add
EXPLORE_K = 2  # guesses such a try makes


class Explorer:
    """Pays for tries from a budget of :data:`EXPLORE_SHARE` of the time spent.

    What a try is expected to lose against the best option, in seconds at the step's rate and with
    a drafter's catching up charged in full, is paid from the budget; the option with the least
    recent evidence goes first.
    """

    def __init__(self, drafters: Sequence[Drafter], copies: Calibration) -> None:
        self.drafters = drafters
        """The planner's drafters (those with a measured cost)."""
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
        for d in self.drafters:
            if d.name != best.source:
                seconds = float(w.curve[k]) + d.batch_s(d.proposer.lag(history)) + d.step_s * (k - 1)
                tokens = expected_tokens(np.full(k, d.pooled()))[k]
                choices.append((d.confidence.tried_all, best.value - tokens + w.rate * seconds, d.name))
        if copy.tokens and best.source != "lookup":
            n = min(k, len(copy.tokens))
            tokens = expected_tokens(self.copies.rates(copy.match[:n]))[n]
            choices.append(
                (self.copies.tried_all, best.value - tokens + w.rate * float(w.curve[n]), "lookup")
            )
        if not choices:
            return None
        _, loss, source = min(choices)
        loss_s = max(loss, 0.0) / w.rate
        if loss_s > self.budget:
            return None
        self.budget -= loss_s
        if source == "lookup":
            return copied(copy, min(k, len(copy.tokens)))
        drafter = next(d for d in self.drafters if d.name == source)
        return drafter.proposer.propose(history, k, w.params, w.rng, lambda i, top: k)
