"""The target drafts for itself: its MTP layers, or Gemma 4's assistant, guess the next tokens
(:class:`MtpDraft`).

Shaped like :class:`~edgespec.proposers.DraftModel`, so that the planner weighs both by one rule:
it catches up lazily when it next drafts, then drafts token by token under a plan. What it catches
up on differs: every token since it last drafted, each read with the target's hidden row before it
(kept by :class:`~edgespec.llama.HiddenRows` as the target verifies), and its own guesses never stay
in its cache, because it read them with its own rows, not the target's. An assistant catches up on
nothing: it reads the target's cache, so only the last token, the one the target has not read yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgespec.llama import HiddenRows, MtpContext
from edgespec.proposers import Plan, Proposal, common_prefix, draft_tokens, p_min_plan, pad_to
from edgespec.sampling import SamplingParams


@dataclass(frozen=True)
class MtpState:
    """What the MTP layers hold of one conversation, to set aside with it: the tokens their cache
    holds and the cache itself, and the target's hidden rows they have not read yet (from position
    :attr:`rows_from` on), which the next conversation's decodes would overwrite."""

    cached: list[int]
    state: bytes | None
    rows_from: int
    rows: np.ndarray

    @property
    def nbytes(self) -> int:
        """Memory taken."""
        return len(self.state or b"") + self.rows.nbytes


class MtpDraft:
    """Guesses from the target's own MTP layers: greedy targets get their argmax, sampled targets
    a sample from their transformed distribution ``q`` (kept for rejection sampling). By default
    drafting stops when the top probability falls below ``p_min``, as the draft model's does."""

    name = "mtp"
    continues_copies = False  # a copied guess has no target row yet: nothing to read it with

    def __init__(self, ctx: MtpContext, hidden: HiddenRows, p_min: float = 0.75) -> None:
        self.ctx = ctx
        self.hidden = hidden
        self.p_min = p_min
        self.cached: list[int] = []
        """Tokens the MTP cache holds, each read with the target's row before it."""
        self.n_prefilled = 0
        """Tokens read to catch up with the history (not drafting), for tests and stats."""
        self._row = np.zeros(0, np.float32)  # the MTP layers' own row after the last guess

    def reset(self) -> None:
        """Forget the cache contents."""
        self.ctx.clear()
        self.cached = []

    def _keep(self, history: Sequence[int]) -> int:
        # What the cache holds of the history, leaving at least the last token to read.
        if self.ctx.shared:  # the target's cache: all but the last token (the engine's invariant)
            return len(history) - 1
        return min(common_prefix(self.cached, history), len(history) - 1)

    def capture(self, history: Sequence[int]) -> MtpState:
        """What it holds for ``history`` (the engine's, the target holding all but its last token)."""
        start = max(0, self._keep(history) - 1)  # the row before the first token it would read next
        rows = self.hidden.rows[start : max(start, len(history) - 1)].copy()
        return MtpState(list(self.cached), self.ctx.save(), start, rows)

    def restore(self, state: MtpState | None) -> None:
        """Bring back what :meth:`capture` returned; None (a state kept without it) empties the
        cache, and it then reads the history with whatever rows the target left."""
        if state is None:
            self.reset()
            return
        self.cached = []  # until the cache is back: a refused state leaves it empty
        self.ctx.load(state.state)
        self.cached = list(state.cached) if not self.ctx.shared else []
        self.hidden.rows[state.rows_from : state.rows_from + len(state.rows)] = state.rows

    def lag(self, history: Sequence[int]) -> int:
        """Tokens it would read to catch up with ``history``."""
        return len(history) - self._keep(history)

    def sync(self, history: Sequence[int]) -> np.ndarray:
        """Read what it has not seen of ``history`` (its guesses of the last step dropped) and
        return the logits for the next token."""
        keep = self._keep(history)
        self.ctx.truncate(keep)
        del self.cached[keep:]
        new = list(history[keep:])
        try:
            logits, self._row = self.ctx.decode(new, self.hidden.before(keep, len(history)), keep)
        finally:  # a long catching up stopped midway keeps the chunks it read
            if not self.ctx.shared:  # an assistant's cache is the target's: nothing of its own to track
                self.cached = list(history[: self.ctx.n_past])
        self.n_prefilled += len(new)
        return logits

    def propose(
        self,
        history: Sequence[int],
        k: int,
        params: SamplingParams,
        rng: np.random.Generator,
        plan: Plan | None = None,
        verified: int | None = None,
    ) -> Proposal:
        """Draft up to ``k`` tokens, as long as ``plan`` (by default: the ``p_min`` rule) says so.
        ``history`` must be verified text (``verified`` is there for the protocol's sake)."""
        logits = self.sync(history)
        plan = plan or p_min_plan(k, self.p_min)
        return draft_tokens(history, logits, self._advance, k, params, rng, plan, self._pad, self.name)

    def _advance(self, tokens: list[int]) -> np.ndarray:
        # A guess is read with the row the MTP layers gave before it; it leaves the cache next sync.
        # An assistant reads every guess at the same position, the one after the target's cache, as
        # Gemma 4's was trained to (llama.cpp's draft-mtp does the same).
        for token in tokens:
            logits, self._row = self.ctx.decode([token], self._row[None, :], self.ctx.n_past)
        return logits

    def _pad(self, q: np.ndarray) -> np.ndarray:
        return pad_to(q, self.ctx.n_vocab)
