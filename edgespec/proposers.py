"""Proposers guess the next tokens; the target checks them. One small interface, several kinds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgespec.llama import Context
from edgespec.sampling import SamplingParams, probabilities, sample


@dataclass(frozen=True)
class Proposal:
    """Guessed tokens, who guessed them, and what the planner and verifier need to know."""

    tokens: list[int]
    source: str
    """``"none"``, ``"draft"`` or ``"lookup"``."""
    q: np.ndarray | None = None
    """The draft's distribution at each guess, after the sampling transform (rejection sampling)."""
    match_len: int = 0
    """For lookup: how many tokens of context matched where the guess was copied from."""


NO_PROPOSAL = Proposal([], "none")


class Proposer(Protocol):
    """Anything that can guess up to ``k`` tokens that follow ``history``."""

    name: str

    def propose(
        self, history: Sequence[int], k: int, params: SamplingParams, rng: np.random.Generator
    ) -> Proposal:
        """Guess at most ``k`` tokens after ``history`` (possibly none)."""
        ...

    def reset(self) -> None:
        """Forget any cached state (a new conversation)."""
        ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class DraftModel:
    """A small model with the target's tokenizer, drafting token by token.

    Greedy targets get the draft's argmax; sampled targets get a sample from the draft's
    transformed distribution ``q``, which is returned for rejection sampling. Drafting stops early
    when the draft's top probability falls below ``p_min``. The draft's KV cache follows the
    accepted history lazily: nothing is prefilled until the first proposal.
    """

    name = "draft"

    def __init__(self, ctx: Context, n_vocab_target: int, p_min: float = 0.75) -> None:
        self.ctx = ctx
        self.n_vocab_target = n_vocab_target
        self.p_min = p_min
        self.cached: list[int] = []
        """Tokens whose KV entries the draft context holds, in order."""
        self.n_prefilled = 0
        """Tokens decoded to catch up with the history (not drafting), for tests and stats."""

    def reset(self) -> None:
        """Forget the cache contents."""
        self.ctx.clear()
        self.cached = []

    def sync(self, history: Sequence[int]) -> np.ndarray:
        """Bring the cache to ``history`` and return the draft's logits for the next token."""
        keep = min(common_prefix(self.cached, history), len(history) - 1)
        self.ctx.truncate(keep)
        del self.cached[keep:]
        new = list(history[keep:])
        logits: np.ndarray = self.ctx.decode(new, keep, 1)[0]
        self.cached.extend(new)
        self.n_prefilled += len(new)
        return logits

    def propose(
        self, history: Sequence[int], k: int, params: SamplingParams, rng: np.random.Generator
    ) -> Proposal:
        """Draft up to ``k`` tokens."""
        logits = self.sync(history)
        tokens: list[int] = []
        qs: list[np.ndarray] = []
        while len(tokens) < k:
            if params.greedy:
                token = int(np.argmax(logits))
                if self.p_min > 0 and _top_probability(logits, token) < self.p_min:
                    break
            else:
                q = probabilities(logits, params)
                token = sample(q, rng)
                if q.max() < self.p_min:
                    break
                qs.append(q)
            tokens.append(token)
            if len(tokens) < k:
                logits = self.ctx.decode([token], len(self.cached), 1)[0]
                self.cached.append(token)
        q_rows = self._pad(np.stack(qs)) if qs and not params.greedy else None
        return Proposal(tokens, self.name, q_rows)

    def _pad(self, q: np.ndarray) -> np.ndarray:
        # A draft vocabulary may be a few tokens shorter or longer than the target's.
        if q.shape[1] == self.n_vocab_target:
            return q
        out = np.zeros((q.shape[0], self.n_vocab_target))
        n = min(q.shape[1], self.n_vocab_target)
        out[:, :n] = q[:, :n]
        return out


def _top_probability(logits: np.ndarray, top: int) -> float:
    # softmax(logits)[top] without building the distribution: one float32 pass over the vocabulary.
    return float(1.0 / np.exp(logits - logits[top]).sum())


class PromptLookup:
    """Copy what followed the longest earlier match of the text's end (prompt and output alike).

    Free to run: no model, a few numpy passes over the token history. Long matches are common
    when the output quotes or edits the input.
    """

    name = "lookup"

    def __init__(self, min_match: int = 2, max_match: int = 64) -> None:
        self.min_match = min_match
        self.max_match = max_match

    def reset(self) -> None:
        """Stateless: nothing to forget."""

    def find(self, history: Sequence[int]) -> tuple[int, int]:
        """(start of the continuation, match length) of the best earlier match; (0, 0) if none.

        The best match is the longest (up to ``max_match`` tokens); among equals, the latest.
        """
        arr = np.asarray(history, dtype=np.int64)
        n = arr.size
        if n < 2:
            return 0, 0
        # Candidates: earlier positions holding the last token, whose continuation exists.
        cand = np.flatnonzero(arr[:-1] == arr[-1])
        best_start, best_len = 0, 0
        length = 1
        while cand.size:
            best_start, best_len = int(cand[-1]) + 1, length
            if length >= self.max_match:
                break
            cand = cand[cand >= length]
            cand = cand[arr[cand - length] == arr[n - 1 - length]]
            length += 1
        return (best_start, best_len) if best_len >= self.min_match else (0, 0)

    def propose(
        self, history: Sequence[int], k: int, params: SamplingParams, rng: np.random.Generator
    ) -> Proposal:
        """Up to ``k`` tokens copied from after the best match."""
        start, match_len = self.find(history)
        if match_len == 0 or k <= 0:
            return NO_PROPOSAL
        return Proposal(list(history[start : start + k]), self.name, match_len=match_len)
