"""How often a guess is kept, learned online from verifications: by the draft's confidence, or by
the length of the match a copy continues.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


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
