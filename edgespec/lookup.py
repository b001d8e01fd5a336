"""The prompt lookup: guesses copied from where the text's last tokens appeared before, in this
text or in texts remembered from earlier requests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgespec.proposers import NO_PROPOSAL, Proposal, common_prefix
from edgespec.sampling import SamplingParams

_SEPARATOR = -1  # between remembered sequences: never equal to a token, so no match crosses it


def _longest_match(corpus: np.ndarray, ends: np.ndarray, tail: np.ndarray, max_match: int) -> tuple[int, int]:
    """The longest suffix of ``tail`` (up to ``max_match`` tokens) that ends in ``corpus`` at one of
    ``ends`` (positions holding ``tail[-1]``): (the position after it, its length), the latest among
    equals; (0, 0) if ``ends`` is empty."""
    cand = ends
    best_end, length = 0, 0
    while cand.size:
        best_end, length = int(cand[-1]), length + 1
        if length >= max_match or length >= tail.size:
            break
        if cand.size == 1:  # one candidate left: measure its match in one pass
            m = min(best_end + 1, tail.size, max_match)
            same = corpus[best_end + 1 - m : best_end + 1][::-1] == tail[tail.size - m :][::-1]
            length = m if same.all() else int(np.argmin(same))
            break
        cand = cand[cand >= length]
        cand = cand[corpus[cand - length] == tail[tail.size - 1 - length]]
    return (best_end + 1, length) if length else (0, 0)


class PromptLookup:
    """Copy what followed the longest earlier match of the text's end (prompt and output alike).

    Free to run: no model, a few numpy passes over the token history. Long matches are common
    when the output quotes or edits the input. Sequences handed to :meth:`remember` (earlier
    prompts and replies of this process) are searched too, in a bounded memory, so that text an
    agent or an editor sends again and again is copied from its earlier requests.
    """

    name = "lookup"

    def __init__(self, min_match: int = 2, max_match: int = 256, memory_tokens: int = 1 << 16) -> None:
        self.min_match = min_match
        self.max_match = max_match
        self.memory_tokens = memory_tokens
        self._remembered: list[list[int]] = []
        self._memory = np.zeros(0, dtype=np.int64)
        self._history: Sequence[int] | None = None
        self._buf = np.zeros(1024, dtype=np.int64)
        self._n = 0

    def reset(self) -> None:
        """Forget the remembered sequences."""
        self._remembered = []
        self._memory = np.zeros(0, dtype=np.int64)

    def remember(self, tokens: Sequence[int]) -> None:
        """Keep ``tokens`` (a finished prompt and reply) for later lookups; the oldest go first
        when the memory is full. A sequence that continues the last one replaces it (chat turns)."""
        tokens = list(tokens[-self.memory_tokens :])
        if self._remembered and common_prefix(self._remembered[-1], tokens) == len(self._remembered[-1]):
            self._remembered.pop()
        self._remembered.append(tokens)
        while sum(len(t) + 1 for t in self._remembered) > self.memory_tokens:
            self._remembered.pop(0)
        parts = [np.array([*t, _SEPARATOR], dtype=np.int64) for t in self._remembered]
        self._memory = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _array(self, history: Sequence[int]) -> np.ndarray:
        # The history only grows during a generation: convert only what was added since last time.
        n = len(history)
        if (
            history is not self._history
            or n < self._n
            or (self._n and self._buf[self._n - 1] != history[self._n - 1])
        ):
            self._history, self._n = history, 0
        if n > self._buf.size:
            self._buf = np.concatenate([self._buf, np.zeros(n, dtype=np.int64)])
        if n > self._n:
            self._buf[self._n : n] = history[self._n : n]
            self._n = n
        return self._buf[:n]

    def find(self, history: Sequence[int], extra: Sequence[int] = ()) -> tuple[np.ndarray, int, int]:
        """(where to copy from, start of the continuation there, match length) of the best earlier
        match of ``history + extra``; length 0 if none.

        The best match is the longest (up to ``max_match`` tokens); among equals, the latest, and
        the current text before the memory.
        """
        arr = self._array(history)
        if extra:
            arr = np.concatenate([arr, np.asarray(extra, dtype=np.int64)])
        if arr.size < 2:
            return arr, 0, 0
        last = arr[-1]
        start, length = _longest_match(arr, np.flatnonzero(arr[:-1] == last), arr, self.max_match)
        source = arr
        if self._memory.size and length < self.max_match:
            mem = self._memory
            ends = np.flatnonzero(mem[:-1] == last)
            ends = ends[mem[ends + 1] != _SEPARATOR]
            m_start, m_length = _longest_match(mem, ends, arr, self.max_match)
            if m_length > length:
                source, start, length = mem, m_start, m_length
        return (source, start, length) if length >= self.min_match else (arr, 0, 0)

    def propose(
        self,
        history: Sequence[int],
        k: int,
        params: SamplingParams,
        rng: np.random.Generator,
        extra: Sequence[int] = (),
    ) -> Proposal:
        """Up to ``k`` tokens copied from after the best match of ``history + extra``.

        A copy that reaches the end of the text goes on with its own guesses (a repeating pattern).
        Under a constraint, the copy is cut at the first token it forbids.
        """
        source, start, match_len = self.find(history, extra)
        if match_len == 0 or k <= 0:
            return NO_PROPOSAL
        tokens = source[start : start + k].tolist()
        if source is not self._memory:
            n = len(tokens)
            while n < k:  # copied from just before the end: the copy continues itself
                tokens.append(tokens[n - (source.size - start)])
                n += 1
        elif _SEPARATOR in tokens:
            tokens = tokens[: tokens.index(_SEPARATOR)]
        with params.grammar.at(history, extra) as grammar:
            tokens = tokens[: grammar.valid(tokens)]  # a guess the constraint forbids cannot be kept
        if not tokens:
            return NO_PROPOSAL
        return Proposal(
            tokens,
            self.name,
            confidence=[0.0] * len(tokens),
            match=[match_len + i for i in range(len(tokens))],
        )
