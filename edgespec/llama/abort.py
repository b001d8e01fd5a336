"""Stopping a long decode midway: llama.cpp's abort callback, asked after every node of the graph.

llama.cpp calls it from the thread that runs ``llama_decode``, and each call takes the GIL, so it is
installed only for long decodes (prompts), where a few hundred calls are nothing beside the work.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import llama_cpp as C

from edgespec.errors import Cancelled


class AbortHook:
    """The abort callback of one llama.cpp context.

    ``check`` (any thread may set what it reads) says whether to stop. A ``KeyboardInterrupt`` that
    arrives while the callback runs in the main thread would be swallowed by ctypes: it stops the
    decode instead and is kept in :attr:`interrupt` for the caller to raise again.
    """

    def __init__(self, ctx_ptr: Any) -> None:
        self._ptr = ctx_ptr
        self.check: Callable[[], bool] | None = None
        self.interrupt: BaseException | None = None
        # Must stay referenced while llama.cpp holds the pointer: held here, with the context.
        self._callback = C.ggml_abort_callback(self._ask)
        self._armed = False

    def _ask(self, _data: ctypes.c_void_p) -> bool:
        try:
            return self.check is not None and bool(self.check())
        except BaseException as exc:  # Ctrl-C, or a failing check: stop, and tell the caller
            self.interrupt = exc
            return True

    def arm(self, on: bool) -> None:
        """Install the callback (``on``) or remove it, so that short decodes make no calls."""
        if on != self._armed:
            C.llama_set_abort_callback(self._ptr, self._callback if on else C.ggml_abort_callback(), None)
            self._armed = on

    def take_interrupt(self) -> BaseException | None:
        """The exception caught during the last decode, if any, forgotten once taken."""
        exc, self.interrupt = self.interrupt, None
        return exc

    def stopped(self, message: str) -> BaseException:
        """What to raise for a decode the callback stopped: the exception it caught (Ctrl-C), or
        :class:`~edgespec.errors.Cancelled` with ``message``."""
        return self.take_interrupt() or Cancelled(message)
