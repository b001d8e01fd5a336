"""Tokens' bytes in, safe text out: never half a UTF-8 character, never part of a stop string."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    """Incremental detokenizer with stop strings.

    ``push(piece)`` takes the bytes of one token and returns the text that can be shown now.
    Bytes of an unfinished UTF-8 character wait for the next piece; text that could be the start
    of a stop string waits until it is clearly not one. When a stop string appears, ``stopped``
    becomes true and the text before it is all that is ever released.
    """

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._held = ""
        self.text = ""
        """All text released so far."""
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; return the newly releasable text."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(piece)
        return self._release(final=False)

    def flush(self) -> str:
        """End of generation: release whatever is held (an unfinished character becomes U+FFFD)."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        hits = [(i, s) for s in self._stop if (i := self._held.find(s)) >= 0]
        if hits:
            cut = min(i for i, _ in hits)
            out, self._held, self.stopped = self._held[:cut], "", True
        elif final:
            out, self._held = self._held, ""
        else:
            keep = self._partial_stop_len()
            out = self._held[: len(self._held) - keep]
            self._held = self._held[len(self._held) - keep :]
        self.text += out
        return out

    def _partial_stop_len(self) -> int:
        # The longest tail of the held text that is a proper prefix of some stop string.
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(self._held)), best, -1):
                if self._held.endswith(s[:n]):
                    best = n
                    break
        return best
