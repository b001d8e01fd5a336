"""Generations read from asyncio: :class:`AsyncGeneration`, made by :meth:`Pair.astream
<edgespec.generate.Pair.astream>`.

llama.cpp's calls block, so a generation runs on a thread of its own, which waits for the pair in
line with every other request, reads the prompt and steps the engine; its events reach the event
loop through ``call_soon_threadsafe`` (the server's worker does the same). The thread makes each
event only once the reader asks for it, so cancelling the task that reads stops the generation
within one verification step (or midway through a long prompt), never after steps run ahead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType

from edgespec.generation import Generation, Result, TokenEvent

Start = Callable[[threading.Event], Generation]
"""Starts the generation on the pair with the given cancel event (waits its turn, reads the
prompt); runs on the generation's thread."""

_Item = TokenEvent | Result | BaseException
_POLL_S = 0.05  # how often a thread waiting to be asked looks whether it was cancelled meanwhile


class AsyncGeneration:
    """A generation read with ``async for``: :class:`~edgespec.generation.TokenEvent` s, then
    :attr:`result`.

    Nothing starts until the first ``__anext__``. Cancelling the reading task, :meth:`cancel`
    (thread-safe) or :meth:`aclose` stops the generation; ``async with`` closes it on leaving.
    Errors of the generation (a bad prompt, :class:`~edgespec.errors.PairBusyError`,
    :class:`~edgespec.errors.Cancelled` when stopped while the prompt was read) are raised from
    the ``async for``.
    """

    def __init__(self, start: Start) -> None:
        self._start = start
        self._cancel = threading.Event()
        self._demand = threading.Semaphore(0)  # events asked for and not yet made
        self._inbox: asyncio.Queue[_Item] | None = None
        self._over = False
        self.result: Result | None = None
        """The finished generation's result (finish reason ``"interrupted"`` when stopped); None
        until iteration has ended."""

    def __aiter__(self) -> AsyncGeneration:
        return self

    async def __anext__(self) -> TokenEvent:
        if self._over:
            raise StopAsyncIteration
        if self._inbox is None:
            self._inbox = self._begin()
        self._demand.release()
        try:
            item = await self._inbox.get()
        except asyncio.CancelledError:
            self.cancel()  # the reading task was cancelled: the thread stops within a step
            raise
        if isinstance(item, TokenEvent):
            return item
        self._over = True
        if isinstance(item, Result):
            self.result = item
            raise StopAsyncIteration
        raise item

    def _begin(self) -> asyncio.Queue[_Item]:
        inbox: asyncio.Queue[_Item] = asyncio.Queue()
        args = (self._start, self._cancel, self._demand, asyncio.get_running_loop(), inbox)
        # The thread holds no reference to self, so that a dropped AsyncGeneration is collected
        # (and, through __del__, cancelled).
        threading.Thread(target=_run, args=args, name="edgespec-generation", daemon=True).start()
        return inbox

    def cancel(self) -> None:
        """Stop the generation (its reading of the prompt, or within one verification step)."""
        self._cancel.set()
        self._demand.release()  # wake the thread if it waits to be asked

    async def aclose(self) -> None:
        """Stop the generation and wait until it has let go of the pair (within one step);
        :attr:`result` then holds what was generated, if it got that far."""
        self.cancel()
        while self._inbox is not None and not self._over:
            try:
                await self.__anext__()
            except (StopAsyncIteration, Exception):
                break
        self._over = True

    async def __aenter__(self) -> AsyncGeneration:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self.cancel()


def _run(
    start: Start,
    cancel: threading.Event,
    demand: threading.Semaphore,
    loop: asyncio.AbstractEventLoop,
    inbox: asyncio.Queue[_Item],
) -> None:
    """The generation's thread: start it, make each event as it is asked for, then send the result
    (or the error)."""

    def send(item: _Item) -> None:
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    try:
        with start(cancel) as generation:
            events = iter(generation)
            while _asked(demand, cancel):
                event = next(events, None)
                if event is None:
                    break
                send(event)
        send(generation.result)
    except BaseException as exc:  # handed to the reader, who raises it
        send(exc)


def _asked(demand: threading.Semaphore, cancel: threading.Event) -> bool:
    """Wait until the reader asks for the next event (True) or the generation is cancelled (False):
    by the reader, or by ``Pair.close`` on another thread, which sets the same event."""
    while not demand.acquire(timeout=_POLL_S):
        if cancel.is_set():
            return False
    return not cancel.is_set()
