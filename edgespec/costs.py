"""What this device takes to verify n tokens in one batch, and to draft one: measured, then kept
current from the timings seen during generation.

On a compute-bound CPU the target verifies n tokens for nearly n single steps; on a GPU (or with a
big target on a laptop, where single steps are memory-bound) verification is nearly flat in n.
A recurrent model's rewind is in the curve too: saving its state before a batch that may be cut
back where llama.cpp cannot (measured as part of the batch), and restoring it after a rejection.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from edgespec.options import DRAFT_LIMIT


class DraftCost(NamedTuple):
    """What one drafter costs on this device."""

    step_s: float
    """Seconds per drafted guess after the first."""
    batch_s: Callable[[int], float]
    """Seconds to decode a batch of n tokens: catching up, with the first guess."""
    rewind_s: float = 0.0
    """Seconds a step spends saving and restoring its recurrent state."""


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
    restore_s: float = 0.0
    """Seconds to restore the target's saved recurrent state after a rejected guess (0: a KV cache)."""
    native_depth: int | None = None
    """The most guesses the target's cache drops with no restore (None: any number, a KV cache)."""
    draft_rewind_s: float = 0.0
    """Seconds a recurrent draft spends saving its state before drafting and restoring it after."""
    mtp_batch_s: dict[int, float] = field(default_factory=dict)
    """The target's MTP layers: seconds to read n tokens and guess after the last, by n (1 is one
    drafting step); empty without them."""
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
        """Seconds to verify j guesses (j + 1 tokens) for j = 0..k.

        Beyond what the target drops natively, a rejection costs a restore: it is charged as if it
        always came (a few percent of a step where measured), which errs on the safe side."""
        if self._curve is None or self._curve.size <= k:
            n = np.arange(1, max(k, DRAFT_LIMIT) + 2)
            depth = np.inf if self.native_depth is None else self.native_depth
            self._curve = np.array([self.verify(int(i)) for i in n]) + self.restore_s * (n - 1 > depth)
        return self._curve[: k + 1]

    def draft_batch(self, n: int) -> float:
        """Seconds the draft takes to decode ``n`` tokens in one batch."""
        assert self.draft_s is not None
        if len(self.draft_batch_s) > 1:
            return CostModel(self.draft_batch_s).verify(n)
        return self.draft_s * self.verify(n) / self.verify(1)

    def drafting(self, name: str) -> DraftCost | None:
        """What the drafter ``name`` costs; None where it was not measured."""
        if name == "draft" and self.draft_s is not None:
            return DraftCost(self.draft_s, self.draft_batch, self.draft_rewind_s)
        if name == "mtp" and 1 in self.mtp_batch_s:
            return DraftCost(self.mtp_batch_s[1], CostModel(self.mtp_batch_s).verify)
        return None

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
