"""Which proposer, and how many tokens, each step: the device's costs times what is accepted now.

On a compute-bound CPU the target verifies n tokens for nearly n single steps, so a guess only
pays when it is cheap and likely kept; on a GPU verification is nearly flat in n and a draft model
pays. :class:`CostModel` holds the measured costs of this device; :class:`Calibration` learns online
how often a guess is kept given what its proposer knew (the draft's confidence, a copy's match
length); :class:`AutoPlanner` picks, each step, the option that adds tokens fastest against the
rate generation already reaches (drafting nothing when nothing pays), and decides each drafted
guess as it comes (:class:`DraftPlan`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgespec.proposers import NO_PROPOSAL, DraftModel, PromptLookup, Proposal
from edgespec.sampling import GREEDY, SamplingParams

MAX_DRAFT = 64
RATE_WEIGHT = 0.05  # how fast the planner's rate follows each step (about the last 20 steps)
EXPLORE_SHARE = 0.01  # of the time spent, what trying options the estimates rule out may add
EXPLORE_K = 2  # guesses such a try makes
NEW_TEXT_FADE = 0.25  # what a new generation keeps of the evidence on copies (other text, other copies)
AMORTIZE_TOKENS = 32  # tokens over which the draft's catching up on a long stretch is charged


@dataclass
class CostModel:
    """Seconds the target takes to verify n tokens in one batch, and the draft's cost per token."""

    verify_s: dict[int, float]
    """Measured seconds by batch size n (1 is a plain single-token step)."""
    draft_s: float | None = None
    """Seconds per drafted token, or None without a draft model."""
    draft_batch_s: dict[int, float] = field(default_factory=dict)
    """The draft's measured seconds by batch size (catching up after a copy); where missing, the
    draft is assumed to scale like the target."""
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

    def draft_batch(self, n: int) -> float:
        """Seconds the draft takes to decode ``n`` tokens in one batch."""
        assert self.draft_s is not None
        if len(self.draft_batch_s) > 1:
            return CostModel(self.draft_batch_s).verify(n)
        return self.draft_s * self.verify(n) / self.verify(1)

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
    what it learned. Only guesses the target judged count: those up to and including the first
    rejected one.
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

    def age(self, factor: float = 0.998) -> None:
        """Let all evidence fade a little (once a step): old beliefs give way to what happens now,
        even in bins not visited lately."""
        self.kept *= factor
        self.tried *= factor
        self.kept_all *= factor
        self.tried_all *= factor
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
    """An option the planner weighed: the proposer, how many guesses, and what it is worth."""

    source: str
    k: int
    value: float
    """Expected tokens minus the planner's rate times expected seconds."""


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

    Generation runs at ``rate`` tokens per second; a guess, and the guesses that may follow it, are
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


def _join(first: Proposal, then: Proposal) -> Proposal:
    """One proposal of ``first``'s guesses followed by ``then``'s; ``q`` row by row, None for copies."""
    if not then.tokens:
        return first
    if not first.tokens:
        return then
    q: list[np.ndarray | None] | None = None
    if first.q is not None or then.q is not None:
        q = [*(first.q or [None] * len(first.tokens)), *(then.q or [None] * len(then.tokens))]
    return Proposal(
        [*first.tokens, *then.tokens],
        f"{first.source}+{then.source}",
        q,
        [*first.confidence, *then.confidence],
        [*first.match, *then.match],
    )


class AutoPlanner:
    """Each step, the option worth most at the rate generation is reaching, measured costs times
    learned acceptance: no guess, a lookup copy of any length it supports, the draft model (its
    guesses decided one by one as they are drafted), or the two joined in one batch.

    An option's worth is its expected tokens minus ``rate`` times its expected seconds, where
    ``rate`` is the tokens per second generation has reached lately. Maximising that each step is
    Dinkelbach's method for the best long-run tokens per second: a guess is taken when it adds
    tokens faster than generation runs anyway, and the rate it reaches is fed back.
    """

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
        # Recent tokens and seconds per step (moving averages); they start at the target alone.
        self._tokens = 1.0
        self._seconds = costs.verify(1)
        self._rate = self.rate
        """The rate this step is weighed at."""
        self._explore_budget = 0.0
        self._first_step = True

    @property
    def rate(self) -> float:
        """Tokens per second reached lately."""
        return self._tokens / self._seconds

    @rate.setter
    def rate(self, value: float) -> None:
        self._tokens = value * self._seconds

    def begin(self) -> None:
        """A new generation: its first token comes from the target alone, so that time to first
        token is the target's. How copies fared in the last text says little about this one."""
        self._first_step = True
        self.copies.age(NEW_TEXT_FADE)

    def _pooled(self) -> float:
        # Optimistic: a draft not yet proven gets tried where the curve says it could pay.
        return self.confidence.pooled(0.7)

    def _best(self, source: str, tokens: np.ndarray, seconds: np.ndarray) -> Option:
        value = tokens - self._rate * seconds
        j = int(np.argmax(value))
        return Option(source, j, float(value[j]))

    def _catch_up_s(self, lag: int) -> float:
        # The draft decodes what it missed in one batch. After a step it drafted, that is two tokens
        # (its last guess and the target's own); after copies or steps without it, more; at the
        # start of a generation, the whole prompt. Beyond a step's usual two, the catching up serves
        # every later step that drafts, so it is charged spread over AMORTIZE_TOKENS tokens.
        usual = self.costs.draft_batch(min(lag, 2))
        return usual + (self.costs.draft_batch(lag) - usual) / AMORTIZE_TOKENS if lag > 2 else usual

    def _draft_seconds(self, history: Sequence[int], k: int) -> np.ndarray:
        # Drafting j = 0..k guesses: the first comes with catching up, each further one is a draft step.
        assert self.draft is not None and self.costs.draft_s is not None
        seconds = self._catch_up_s(self.draft.lag(history)) + self.costs.draft_s * np.arange(-1, k)
        seconds[0] = 0.0
        return seconds

    def propose(
        self, history: Sequence[int], max_k: int, params: SamplingParams, rng: np.random.Generator
    ) -> Proposal:
        """Weigh the options and return the best one's proposal."""
        if self._first_step or max_k <= 0:
            self._first_step = False
            return NO_PROPOSAL
        curve = self.costs.curve(max_k)
        candidates = [("none", np.ones(1), curve[:1])]  # (source, expected tokens, seconds) by length
        copy = NO_PROPOSAL
        if self.lookup is not None:
            copy = self.lookup.propose(history, max_k, params, rng)
            if copy.tokens:
                tokens = expected_tokens(self.copies.rates(copy.match))
                candidates.append(("lookup", tokens, curve[: tokens.size]))
        draft_k = min(max_k, self.max_draft)
        if self.draft is not None and draft_k > 0:
            tokens = expected_tokens(np.full(draft_k, self._pooled()))
            candidates.append(("draft", tokens, curve[: draft_k + 1] + self._draft_seconds(history, draft_k)))
        # The rate weighed against is what generation reaches, but never more than the best option
        # here promises: a rate no option can reach would make every guess look like a loss.
        # Nor less than the target alone reaches, which drafting nothing always does.
        best_rate = max(float(np.max(t / c)) for _, t, c in candidates)
        self._rate = min(max(self.rate, 1.0 / float(curve[0])), best_rate)
        options = [self._best(*candidate) for candidate in candidates]
        best = max(options, key=lambda o: o.value if o.k or o.source == "none" else -np.inf)
        explored = self._explore(history, best, copy, curve, min(draft_k, EXPLORE_K), params, rng)
        if explored is not None:
            return explored
        if best.source == "lookup":
            copied = Proposal(
                copy.tokens[: best.k],
                "lookup",
                confidence=copy.confidence[: best.k],
                match=copy.match[: best.k],
            )
            return self._continue_with_draft(history, copied, curve, max_k, params, rng)
        if best.source == "draft" and self.draft is not None and self.costs.draft_s is not None:
            plan = DraftPlan(curve, self.costs.draft_s, self._rate, self.confidence, self._pooled())
            drafted = self.draft.propose(history, draft_k, params, rng, plan)
            return self._extend_by_copy(history, drafted, plan.survival, curve, max_k, rng)
        return NO_PROPOSAL

    def _explore(
        self,
        history: Sequence[int],
        best: Option,
        copy: Proposal,
        curve: np.ndarray,
        k: int,
        params: SamplingParams,
        rng: np.random.Generator,
    ) -> Proposal | None:
        # An option the estimates rule out is still tried now and then, or auto would never learn
        # that a draft it had written off is kept after all. What a try is expected to lose
        # against the best option, in seconds at the step's rate and with the draft's catching up
        # charged in full, is paid from a budget of EXPLORE_SHARE of the time spent; the option
        # with the least recent evidence goes first.
        self._explore_budget += EXPLORE_SHARE * float(curve[best.k])
        if k <= 0:
            return None
        choices: list[tuple[float, float, str]] = []  # (evidence, expected loss in seconds, source)
        if self.draft is not None and self.costs.draft_s is not None and best.source != "draft":
            catch_up = self.costs.draft_batch(self.draft.lag(history))
            seconds = float(curve[k]) + catch_up + self.costs.draft_s * (k - 1)
            tokens = expected_tokens(np.full(k, self._pooled()))[k]
            choices.append((self.confidence.tried_all, best.value - tokens + self._rate * seconds, "draft"))
        if copy.tokens and best.source != "lookup":
            k = min(k, len(copy.tokens))
            tokens = expected_tokens(self.copies.rates(copy.match[:k]))[k]
            loss = best.value - tokens + self._rate * float(curve[k])
            choices.append((self.copies.tried_all, loss, "lookup"))
        if not choices:
            return None
        _, loss, source = min(choices)
        loss_s = max(loss, 0.0) / self._rate
        if loss_s > self._explore_budget:
            return None
        self._explore_budget -= loss_s
        if source == "lookup":
            return Proposal(copy.tokens[:k], "lookup", None, copy.confidence[:k], copy.match[:k])
        assert self.draft is not None
        return self.draft.propose(history, k, params, rng, lambda i, top: k)

    def _continue_with_draft(
        self,
        history: Sequence[int],
        copied: Proposal,
        curve: np.ndarray,
        max_k: int,
        params: SamplingParams,
        rng: np.random.Generator,
    ) -> Proposal:
        # Where a copy runs out or turns doubtful (a guess less likely kept than a drafted one), the
        # draft model may go on in the same batch: it first decodes what it missed and the copied
        # guesses, then drafts under a DraftPlan.
        if self.draft is None or self.costs.draft_s is None:
            return copied
        pooled = self._pooled()
        rates = self.copies.rates(copied.match)
        j = next((i for i, r in enumerate(rates) if r < pooled), len(rates))
        room = min(max_k - j, self.max_draft)
        if room <= 0:
            return copied
        survival = float(np.prod(rates[:j]))
        more = np.arange(1, room + 1)
        gain = survival * np.cumsum(pooled**more)
        cost = (
            curve[j + 1 : j + 1 + room]
            - curve[j]
            + self._catch_up_s(self.draft.lag(history) + j)
            + self.costs.draft_s * (more - 1)
        )
        if np.max(gain - self._rate * cost) <= 0:
            return copied
        kept = Proposal(copied.tokens[:j], "lookup", None, copied.confidence[:j], copied.match[:j])
        plan = DraftPlan(
            curve, self.costs.draft_s, self._rate, self.confidence, pooled, rows=j, survival=survival
        )
        drafted = self.draft.propose([*history, *kept.tokens], room, params, rng, plan)
        return _join(kept, drafted) if drafted.tokens else copied

    def _extend_by_copy(
        self,
        history: Sequence[int],
        drafted: Proposal,
        survival: float,
        curve: np.ndarray,
        max_k: int,
        rng: np.random.Generator,
    ) -> Proposal:
        # Where the drafted text matches an earlier span, copying on from there costs no drafting.
        n = len(drafted.tokens)
        if self.lookup is None or n == 0 or n >= max_k:
            return drafted
        copy = self.lookup.propose(history, max_k - n, GREEDY, rng, extra=drafted.tokens)
        if not copy.tokens:
            return drafted
        gain = survival * np.cumsum(np.cumprod(self.copies.rates(copy.match)))
        value = gain - self._rate * (curve[n + 1 : n + 1 + len(copy.tokens)] - curve[n])
        j = int(np.argmax(value))
        if value[j] <= 0:
            return drafted
        tail = Proposal(copy.tokens[: j + 1], "lookup", None, copy.confidence[: j + 1], copy.match[: j + 1])
        return _join(drafted, tail)

    def observe(self, proposal: Proposal, n_accepted: int, propose_s: float, verify_s: float) -> None:
        """Learn acceptance and costs from the step just verified."""
        n = len(proposal.tokens)
        self.costs.observe(n + 1, verify_s)
        self._tokens += RATE_WEIGHT * (n_accepted + 1 - self._tokens)
        self._seconds += RATE_WEIGHT * (propose_s + verify_s - self._seconds)
        self.confidence.age()
        self.copies.age()
        judged = range(min(n_accepted + 1, n))
        drafted = [i for i in judged if not proposal.match[i]]
        copied = [i for i in judged if proposal.match[i]]
        if drafted:
            self.confidence.observe(
                [proposal.confidence[i] for i in drafted], [i < n_accepted for i in drafted]
            )
        if copied:
            self.copies.observe([proposal.match[i] for i in copied], [i < n_accepted for i in copied])
