"""Many conversations on one pair: each one's caches set aside and brought back, never re-read.

A pair has one KV cache (and recurrent state) per model. A request names its session (any hashable:
a :class:`~edgespec.conversation.Conversation`, a chat id); when it is not the one the caches hold,
the caches are saved for the one they hold (``llama_state_seq_get_data``: the target's and the
draft's whole state, recurrent parts included; the MTP layers' cache, with the target's hidden rows
they have not read yet) and the named session's saved state, if any, is loaded back, so its next
turn reads only what is new. States are kept in memory up to a byte budget, the oldest set aside
going first; one that is gone is simply read again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from edgespec.access import PairAccess
from edgespec.engine import Engine
from edgespec.errors import LlamaError
from edgespec.llama import Context, load_state, save_state
from edgespec.mtp import MtpDraft, MtpState
from edgespec.proposers import DraftModel

DEFAULT_BUDGET = 1 << 30
"""Bytes of saved states a pair keeps in memory by default (1 GiB: a 2k-token conversation of the
Qwen2.5-Coder 1.5B/0.5B pair takes 84 MB, measured by ``scripts/bench_embedding.py``)."""


@dataclass(frozen=True)
class SavedState:
    """The caches of one session, and the tokens they hold."""

    history: list[int]
    """The engine's history: the target cache holds all but its pending tokens."""
    target: bytes | None
    """The target context's state (None: empty)."""
    draft_cached: list[int]
    """The tokens the draft's cache holds."""
    draft: bytes | None
    """The draft context's state (None: empty, or no draft)."""
    mtp: MtpState | None = None
    """The MTP layers' (None: the pair has none, or the state was saved without them)."""

    @property
    def nbytes(self) -> int:
        """Memory taken by the states."""
        return len(self.target or b"") + len(self.draft or b"") + (self.mtp.nbytes if self.mtp else 0)


def _save(ctx: Context) -> bytes | None:
    return save_state(ctx) if ctx.n_past else None


def _load(ctx: Context, data: bytes | None) -> None:
    if data is None:
        ctx.clear()
    else:
        load_state(ctx, data)


def capture(engine: Engine, draft: DraftModel | None, mtp: MtpDraft | None = None) -> SavedState:
    """What the caches hold now."""
    history = list(engine.history)
    mtp_state = mtp.capture(history) if mtp is not None else None
    if draft is None:
        return SavedState(history, _save(engine.target), [], None, mtp_state)
    return SavedState(history, _save(engine.target), list(draft.cached), _save(draft.ctx), mtp_state)


def restore(engine: Engine, draft: DraftModel | None, state: SavedState, mtp: MtpDraft | None = None) -> None:
    """Load ``state`` into the caches (of the same models and settings). If llama.cpp refuses it
    (:class:`~edgespec.errors.LlamaError`), the caches are left empty, never half loaded."""
    try:
        _load(engine.target, state.target)
        engine.history = list(state.history)
        if draft is not None:
            _load(draft.ctx, state.draft)
            draft.cached = list(state.draft_cached) if state.draft is not None else []
        if mtp is not None:
            mtp.restore(state.mtp)
    except LlamaError:
        engine.reset()
        for drafter in (draft, mtp):
            if drafter is not None:
                drafter.reset()
        raise


class Sessions:
    """The sessions set aside on one pair, and which one its caches hold.

    Args:
        engine: the target's engine (its cache and history).
        draft: the draft model, or None.
        access: the pair's lock, held while states are saved or loaded outside a generation.
        budget: bytes of saved states kept in memory (:data:`DEFAULT_BUDGET`).
        mtp: the target's MTP layers (or Gemma 4's assistant) drafting, or None.
    """

    def __init__(
        self,
        engine: Engine,
        draft: DraftModel | None,
        access: PairAccess,
        budget: int = DEFAULT_BUDGET,
        mtp: MtpDraft | None = None,
    ) -> None:
        self.engine = engine
        self.draft = draft
        self.mtp = mtp
        self.access = access
        self.budget = budget
        """Bytes of saved states kept; the oldest set aside go first beyond it."""
        self.current: Hashable | None = None
        """The session the caches hold (None: an anonymous request, or nothing yet)."""
        self._saved: OrderedDict[Hashable, SavedState] = OrderedDict()

    @property
    def nbytes(self) -> int:
        """Memory the saved states take."""
        return sum(state.nbytes for state in self._saved.values())

    def __contains__(self, key: Hashable) -> bool:
        return key in self._saved

    def switch(self, key: Hashable | None) -> None:
        """Make the caches hold session ``key`` (called with the pair held, before a request):
        the session they hold is set aside, and ``key``'s saved state, if kept, loaded. A new
        session starts from what the caches hold (a shared system prompt is reused)."""
        if key is not None and key == self.current:
            return
        state = self._saved.pop(key, None) if key is not None else None  # before the budget's eviction
        if self.current is not None:
            self._keep(self.current, capture(self.engine, self.draft, self.mtp))
        self.current = key
        if state is not None:
            restore(self.engine, self.draft, state, self.mtp)

    def state_of(self, key: Hashable) -> SavedState | None:
        """Session ``key``'s state: read from the caches if they hold it, else the one kept (None
        if none is)."""
        with self.access.hold():
            if key == self.current:
                return capture(self.engine, self.draft, self.mtp)
            return self._saved.get(key)

    def put(self, key: Hashable, state: SavedState) -> None:
        """Keep ``state`` as session ``key``'s (a state read from disk), to be loaded when it is next
        used; it replaces whatever the caches held for it."""
        with self.access.hold():
            if key == self.current:
                self.current = None  # the caches no longer count as this session's
            self._keep(key, state)

    def forget(self, key: Hashable) -> None:
        """Drop session ``key``'s kept state (a conversation cleared or closed)."""
        self._saved.pop(key, None)
        if key == self.current:
            self.current = None

    def _keep(self, key: Hashable, state: SavedState) -> None:
        self._saved.pop(key, None)
        self._saved[key] = state
        while self._saved and self.nbytes > self.budget:
            self._saved.popitem(last=False)  # the oldest set aside
