"""Which proposer, and how many tokens, each step: the device's costs times what is accepted now.

On a compute-bound CPU the target verifies n tokens for nearly n single steps, so a guess only
pays when it is cheap and likely kept; on a GPU verification is nearly flat in n and a draft model
pays. :class:`CostModel` holds the measured costs of this device; :class:`Calibration` learns online
how often a guess is kept given what its proposer knew (the draft's confidence, a copy's match
length); :class:`AutoPlanner` picks, each step, the option with the highest expected tokens per
second, drafting nothing when nothing pays, and decides each drafted guess as it comes.
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
    _curve: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

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

    def curve(self, k: int) -> np.ndarray:
        """Seconds to verify j guesses (j + 1 tokens) for j = 0..k."""
        if self._curve is None or self._curve.size <= k:
            self._curve = np.array([self.verify(n) for n in range(1, max(k, MAX_DRAFT) + 2)])
        return self._curve[: k + 1]

    def observe(self, n: int, seconds: float, weight: float = 0.1) -> None:
        """Fold a timing seen during generation into the curve (an exponential moving average), so
        that the model follows the device as it is now: thermal limits, other programs, a longer
        context than the one measured. Only measured batch sizes are updated; the rest follow by
        interpolation."""
        old = self.verify_s.get(n)
        if old is not None:
            self.verify_s[n] = old + weight * (seconds - old)
            self._curve = None

    def relative(self) -> dict[int, float]:
        """The verify curve in single-step units (n=1 is 1.0)."""
        one = self.verify(1)
        return {n: round(s / one, 3) for n, s in sorted(self.verify_s.items())}


@dataclass
class Calibration:
    """How often a guess is kept, given a score its proposer knew when it guessed: the draft's
    top probability, or the length of the match a copy continues.

    Scores fall into bins; each bin's counts start from a prior and decay with every guess the bin
    records, so that the estimate follows the text being written now, and a bin seldom used keeps
    what it learned. Only guesses the target judged count:
    those up to and including the first rejected one.
    """

    edges: list[float]
    """Lower edge of each bin."""
    prior: np.ndarray
    """Keep rate of each bin before any evidence."""
    prior_weight: float = 4.0
    decay: float = 0.98
    rising: bool = False
    """Whether a bin borrows at least the rate of the bin below it (a higher score is never taken
    for worse without evidence of its own)."""
    kept: np.ndarray = field(init=False)
    tried: np.ndarray = field(init=False)
    kept_all: float = field(default=0.0, init=False)
    tried_all: float = field(default=0.0, init=False)
    _rates: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.kept = np.zeros(len(self.edges))
        self.tried = np.zeros(len(self.edges))

    def _bin(self, score: float) -> int:
        return max(bisect.bisect_right(self.edges, score) - 1, 0)

    def table(self) -> np.ndarray:
        """The keep rate of each bin: its counts, shrunk towards its prior."""
        if self._rates is None:
            w = self.prior_weight
            if not self.rising:
                self._rates = (self.kept + w * self.prior) / (self.tried + w)
            else:
                rates, below = np.empty(len(self.edges)), 0.0
                for b in range(len(self.edges)):
                    below = rates[b] = (self.kept[b] + w * max(self.prior[b], below)) / (self.tried[b] + w)
                self._rates = rates
        return self._rates

    def rate(self, score: float) -> float:
        """Probability that a guess with this score is kept."""
        return float(self.table()[self._bin(score)])

    def rates(self, scores: Sequence[float]) -> np.ndarray:
        """:meth:`rate` of each score."""
        return self.table()[np.maximum(np.searchsorted(self.edges, scores, side="right") - 1, 0)]

    def pooled(self, prior_rate: float) -> float:
        """The keep rate of recent guesses, whatever their score (what a guess not yet made is worth)."""
        return (self.kept_all + self.prior_weight * prior_rate) / (self.tried_all + self.prior_weight)

    def observe(self, scores: Sequence[float], kept: Sequence[bool]) -> None:
        """Record judged guesses: their scores and whether each was kept."""
        for score, k in zip(scores, kept, strict=True):
            b = self._bin(score)
            self.tried[b] = self.tried[b] * self.decay + 1
            self.kept[b] = self.kept[b] * self.decay + k
            self.tried_all = self.tried_all * self.decay + 1
            self.kept_all = self.kept_all * self.decay + k
        self._rates = None


# The draft's top probability, binned finely where most guesses fall; a bin's prior is its centre:
# a confidence is taken at its word until verifications say otherwise.
_CONFIDENCE_EDGES = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.96, 0.98, 0.99, 0.995]


def confidence_calibration() -> Calibration:
    """Keep rates by the draft's top probability."""
    upper = [*_CONFIDENCE_EDGES[1:], 1.0]
    centres = (np.array(_CONFIDENCE_EDGES) + np.array(upper)) / 2
    return Calibration(_CONFIDENCE_EDGES, centres)


# A copy's match length grows by one with every copied token kept: long matches are copies in
# progress, which tend to go on; short ones are where copies start and where edits break them.
_MATCH_EDGES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192]


def copy_calibration() -> Calibration:
    """Keep rates of copied guesses by the match length they continue (optimistic priors, from
    0.55 for one matched token to 0.96 past 128; a longer match borrows the rate of shorter ones)."""
    prior = 1.0 - 0.45 * np.sqrt(2.0 / (np.array(_MATCH_EDGES, dtype=float) + 1.0))
    return Calibration([float(e) for e in _MATCH_EDGES], prior, rising=True)


def expected_tokens(rates: np.ndarray) -> np.ndarray:
    """Expected tokens a step yields with j = 0..len(rates) guesses kept at these conditional
    rates (the target's own token included)."""
    return np.concatenate(([1.0], 1.0 + np.cumsum(np.cumprod(rates))))


@dataclass(frozen=True)
class Option:
    """An option the planner weighed: the proposer, how many guesses, and its expected rate."""

    source: str
    k: int
    tokens_per_second: float
    seconds: float


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


class DraftPlan:
    """Decides each drafted guess as it comes (a :data:`~edgespec.proposers.Plan`).

    The step aims at ``rate`` tokens per second; a guess, and the guesses that may follow it, are
    worth their expected tokens minus ``rate`` times the seconds they add (verifying a longer batch,
    drafting on). Seconds already spent drafting are sunk. The guess's own keep probability comes
    from its confidence through the calibration; guesses not yet drafted are valued at the pooled
    rate. So drafting goes on while the draft is sure and the curve is flat, and stops where the
    marginal rate falls below the step's.
    """

    def __init__(
        self,
        curve: np.ndarray,
        draft_s: float,
        rate: float,
        calibration: Calibration,
        pooled: float,
        rows: int = 0,
        survival: float = 1.0,
    ) -> None:
        self.curve = curve
        self.draft_s = draft_s
        self.rate = rate
        self.calibration = calibration
        self.rows = rows
        """Guesses in the proposal before the draft's first (a copy the draft continues)."""
        self.survival = survival
        """Probability that every guess so far is kept."""
        n = curve.size
        # future[m]: expected guesses kept among this one and m more, per unit of survival after it.
        self.future = np.cumsum(pooled ** np.arange(n))
        self.drafting = draft_s * np.arange(n)

    def __call__(self, i: int, top: float) -> int:
        r = self.rows + i
        more = self.curve.size - r - 1  # room for this guess and up to `more - 1` after it
        if more <= 0:
            return i
        keep = self.survival * self.calibration.rate(top)
        gain = keep * self.future[:more]
        cost = self.curve[r + 1 : r + 1 + more] + self.drafting[:more]
        value = gain - self.rate * cost
        m = int(np.argmax(value))
        if value[m] <= -self.rate * self.curve[r]:
            return i
        self.survival = keep
        return i + 1 + m


class AutoPlanner:
    """Each step, the option with the highest expected tokens per second, measured costs times
    learned acceptance: no guess, a lookup copy of any length it supports, or the draft model,
    whose guesses are decided one by one as they are drafted."""

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
        self.confidence = confidence_calibration()
        self.copies = copy_calibration()
        self._first_step = True

    def begin(self) -> None:
        """A new generation: its first token comes from the target alone, so that time to first
        token is the target's."""
        self._first_step = True

    def _pooled(self) -> float:
        # Optimistic: a draft not yet proven gets tried where the curve says it could pay.
        return self.confidence.pooled(0.7)

    def _catch_up_s(self, n: int) -> float:
        # The draft decodes what it missed as one batch: its cost scaled like the target's curve.
        assert self.costs.draft_s is not None
        curve = self.costs.curve(MAX_DRAFT)
        return self.costs.draft_s * float(curve[min(n, MAX_DRAFT) - 1] / curve[0]) * max(1.0, n / MAX_DRAFT)

    def _copy_option(self, copy: Proposal, curve: np.ndarray) -> Option:
        tokens = expected_tokens(self.copies.rates(copy.match))
        seconds = curve[: tokens.size]
        j = int(np.argmax(tokens / seconds))
        return Option("lookup", j, float(tokens[j] / seconds[j]), float(seconds[j]))

    def _draft_option(self, history: Sequence[int], k: int, curve: np.ndarray) -> Option:
        assert self.draft is not None and self.costs.draft_s is not None
        tokens = expected_tokens(np.full(k, self._pooled()))
        drafting = self._catch_up_s(self.draft.lag(history)) + self.costs.draft_s * np.arange(-1, k)
        drafting[0] = 0.0
        seconds = curve[: k + 1] + drafting
        j = int(np.argmax(tokens / seconds))
        return Option("draft", j, float(tokens[j] / seconds[j]), float(seconds[j]))

    def propose(
        self, history: Sequence[int], max_k: int, params: SamplingParams, rng: np.random.Generator
    ) -> Proposal:
        """Weigh the options and return the best one's proposal."""
        if self._first_step or max_k <= 0:
            self._first_step = False
            return NO_PROPOSAL
        curve = self.costs.curve(max_k)
        options = [Option("none", 0, 1.0 / curve[0], float(curve[0]))]
        copy = NO_PROPOSAL
        if self.lookup is not None:
            copy = self.lookup.propose(history, max_k, params, rng)
            if copy.tokens:
                options.append(self._copy_option(copy, curve))
        draft_k = min(max_k, self.max_draft)
        if self.draft is not None and draft_k > 0:
            options.append(self._draft_option(history, draft_k, curve))
        best = max(options, key=lambda o: o.tokens_per_second if o.k or o.source == "none" else 0.0)
        if best.source == "lookup":
            return Proposal(
                copy.tokens[: best.k],
                "lookup",
                confidence=copy.confidence[: best.k],
                match=copy.match[: best.k],
            )
        if best.source == "draft" and self.draft is not None and self.costs.draft_s is not None:
            plan = DraftPlan(
                curve, self.costs.draft_s, best.tokens_per_second, self.confidence, self._pooled()
            )
            return self.draft.propose(history, draft_k, params, rng, plan)
        return NO_PROPOSAL

    def observe(self, proposal: Proposal, n_accepted: int, propose_s: float, verify_s: float) -> None:
        """Learn acceptance and costs from the step just verified."""
        n = len(proposal.tokens)
        self.costs.observe(n + 1, verify_s)
        judged = range(min(n_accepted + 1, n))
        drafted = [i for i in judged if not proposal.match[i]]
        copied = [i for i in judged if proposal.match[i]]
        if drafted:
            self.confidence.observe(
                [proposal.confidence[i] for i in drafted], [i < n_accepted for i in drafted]
            )
        if copied:
            self.copies.observe([proposal.match[i] for i in copied], [i < n_accepted for i in copied])
