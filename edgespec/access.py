"""Who may use a pair's contexts now: one generation at a time, the others waiting in the order they
asked, each with a cancel event that also stops a long prompt midway.

A generation holds the pair from :meth:`~edgespec.generate.Pair.stream` (its prompt read first) to
the end of its iteration, its ``close()``, or its being garbage-collected (a generation refers to
itself through its pipeline, so that is at Python's next cycle collection, not at once). Another
thread or task that asks meanwhile waits its turn, or with ``wait=False`` gets
:class:`PairBusyError` at once.
A thread that starts a generation while its own earlier one is unfinished (a loop left with
``break``) ends that one first, as finish reason ``"interrupted"``: it can never iterate both.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from edgespec.errors import EdgespecError, PairBusyError


class FifoLock:
    """A lock whose waiters get it in the order they asked (``threading.Lock`` promises no order),
    and which any thread may release (a generation may end on another thread than it began)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held = False
        self._waiting: deque[object] = deque()

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock, waiting for the earlier askers unless ``blocking`` is False; whether taken."""
        with self._changed:
            if not self._held and not self._waiting:
                self._held = True
                return True
            if not blocking:
                return False
            me = object()
            self._waiting.append(me)
            try:
                self._changed.wait_for(lambda: not self._held and self._waiting[0] is me)
            finally:  # taken, or the wait interrupted (Ctrl-C): either way no longer waiting
                self._waiting.remove(me)
                self._changed.notify_all()
            self._held = True
            return True

    def release(self) -> None:
        """Let the next asker in."""
        with self._changed:
            if not self._held:
                raise RuntimeError("release of a FifoLock that is not held")
            self._held = False
            self._changed.notify_all()

    @property
    def locked(self) -> bool:
        """Whether someone holds it."""
        return self._held

    @property
    def waiting(self) -> int:
        """How many wait for it."""
        return len(self._waiting)


class Stoppable(Protocol):
    """A context whose long decodes a cancel stops midway (:class:`~edgespec.llama.Context`, and
    :class:`~edgespec.llama.MtpContext` catching up)."""

    def stop_when(self, check: Callable[[], bool] | None) -> None: ...


class Running(Protocol):
    """What :class:`PairAccess` needs of the generation that holds the pair."""

    def close(self) -> None: ...


class PairAccess:
    """The pair's lock, the running generation, and the stop checks of its contexts.

    Args:
        contexts: the contexts a cancel stops midway (the target's, the draft's, the MTP layers').
    """

    def __init__(self, contexts: Sequence[Stoppable]) -> None:
        self._lock = FifoLock()
        self._contexts = contexts
        # Weak: a generation dropped unfinished is collected, and its finalizer lets the pair go.
        self._running: weakref.ref[Running] | None = None
        self._owner = 0  # the thread that started the running generation
        self._cancel: threading.Event | None = None  # the running generation's
        self._closed = False

    def begin(self, cancel: threading.Event | None, wait: bool) -> threading.Event:
        """Take the pair for one generation (waiting for those before, unless not ``wait``); returns
        its cancel event (``cancel``, or a new one), which now stops the contexts' long decodes."""
        running = self._running() if self._running is not None else None
        if running is not None and self._owner == threading.get_ident():
            running.close()  # this thread left its last generation unfinished
        self.check_open()
        if not self._lock.acquire(wait):
            raise PairBusyError("the pair is generating for another request; wait, or try again later")
        if self._closed:
            self._lock.release()
            self.check_open()
        event = cancel if cancel is not None else threading.Event()
        for ctx in self._contexts:
            ctx.stop_when(event.is_set)
        self._owner = threading.get_ident()
        self._cancel = event
        return event

    def check_open(self) -> None:
        """Raise :class:`~edgespec.errors.EdgespecError` once the pair is closed (its models freed)."""
        if self._closed:
            raise EdgespecError("the pair is closed")

    def started(self, generation: Running) -> None:
        """The generation that holds the pair, once made (its prompt read)."""
        self._running = weakref.ref(generation)

    def end(self) -> None:
        """The generation is over (or never started): the next request may go."""
        for ctx in self._contexts:
            ctx.stop_when(None)
        self._running = self._cancel = None
        self._lock.release()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """The pair held for a moment outside a generation (a reset, a state saved or loaded)."""
        self.begin(None, True)
        try:
            yield
        finally:
            self.end()

    @property
    def busy(self) -> bool:
        """Whether a generation holds the pair."""
        return self._lock.locked

    def close(self) -> None:
        """Refuse new requests, stop the running one, and wait until it has let go. Threads that
        might still start requests must be done first: a request refused here may be tokenizing."""
        self._closed = True
        running = self._running() if self._running is not None else None
        cancel = self._cancel
        if running is not None and self._owner == threading.get_ident():
            running.close()
        elif cancel is not None:
            cancel.set()  # the thread generating stops within a step, or midway through a prompt
        self._lock.acquire()
        self._lock.release()
