"""Which proposer, and how many tokens, each step: the device's costs times what is accepted now.

On a compute-bound CPU the target verifies n tokens for nearly n single steps, so a guess only
pays when it is cheap and likely kept; on a GPU verification is nearly flat in n and a draft model
pays. :class:`CostModel` holds the measured costs of this device; :class:`Acceptance` learns online
how often guesses are kept, by position; :class:`AutoPlanner` picks, each step, the option with the
highest expected tokens per second, drafting nothing when nothing pays.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgespec.proposers import NO_PROPOSAL, DraftModel, PromptLookup, Proposal
from edgespec.sampling import SamplingParams

MAX_DRAFT = 64


@dataclass
class CostModel:
    """Seconds the target takes to verify n tokens in one batch, and the draft's cost per token."""

    verify_s: dict[int, float]
    """Measured seconds by batch size n (1 is a plain single-token step)."""
    draft_s: float | None = None
    """Seconds per drafted token, or None without a draft model."""

    def verify(self, n: int) -> float:
        """Seconds to verify ``n`` tokens: the measured figure, or linear between measured ones."""
        ns = sorted(self.verify_s)
        if n in self.verify_s:
            return self.verify_s[n]
        i = bisect.bisect_left(ns, n)
        if i == 0:
            return self.verify_s[ns[0]] * n / ns[0]
        if i == len(ns):
            return self.verify_s[ns[-1]] * n / ns[-1]
        lo, hi = ns[i - 1], ns[i]
        w = (n - lo) / (hi - lo)
        return self.verify_s[lo] * (1 - w) + self.verify_s[hi] * w

    def observe(self, n: int, seconds: float, weight: float = 0.1) -> None:
        """Fold a timing seen during generation into the curve (an exponential moving average), so
        that the model follows the device as it is now: thermal limits, other programs, a longer
        context than the one measured. Only measured batch sizes are updated; the rest follow by
        interpolation."""
        old = self.verify_s.get(n)
        if old is not None:
            self.verify_s[n] = old + weight * (seconds - old)

    def relative(self) -> dict[int, float]:
        """The verify curve in single-step units (n=1 is 1.0)."""
        one = self.verify(1)
        return {n: round(s / one, 3) for n, s in sorted(self.verify_s.items())}


@dataclass
class Acceptance:
    """How often a guess at each position is kept, given that the guesses before it were.

    Each position's rate shrinks towards the rate pooled over all positions, which itself starts
    from a prior: positions rarely reached (the 40th guess of a long copy) borrow from the rest,
    and an unproven proposer gets tried. Counts decay with each observation so that the estimate
    follows what is happening now.
    """

    prior_rate: float = 0.5
    prior_weight: float = 2.0
    position_weight: float = 4.0
    decay: float = 0.98
    kept: np.ndarray = field(default_factory=lambda: np.zeros(MAX_DRAFT))
    tried: np.ndarray = field(default_factory=lambda: np.zeros(MAX_DRAFT))

    def pooled(self) -> float:
        """The keep rate over all positions, with the prior."""
        return float(
            (self.kept.sum() + self.prior_rate * self.prior_weight) / (self.tried.sum() + self.prior_weight)
        )

    def rates(self, k: int) -> np.ndarray:
        """Conditional keep rates for positions 0..k-1."""
        w = self.position_weight
        return (self.kept[:k] + w * self.pooled()) / (self.tried[:k] + w)

    def expected_tokens(self, k: int) -> np.ndarray:
        """Expected tokens a step yields when drafting j = 0..k tokens (the target's own included)."""
        return np.concatenate(([1.0], 1.0 + np.cumsum(np.cumprod(self.rates(k)))))

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        """Record one verification."""
        self.kept *= self.decay
        self.tried *= self.decay
        self.kept[:n_accepted] += 1
        self.tried[: min(n_accepted + 1, n_drafted)] += 1


# Lookup acceptance depends most on how much context matched: keep one estimate per band.
LOOKUP_BANDS = (1, 2, 3, 5, 9, 17, 33)


def lookup_band(match_len: int) -> int:
    """Index of the match-length band (1, 2, 3-4, 5-8, 9-16, 17-32, 33+)."""
    return bisect.bisect_right(LOOKUP_BANDS, match_len) - 1


@dataclass(frozen=True)
class Choice:
    """An option the planner weighed."""

    source: str
    k: int
    tokens_per_second: float


class FixedPlanner:
    """Always the same proposer and the same maximum length: the ``none``/``draft``/``lookup`` strategies."""

    def __init__(self, proposer: DraftModel | PromptLookup | None, k: int) -> None:
        self.proposer = proposer
        self.k = k

    def begin(self) -> None:
        """Nothing to prepare."""

    def propose(
        self, history: Sequence[int], max_k: int, params: SamplingParams, rng: np.random.Generator
    ) -> Proposal:
        """The proposer's guess, capped at ``k``."""
        k = min(self.k, max_k)
        if self.proposer is None or k <= 0:
            return NO_PROPOSAL
        return self.proposer.propose(history, k, params, rng)

    def observe(self, proposal: Proposal, n_accepted: int, propose_s: float, verify_s: float) -> None:
        """Fixed plans learn nothing."""


class AutoPlanner:
    """Each step, the option with the highest expected tokens per second, measured costs times
    learned acceptance: no guess, a lookup copy of any length it supports, or the draft model."""

    def __init__(
        self,
        costs: CostModel,
        lookup: PromptLookup | None,
        draft: DraftModel | None,
        max_draft: int = 16,
    ) -> None:
        self.costs = costs
        self.lookup = lookup
        self.draft = draft if costs.draft_s is not None else None
        self.max_draft = max_draft
        # Optimistic priors: an option the curve says could pay gets tried, then judged on what it does.
        self.lookup_acceptance = [Acceptance(prior_rate=0.8) for _ in LOOKUP_BANDS]
        self.draft_acceptance = Acceptance(prior_rate=0.7)
        self._first_step = True

    def begin(self) -> None:
        """A new generation: its first token comes from the target alone, so that time to first
        token is the target's."""
        self._first_step = True

    def _best(self, acceptance: Acceptance, k_max: int, per_token_s: float) -> tuple[int, float]:
        # Expected tokens over expected seconds, for every length 0..k_max; the best length.
        if k_max <= 0:
            return 0, 1.0 / self.costs.verify(1)
        tokens = acceptance.expected_tokens(k_max)
        seconds = np.array([self.costs.verify(j + 1) + j * per_token_s for j in range(k_max + 1)])
        rate = tokens / seconds
        j = int(np.argmax(rate))
        return j, float(rate[j])

    def propose(
        self, history: Sequence[int], max_k: int, params: SamplingParams, rng: np.random.Generator
    ) -> Proposal:
        """Weigh the options and return the best one's proposal."""
        if self._first_step:
            self._first_step = False
            return NO_PROPOSAL
        best = Choice("none", 0, 1.0 / self.costs.verify(1))
        candidate = NO_PROPOSAL
        if self.lookup is not None and max_k > 0:
            candidate = self.lookup.propose(history, min(max_k, MAX_DRAFT - 1), params, rng)
            if candidate.tokens:
                band = self.lookup_acceptance[lookup_band(candidate.match_len)]
                k, rate = self._best(band, len(candidate.tokens), 0.0)
                if k > 0 and rate > best.tokens_per_second:
                    best = Choice("lookup", k, rate)
        if self.draft is not None and self.costs.draft_s is not None and max_k > 0:
            k, rate = self._best(self.draft_acceptance, min(max_k, self.max_draft), self.costs.draft_s)
            if k > 0 and rate > best.tokens_per_second:
                best = Choice("draft", k, rate)
        if best.source == "lookup":
            return Proposal(candidate.tokens[: best.k], "lookup", match_len=candidate.match_len)
        if best.source == "draft" and self.draft is not None:
            return self.draft.propose(history, best.k, params, rng)
        return NO_PROPOSAL

    def observe(self, proposal: Proposal, n_accepted: int, propose_s: float, verify_s: float) -> None:
        """Learn acceptance and costs from the step just verified."""
        self.costs.observe(len(proposal.tokens) + 1, verify_s)
        if proposal.source == "lookup":
            band = self.lookup_acceptance[lookup_band(proposal.match_len)]
            band.observe(len(proposal.tokens), n_accepted)
        elif proposal.source == "draft":
            self.draft_acceptance.observe(len(proposal.tokens), n_accepted)
