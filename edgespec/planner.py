"""Which proposer, and how many tokens, each step: the device's costs times what is accepted now.

On a compute-bound CPU the target verifies n tokens for nearly n single steps, so a guess only
pays when it is cheap and likely kept; on a GPU verification is nearly flat in n and a draft model
pays. The device's costs come from :mod:`edgespec.costs`, how often a guess is kept from
:mod:`edgespec.calibration`; :class:`AutoPlanner` picks, each step, the option that adds tokens
fastest against the rate generation already reaches (drafting nothing when nothing pays), and
decides each drafted guess as it comes (:class:`DraftPlan`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgespec.calibration import Calibration, confidence_calibration, copy_calibration, expected_tokens
from edgespec.costs import CostModel
from edgespec.proposers import NO_PROPOSAL, DraftModel, PromptLookup, Proposal
from edgespec.sampling import GREEDY, SamplingParams

RATE_WEIGHT = 0.05  # how fast the planner's rate follows each step (about the last 20 steps)
EXPLORE_SHARE = 0.01  # of the time spent, what trying options the estimates rule out may add
EXPLORE_K = 2  # guesses such a try makes
NEW_TEXT_FADE = 0.25  # what a new generation keeps of the evidence on copies (other text, other copies)
AMORTIZE_TOKENS = 32  # tokens over which the draft's catching up on a long stretch is charged


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
