"""A constraint at work during one generation: which tokens may come next.

:class:`Grammar` allows everything (no constraint); :class:`Matcher` follows a
:class:`~edgespec.constraint.Constraint` with llguidance's matcher along the generation's history.
The engine calls a generation's grammar at two points: :meth:`~Grammar.mask` the verified rows
after the decode, :meth:`~Grammar.advance` by the accepted tokens after verification. Proposers
look ahead of the accepted history with :meth:`~Grammar.at`: the draft model drafts under the mask
(:meth:`~Grammar.mask_row`, :meth:`~Grammar.push`), copies are cut at the first token the grammar
forbids (:meth:`~Grammar.valid`), and the tokens it forces are guesses (:meth:`~Grammar.forced`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from time import perf_counter

import llguidance
import llguidance.numpy
import numpy as np

from edgespec.constraint import Constraint, one_line
from edgespec.errors import ConstraintError
from edgespec.llama import Model
from edgespec.llama.vocab import end_tokens, guidance_tokenizer


class Grammar:
    """No constraint: every token is allowed. The engine and the proposers call a generation's
    grammar the same way whether or not it constrains anything."""

    mask_seconds = 0.0
    """Seconds spent masking verified rows."""
    other_seconds = 0.0
    """Seconds spent following the history and looking ahead for proposers."""
    masked_rows = 0

    @property
    def failed(self) -> str | None:
        """Why the constraint could not go on, once it could not (else None)."""
        return None

    def mask(self, logits: np.ndarray, guesses: Sequence[int]) -> np.ndarray:
        """The target's logits over ``[pending, *guesses]``, each row masked by what the grammar
        allows there (in place). Rows after the first guess it forbids are left as they are: the
        verifier never reads past that guess, which the mask rejects."""
        return logits

    def advance(self, tokens: Sequence[int]) -> None:
        """The history grew by ``tokens`` (accepted guesses and the target's own token)."""

    @contextmanager
    def at(self, history: Sequence[int], extra: Sequence[int] = ()) -> Iterator[Grammar]:
        """Look ahead at ``history + extra`` (the accepted history, extended by guesses not yet verified):
        inside the block, :meth:`mask_row`, :meth:`push`, :meth:`forced` and :meth:`valid` work
        from there; leaving it forgets the look-ahead."""
        yield self

    def mask_row(self, row: np.ndarray) -> np.ndarray:
        """One row of logits (any model's, over the same vocabulary) masked here, in place."""
        return row

    def push(self, token: int) -> bool:
        """Look one token further; False (and no move) if the grammar forbids it here."""
        return True

    def forced(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens the grammar forces from here: the only ones its mask allows."""
        return []

    def valid(self, tokens: Sequence[int]) -> int:
        """How many of ``tokens``, in order from here, the grammar allows."""
        return len(tokens)


FREE = Grammar()
"""The grammar of an unconstrained generation."""


class Matcher(Grammar):
    """A constraint followed by llguidance's matcher from the end of the prompt on.

    Masking a row of a 152k vocabulary costs about 0.1 ms (llguidance's mask, some 30 us, then
    numpy); under greedy decoding a verified row whose argmax is allowed is left as it is.
    A mask that allows nothing (the matcher failed: a parser limit, say) leaves only the model's
    end-of-generation token, so the generation ends there, and :attr:`failed` says why.
    """

    def __init__(self, constraint: Constraint, model: Model, n_history: int, greedy: bool = False) -> None:
        self._m = llguidance.LLMatcher(guidance_tokenizer(model), constraint.compiled, log_level=0)
        if self._m.is_error():
            raise ConstraintError(f"the constraint does not fit this model: {one_line(self._m.get_error())}")
        self.n_vocab = model.n_vocab
        self.end = model.eos
        self._ends = set(end_tokens(model))
        self.n_history = n_history
        """The history length the matcher stands at (the prompt is not constrained)."""
        self.greedy = greedy
        """Verification is greedy: it reads only each row's argmax."""
        self._bits = llguidance.numpy.allocate_token_bitmask(1, self.n_vocab)
        self._ahead = -1  # tokens looked ahead in an `at` block; -1 outside one
        self._off = False  # the look-ahead's history is one the grammar forbids

    @property
    def failed(self) -> str | None:
        return one_line(self._m.get_error()) if self._m.is_error() else None

    def mask(self, logits: np.ndarray, guesses: Sequence[int]) -> np.ndarray:
        t0 = perf_counter()
        n_valid = self._m.validate_tokens(list(guesses))
        # Nothing follows an end token, and llguidance cannot roll one back: stop at the first.
        n_valid = next((i for i, t in enumerate(guesses[:n_valid]) if t in self._ends), n_valid)
        for i in range(n_valid + 1):
            self._apply(logits[i], self.greedy)
            if i < n_valid:
                self._m.consume_token(guesses[i])
        self._m.rollback(n_valid)
        self.masked_rows += n_valid + 1
        self.mask_seconds += perf_counter() - t0
        return logits

    def advance(self, tokens: Sequence[int]) -> None:
        t0 = perf_counter()
        self.n_history += len(tokens)
        # An end token ends the generation; the matcher need not (and once stopped, cannot) take it.
        upto = next((i for i, t in enumerate(tokens) if t in self._ends), len(tokens))
        n = self._m.try_consume_tokens(list(tokens[:upto])) if upto else 0
        if n < upto and not self._m.is_error():
            self._m.consume_token(tokens[n])  # refused: this puts the matcher in its error state, saying why
        self.other_seconds += perf_counter() - t0

    @contextmanager
    def at(self, history: Sequence[int], extra: Sequence[int] = ()) -> Iterator[Grammar]:
        if self._ahead >= 0:
            raise RuntimeError("a grammar looks ahead from one place at a time")
        t0 = perf_counter()
        tail = [*history[self.n_history :], *extra]
        upto = next((i for i, t in enumerate(tail) if t in self._ends), len(tail))  # nothing follows an end
        self._ahead = self._m.try_consume_tokens(tail[:upto])
        self._off = self._ahead < len(tail)
        self.other_seconds += perf_counter() - t0
        try:
            yield self
        finally:
            t0 = perf_counter()
            self._m.rollback(self._ahead)
            self._ahead, self._off = -1, False
            self.other_seconds += perf_counter() - t0

    def mask_row(self, row: np.ndarray) -> np.ndarray:
        t0 = perf_counter()
        if self._off:
            row.fill(-np.inf)
            row[self.end] = 0.0
        else:
            self._apply(row)
        self.other_seconds += perf_counter() - t0
        return row

    def push(self, token: int) -> bool:
        if self._off or token in self._ends or self._m.try_consume_tokens([token]) != 1:
            return False
        self._ahead += 1
        return True

    def forced(self, limit: int) -> list[int]:
        if self._off or limit <= 0:
            return []
        return self._m.compute_ff_tokens()[:limit]

    def valid(self, tokens: Sequence[int]) -> int:
        return 0 if self._off else self._m.validate_tokens(list(tokens))

    def _apply(self, row: np.ndarray, greedy: bool = False) -> None:
        """Forbidden tokens' logits to -inf (tokens past the vocabulary too). With ``greedy``, a
        row whose argmax is allowed is left as it is: masking would not change its argmax."""
        llguidance.numpy.fill_next_token_bitmask(self._m, self._bits)
        if greedy:
            top = int(np.argmax(row))
            if top < self.n_vocab and self._bits[0, top >> 5] >> (top & 31) & 1:
                return
        n = min(row.size, self.n_vocab)
        row[n:] = -np.inf
        allowed = np.unpackbits(self._bits.view(np.uint8), count=n, bitorder="little").view(bool)
        n_allowed = np.count_nonzero(allowed)
        if n_allowed * 8 >= n:  # mostly allowed: forbid the rest
            np.putmask(row[:n], ~allowed, -np.inf)
            return
        keep = np.flatnonzero(allowed) if n_allowed else np.array([self.end])  # none: the matcher failed
        kept = row[keep]
        row.fill(-np.inf)
        row[keep] = kept
