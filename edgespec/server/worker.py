"""One thread runs the pair's generations, one at a time, fed by a bounded queue.

llama.cpp's calls block, and the engine is not thread-safe, so every call into the pair happens on
this thread. A request hands over a :class:`Job` and reads what the generation produces from an
asyncio queue on its own event loop. Cancelling a job (the client went away) stops its generation
after the token being produced; a job cancelled while it waits never starts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from edgespec.generate import Generation, Pair, Result, Stats

logger = logging.getLogger(__name__)

Start = Callable[[Pair], Generation]
"""Starts a generation on the pair (tokenizes and prefills the prompt); runs on the worker thread."""


class QueueFullError(Exception):
    """Every place in the queue is taken."""


@dataclass(frozen=True)
class Started:
    """The prompt is prefilled; token text follows."""


Message = Started | str | Result | Exception
"""What a job receives, in order: Started, text pieces (when streaming), then the Result; or an
exception instead."""


@dataclass
class Job:
    """One generation request, as the worker thread sees it."""

    start: Start
    loop: asyncio.AbstractEventLoop
    stream: bool = True
    """Whether to send the text piece by piece (else only the Result, which holds it all)."""
    id: str = ""
    """The answer's id (``chatcmpl-...``), for the log."""
    inbox: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    stats: Stats | None = None
    """The running generation's statistics, once it has started."""
    steps_at_cancel: int = 0
    """Verification steps done when the job was cancelled: the log says how many ran after."""
    cancelled_at: float = 0.0
    """When it was cancelled (``time.time()``), for comparing with a client's own clock."""

    def send(self, message: Message) -> None:
        """Deliver a message to the request's event loop (from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.inbox.put_nowait, message)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()

    def cancel(self) -> None:
        """Stop the generation at the next token, or never start it."""
        if not self.cancelled.is_set():
            self.steps_at_cancel = self.stats.steps if self.stats else 0
            self.cancelled_at = time.time()
        self.cancelled.set()


class Worker:
    """The thread that owns the pair, and the queue of jobs waiting for it.

    A job cancelled while it waits gives its place back at once.
    """

    def __init__(self, pair: Pair, queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError(f"the queue needs at least one place, got {queue_size}")
        self.pair = pair
        self.queue_size = queue_size
        self._jobs: deque[Job] = deque()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._current: Job | None = None
        self._thread: threading.Thread | None = None
        self.n_served = 0
        self.n_cancelled = 0

    @property
    def waiting(self) -> int:
        """Jobs in the queue, not counting the one running."""
        with self._changed:
            self._drop_cancelled()
            return len(self._jobs)

    @property
    def busy(self) -> bool:
        """Whether a generation is running."""
        return self._current is not None

    def start(self) -> None:
        """Start the thread."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="edgespec-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Cancel what runs and waits, and end the thread.

        Waits for the call into llama.cpp in progress (a long prefill cannot be interrupted), so
        that the pair can be closed safely afterwards.
        """
        self._stopping.set()
        with self._changed:
            for job in self._jobs:
                job.cancel()
            self._changed.notify_all()
        if self._current is not None:
            self._current.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, job: Job) -> None:
        """Queue a job; :class:`QueueFullError` when every place is taken."""
        with self._changed:
            self._drop_cancelled()
            if len(self._jobs) >= self.queue_size:
                raise QueueFullError
            self._jobs.append(job)
            self._changed.notify()

    def _drop_cancelled(self) -> None:
        # Called with the lock held.
        kept = [job for job in self._jobs if not job.cancelled.is_set()]
        self.n_cancelled += len(self._jobs) - len(kept)
        self._jobs = deque(kept)

    def _next(self) -> Job | None:
        with self._changed:
            self._changed.wait_for(lambda: self._jobs or self._stopping.is_set(), timeout=0.5)
            self._drop_cancelled()
            if self._stopping.is_set() or not self._jobs:
                return None
            job = self._jobs.popleft()
            self._current = job
            return job

    def _run(self) -> None:
        while not self._stopping.is_set():
            job = self._next()
            if job is None:
                continue
            try:
                self._serve(job)
            finally:
                self._current = None

    def _serve(self, job: Job) -> None:
        try:
            gen = job.start(self.pair)
            job.stats = stats = gen.stats
            job.send(Started())
            events = iter(gen)
            if _drain(events, job):
                job.send(gen.result)
                self.n_served += 1
                logger.info("%s: done, %d tokens in %d steps", job.id, stats.n_tokens, stats.steps)
            else:
                self.n_cancelled += 1
                logger.info(
                    "%s: cancelled after %d tokens in %d steps, %d of them after the cancel (at %.3f)",
                    job.id,
                    stats.n_tokens,
                    stats.steps,
                    stats.steps - job.steps_at_cancel,
                    job.cancelled_at,
                )
        except Exception as exc:  # handed to the request, which answers with it
            job.send(exc)


def _drain(events: Iterator[object], job: Job) -> bool:
    """Forward token text until the end (True) or a cancel (False)."""
    try:
        for event in events:
            if job.cancelled.is_set():
                return False
            text = getattr(event, "text", "")
            if text and job.stream:
                job.send(text)
        return not job.cancelled.is_set()
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
