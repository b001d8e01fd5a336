"""What one step's guesses are worth: the step's terms (:class:`Weighing`), each drafter's costs and
keep rates (:class:`Drafter`), and the plan that decides each drafted guess as it comes
(:class:`DraftPlan`).

A step of guesses is worth its expected tokens minus ``rate`` times its expected seconds, where
``rate`` is the tokens per second generation reaches lately (Dinkelbach's method for the best
long-run rate): a guess is taken when it adds tokens faster than generation runs anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgespec.calibration import Calibration, confidence_calibration
from edgespec.proposers import DraftProposer, Proposal
from edgespec.sampling import SamplingParams

AMORTIZE_TOKENS = 32  # tokens over which the draft's catching up on a long stretch is charged


@dataclass(frozen=True)
class Weighing:
    """The terms of one step: what verifying costs, the rate to beat, and what a drafted guess is
    worth before it is drafted."""

    curve: np.ndarray
    """Seconds to verify j guesses, j = 0..max_k."""
    rate: float
    """Tokens per second the step's options are weighed against."""
    max_k: int
    params: SamplingParams
    rng: np.random.Generator


@dataclass(frozen=True)
class Option:
    """An option the planner weighed: the proposer, how many guesses, and what it is worth."""

    source: str
    k: int
    value: float
    """Expected tokens minus the step's rate times expected seconds."""

    @classmethod
    def best(cls, source: str, tokens: np.ndarray, seconds: np.ndarray, rate: float) -> Option:
        """``source``'s option of the length worth most at ``rate``, from the expected tokens and
        seconds of each length."""
        value = tokens - rate * seconds
        j = int(np.argmax(value))
        return cls(source, j, float(value[j]))


def catch_up_s(batch_s: Callable[[int], float], lag: int, rewind_s: float = 0.0) -> float:
    """Seconds charged to a step for a drafter decoding the ``lag`` tokens it has not seen, where
    ``batch_s(n)`` is what a batch of ``n`` costs it.

    After a step it drafted, that is two tokens (its last guess and the target's own); after copies
    or steps without it, more; at the start of a generation, the whole prompt. Beyond a step's
    usual two, the catching up serves every later step that drafts, so it is charged spread over
    :data:`AMORTIZE_TOKENS` tokens. A recurrent draft also saves its state, and restores it after
    (``rewind_s``)."""
    usual = batch_s(min(lag, 2))
    extra = (batch_s(lag) - usual) / AMORTIZE_TOKENS if lag > 2 else 0.0
    return usual + extra + rewind_s


@dataclass
class Drafter:
    """A proposer that drafts token by token (the draft model, the target's MTP layers), what it
    costs on this device, and how often its guesses are kept: the planner weighs every drafter by
    the same rule, each on its own figures."""

    proposer: DraftProposer
    step_s: float
    """Seconds per drafted guess after the first."""
    batch_s: Callable[[int], float]
    """Seconds to decode a batch of n tokens (catching up, and the first guess with it)."""
    rewind_s: float = 0.0
    """Seconds a step spends saving its state before drafting and restoring it after (recurrent)."""
    confidence: Calibration = field(default_factory=confidence_calibration)
    """Keep rates by the drafter's top probability, learned from its verified guesses."""

    @property
    def name(self) -> str:
        """The proposer's name (a proposal's ``source``)."""
        return self.proposer.name

    def pooled(self) -> float:
        """Keep rate of a guess not yet drafted; optimistic before evidence, so that a drafter not
        yet proven is tried where the curve says it could pay."""
        return self.confidence.pooled(0.7)

    def seconds(self, history: Sequence[int], k: int, extra: int = 0) -> np.ndarray:
        """Seconds to draft j = 0..k guesses after ``history`` and ``extra`` tokens it must also
        read: the first guess comes with catching up, each further one is a step."""
        lag = self.proposer.lag(history) + extra
        seconds = catch_up_s(self.batch_s, lag, self.rewind_s) + self.step_s * np.arange(-1, k)
        seconds[0] = 0.0
        return seconds

    def plan(self, curve: np.ndarray, rate: float, rows: int = 0, survival: float = 1.0) -> DraftPlan:
        """The plan that decides each of this drafter's guesses as it comes."""
        return DraftPlan(curve, self.step_s, rate, self.confidence, self.pooled(), rows, survival)


class DraftPlan:
    """Decides each drafted guess as it comes (a :data:`~edgespec.proposers.Plan`).

    A guess, and the guesses that may follow it, are worth their expected tokens minus ``rate``
    times the seconds they add (verifying a longer batch, drafting on). Seconds already spent
    drafting are sunk. The guess's own keep probability comes from its confidence through the
    calibration; guesses not yet drafted are valued at the pooled rate. So drafting goes on while
    the draft is sure and the curve is flat, and stops where the marginal rate falls below the
    step's.
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


def copied(proposal: Proposal, k: int) -> Proposal:
    """The first ``k`` guesses of a copy (a lookup proposal)."""
    return Proposal(proposal.tokens[:k], "lookup", None, proposal.confidence[:k], proposal.match[:k])


def join(first: Proposal, then: Proposal) -> Proposal:
    """One proposal of ``first``'s guesses followed by ``then``'s; ``q`` row by row, None for copies
    and forced tokens."""
    if not then.tokens:
        return first
    if not first.tokens:
        return then
    q: list[np.ndarray | None] | None = None
    if first.q is not None or then.q is not None:
        q = [*(first.q or [None] * len(first.tokens)), *(then.q or [None] * len(then.tokens))]
    forced: list[bool] = []
    if first.forced or then.forced:
        forced = [
            *(first.forced or [False] * len(first.tokens)),
            *(then.forced or [False] * len(then.tokens)),
        ]
    return Proposal(
        [*first.tokens, *then.tokens],
        f"{first.source}+{then.source}",
        q,
        [*first.confidence, *then.confidence],
        [*first.match, *then.match],
        forced,
    )
