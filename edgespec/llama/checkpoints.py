"""Where a recurrent state can be cut back to: the saved states of one context, by position.

A KV cache can be cut back to any position; a recurrent state (Mamba, DeltaNet, short convolutions)
only to a position whose state was kept. :class:`~edgespec.llama.Context` keeps two kinds here: the
state before the verification in progress (one, replaced each step), and a few snapshots where a
later request is likely to come back to (the end of a prompt: a new turn, the same prompt again).
"""

from __future__ import annotations

from typing import Any

MAX_SNAPSHOTS = 3
"""Snapshots kept per context, the oldest going first: each is a copy of the recurrent state."""


class Checkpoints:
    """Where one context can cut back to: natively (a KV cache anywhere; llama.cpp's rollback
    within the last decode, once), or to a saved state (opaque buffers by position: the step's,
    and a few snapshots).

    A state saved at position p describes the tokens before p, so it stays valid while the
    context keeps them: :meth:`drop_after` forgets every state past a cut."""

    def __init__(self, native_depth: int | None, max_snapshots: int = MAX_SNAPSHOTS) -> None:
        self.native_depth = native_depth
        """How many tokens a native cut drops at most (0: none; None: a KV cache, any number)."""
        self.room = 0
        """How many tokens of the last decode a native cut may still drop."""
        self.max_snapshots = max_snapshots
        self.step_at = -1
        """Where the step's state was saved; -1 when there is none."""
        self.step_buffer: Any = None
        """The step's state; kept after it is dropped, so that the next save can reuse it."""
        self._snapshots: dict[int, Any] = {}  # in the order they were made

    def where(self, n_keep: int, n_past: int) -> tuple[int, bool]:
        """Where a cut of a context holding ``n_past`` positions back to ``n_keep`` lands, and
        whether natively; otherwise at a saved state (0: none, an empty context)."""
        if self.native_depth is None or 0 < n_past - n_keep <= min(self.room, self.native_depth):
            return n_keep, True
        return self.best(n_keep), False

    def decoded(self, n: int) -> None:
        """A decode of ``n`` tokens (its last chunk): llama.cpp keeps no state from before it."""
        self.room = n - 1

    def set_step(self, at: int, buffer: Any) -> None:
        """The state before the verification in progress, saved at ``at``."""
        self.step_at, self.step_buffer = at, buffer

    def add(self, at: int, state: Any) -> None:
        """A snapshot at ``at``; the oldest goes when there are more than ``max_snapshots``."""
        self._snapshots.pop(at, None)
        self._snapshots[at] = state
        while len(self._snapshots) > self.max_snapshots:
            del self._snapshots[next(iter(self._snapshots))]

    def best(self, n: int) -> int:
        """The latest position at most ``n`` with a saved state; 0 (the empty context) if none."""
        return max((at for at in self.positions() if at <= n), default=0)

    def get(self, at: int) -> Any:
        """The state saved at ``at``."""
        return self.step_buffer if at == self.step_at else self._snapshots[at]

    def positions(self) -> list[int]:
        """Where states are saved, the step's included."""
        return [*self._snapshots, *([self.step_at] if self.step_at >= 0 else [])]

    def drop_after(self, n: int) -> None:
        """A cut to position ``n``: forget the states saved past it (their tokens are gone), and
        the native room (llama.cpp rolls back once per decode)."""
        self.room = 0
        if self.step_at > n:
            self.step_at = -1
        for at in [at for at in self._snapshots if at > n]:
            del self._snapshots[at]
