"""What speculation can gain on this device, from its measured costs: the best speed-up a copy can
reach (lookup), a draft model's at a typical and at a perfect acceptance, and the target's own MTP
layers' at a typical acceptance.

One formula, the planner's: a step of k guesses yields ``expected_tokens(rates)[k]`` tokens (see
:mod:`edgespec.calibration`) in ``curve[k]`` seconds of verification (see :mod:`edgespec.costs`)
plus the seconds spent drafting them; its speed-up is its tokens per second over the target's alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgespec.calibration import expected_tokens
from edgespec.costs import CostModel
from edgespec.options import DRAFT_LIMIT
from edgespec.plans import catch_up_s

PAYS = 1.05
"""A gain below 5 % is within the timing noise: it does not count as paying."""
TYPICAL_ACCEPTANCE = 0.8
"""Per-token acceptance of a well-matched draft on code (docs/design.md: 89-99 % measured)."""


@dataclass(frozen=True)
class Speedup:
    """The best speed-up over the target alone, and the guesses a step that reaches it makes."""

    speedup: float
    k: int
    """Guesses a step; 0 when no length beats the target alone."""

    @property
    def pays(self) -> bool:
        """Whether the gain is beyond the timing noise (:data:`PAYS`)."""
        return self.speedup > PAYS


@dataclass(frozen=True)
class Forecast:
    """What each proposer can reach on this device; the draft's parts are None without a draft."""

    lookup: Speedup
    """A copy whose every guess is kept: the ceiling of lookup on copy-heavy text."""
    draft_typical: Speedup | None
    """The draft model at :attr:`acceptance`."""
    draft_perfect: Speedup | None
    """The draft model if every guess were kept."""
    acceptance: float = TYPICAL_ACCEPTANCE
    mtp_typical: Speedup | None = None
    """The target's own MTP layers at :attr:`acceptance`; None without them."""


def speedups(costs: CostModel, rates: np.ndarray, drafting_s: np.ndarray) -> np.ndarray:
    """Speed-up over the target alone of a step of k = 0..len(rates) guesses, each kept at its
    conditional rate, taking ``drafting_s[k]`` seconds to propose."""
    curve = costs.curve(len(rates))
    # Verifying k + 1 tokens never really costs less than one step: below that is timing noise.
    seconds = np.maximum(curve, curve[0]) + drafting_s
    result: np.ndarray = expected_tokens(rates) * curve[0] / seconds
    return result


def drafting_s(costs: CostModel, rates: np.ndarray, drafter: str = "draft") -> np.ndarray:
    """Seconds the draft model (or another ``drafter``: ``mtp``) takes to propose k = 0..len(rates)
    guesses, step after step.

    As the planner charges it: the first guess comes with catching up (its last guess and the
    target's token when every guess was kept, the target's correction otherwise), each further
    one is a draft step."""
    cost = costs.drafting(drafter)
    assert cost is not None
    all_kept = np.cumprod(rates)  # the previous step's k guesses were all kept
    batch, rewind = cost.batch_s, cost.rewind_s
    catch_up = all_kept * catch_up_s(batch, 2, rewind) + (1 - all_kept) * catch_up_s(batch, 1, rewind)
    return np.concatenate(([0.0], catch_up + cost.step_s * np.arange(len(rates))))


def _best(speed: np.ndarray) -> Speedup:
    # The first of equals (within float rounding): k = 0, the target alone, unless a length beats it.
    k = int(np.argmax(np.round(speed, 9)))
    return Speedup(float(speed[k]), k)


def lookup_ceiling(costs: CostModel, k_max: int = DRAFT_LIMIT) -> Speedup:
    """The best speed-up of free guesses (a copy) that are all kept."""
    return _best(speedups(costs, np.ones(k_max), np.zeros(k_max + 1)))


def draft_speedup(
    costs: CostModel, acceptance: float, k_max: int = DRAFT_LIMIT, drafter: str = "draft"
) -> Speedup:
    """The best speed-up of the draft model (or another ``drafter``) guessing k tokens a step, each
    kept at ``acceptance``."""
    rates = np.full(k_max, acceptance)
    return _best(speedups(costs, rates, drafting_s(costs, rates, drafter)))


def forecast(costs: CostModel) -> Forecast:
    """What lookup, the draft model and the target's MTP layers (those ``costs`` has) can reach on
    this device."""
    mtp = draft_speedup(costs, TYPICAL_ACCEPTANCE, drafter="mtp") if costs.drafting("mtp") else None
    if costs.draft_s is None:
        return Forecast(lookup_ceiling(costs), None, None, mtp_typical=mtp)
    return Forecast(
        lookup_ceiling(costs),
        draft_speedup(costs, TYPICAL_ACCEPTANCE),
        draft_speedup(costs, 1.0),
        mtp_typical=mtp,
    )
