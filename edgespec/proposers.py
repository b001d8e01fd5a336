"""Proposers guess the next tokens; the target checks them: what every proposal is, and the draft
model (the lookup is in :mod:`edgespec.lookup`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgespec.llama import Context
from edgespec.sampling import SamplingParams, probabilities, sample


@dataclass(frozen=True)
class Proposal:
    """Guessed tokens, who guessed them, and what the planner and verifier need to know.

    A proposal may join proposers (a copy continued by the draft model, or a draft extended by a
    copy); each row then says where it came from through ``confidence`` and ``match``.
    """

    tokens: list[int]
    source: str
    """``"none"``, ``"draft"``, ``"lookup"``, or two joined in row order (``"lookup+draft"``)."""
    q: Sequence[np.ndarray | None] | None = None
    """Per guess, the draft's distribution after the sampling transform (rejection sampling); a
    None row is a copied guess, which has no distribution. None when sampling is greedy or every
    guess is copied (sample-and-match)."""
    confidence: Sequence[float] = ()
    """Per guess: the draft's top probability for a drafted guess, 0 for a copied one."""
    match: Sequence[int] = ()
    """Per guess: for a copied guess, how many tokens of context matched where it was copied from
    (it grows by one along a copy); 0 for a drafted guess."""
    forced: Sequence[bool] = ()
    """Per guess: True for a token the constraint forces (the only one its mask allows, so it is
    kept whenever the guesses before it are); empty when none is."""

    def is_forced(self, i: int) -> bool:
        """Whether guess ``i`` is a token the constraint forces."""
        return bool(self.forced) and self.forced[i]

    @property
    def match_len(self) -> int:
        """The match length of the first copied guess (0 if none was copied)."""
        return next((m for m in self.match if m), 0)


NO_PROPOSAL = Proposal([], "none")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):  # the usual case, compared in C
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if list(a[lo:mid]) == list(b[lo:mid]):
            lo = mid
        else:
            hi = mid
    return lo


Plan = Callable[[int, float], int]
"""Called as ``plan(i, top)`` once the draft has guess ``i`` and its top probability; returns how many
guesses the proposal should hold: ``i`` or less stops before guess ``i``, ``i + 1`` keeps it and
stops, more keeps it and drafts on."""


class DraftProposer(Protocol):
    """A proposer that drafts token by token under a :data:`Plan`: the draft model, or the target's
    own MTP layers (:class:`~edgespec.mtp.MtpDraft`). The planner weighs each by the same rule."""

    name: str
    continues_copies: bool
    """Whether it can draft on from guesses the target has not verified (a copy): the MTP layers
    cannot, since they read each token with the target's hidden row, which exists only once the
    target has decoded it."""

    def lag(self, history: Sequence[int]) -> int:
        """Tokens it would decode to catch up with ``history`` before its first guess."""
        ...

    def propose(
        self,
        history: Sequence[int],
        k: int,
        params: SamplingParams,
        rng: np.random.Generator,
        plan: Plan | None = None,
        verified: int | None = None,
    ) -> Proposal:
        """Up to ``k`` guesses, as long as ``plan`` says so. ``verified``: how much of ``history``
        the target has verified (the rest are guesses a drafter continues, as after a copy)."""
        ...

    def reset(self) -> None:
        """Forget its cache (a new conversation)."""
        ...


def draft_tokens(
    history: Sequence[int],
    logits: np.ndarray,
    advance: Callable[[list[int]], np.ndarray],
    k: int,
    params: SamplingParams,
    rng: np.random.Generator,
    plan: Plan,
    pad: Callable[[np.ndarray], np.ndarray],
    source: str,
) -> Proposal:
    """Draft up to ``k`` tokens after ``history`` from the logits of the first, ``advance(tokens)``
    reading guesses and giving the logits after the last, asking ``plan`` after each guess.

    Greedy targets get the argmax; sampled targets a sample from the transformed distribution
    (kept, padded to the target's vocabulary by ``pad``, for rejection sampling). Under a
    constraint the drafter drafts under its mask, and the tokens the constraint forces are taken as
    they are (asking the plan with a confidence of 1), without a step of their own: they are read
    with the next drafted guess, in one call."""
    draft = _Drafted()
    unseen: list[int] = []  # guesses the drafter has not read yet
    with params.grammar.at(history) as grammar:
        while len(draft.tokens) < k:
            forced = grammar.forced(k - len(draft.tokens))
            for token in forced:
                if not draft.take(plan, token, 1.0, None, k, forced=True):
                    break
                grammar.push(token)
                unseen.append(token)
            if draft.stopped:
                break
            if forced:
                continue
            if unseen:
                logits = advance(unseen)
                unseen = []
            grammar.mask_row(logits)
            q: np.ndarray | None = None
            if params.greedy:
                token = int(np.argmax(logits))
                top = _top_probability(logits, token)
            else:
                q = probabilities(logits, params)
                token = sample(q, rng)
                top = float(q.max())
            if not draft.take(plan, token, top, None if q is None else pad(q), k):
                break
            grammar.push(token)
            unseen = [token]
    return draft.proposal(source, params.greedy)


def p_min_plan(k: int, p_min: float) -> Plan:
    """The fixed strategies' rule: draft up to ``k`` guesses while the top probability is at least
    ``p_min``."""
    return lambda i, top: k if top >= p_min else i


def pad_to(q: np.ndarray, n_vocab: int) -> np.ndarray:
    """``q`` over a vocabulary of ``n_vocab`` tokens (a draft's may be a few shorter or longer)."""
    if q.size == n_vocab:
        return q
    out = np.zeros(n_vocab)
    n = min(q.size, n_vocab)
    out[:n] = q[:n]
    return out


class DraftModel:
    """A small model with the target's tokenizer, drafting token by token.

    Greedy targets get the draft's argmax; sampled targets get a sample from the draft's
    transformed distribution ``q``, which is returned for rejection sampling. After each guess a
    plan decides whether to draft on; by default drafting stops when the draft's top probability
    falls below ``p_min``. The draft's KV cache follows the accepted history lazily: nothing is
    prefilled until the first proposal.
    """

    name = "draft"
    continues_copies = True

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

    def lag(self, history: Sequence[int]) -> int:
        """Tokens the draft would have to decode to catch up with ``history``."""
        return len(history) - self.ctx.reach(min(common_prefix(self.cached, history), len(history) - 1))

    def sync(self, history: Sequence[int], verified: int | None = None) -> np.ndarray:
        """Bring the cache to ``history`` and return the draft's logits for the next token.

        A recurrent draft's state is saved where the target's verified text ends (``verified``
        tokens of ``history``, by default all: the rest are guesses the draft continues), so that
        it can come back there once the target has judged what follows."""
        keep = self.ctx.truncate(min(common_prefix(self.cached, history), len(history) - 1))
        del self.cached[keep:]
        split = len(history) if verified is None else verified
        try:
            if keep < split < len(history) and self.ctx.rewind != "cache":
                self.ctx.decode(history[keep:split], keep, 0)
                self.cached.extend(history[keep:split])
                self.ctx.checkpoint()
            new = list(history[len(self.cached) :])
            logits: np.ndarray = self.ctx.decode(new, len(self.cached), 1)[0]
        except BaseException:  # a long catching up stopped midway keeps the chunks it read
            self.cached = list(history[: self.ctx.n_past])
            raise
        self.cached.extend(new)
        self.n_prefilled += len(history) - keep
        if split == len(history):
            self.ctx.checkpoint()
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

        Under a constraint the draft drafts under its mask, and the tokens the constraint forces
        are taken as they are (asking the plan with a confidence of 1), without a draft step of
        their own: they are decoded with the next drafted guess's context, in one batch.
        ``verified``: how much of ``history`` the target has verified (see :meth:`sync`)."""
        logits = self.sync(history, verified)
        plan = plan or p_min_plan(k, self.p_min)
        return draft_tokens(history, logits, self._advance, k, params, rng, plan, self._pad, self.name)

    def _advance(self, tokens: list[int]) -> np.ndarray:
        logits: np.ndarray = self.ctx.decode(tokens, len(self.cached), 1)[0]
        self.cached.extend(tokens)
        return logits

    def _pad(self, q: np.ndarray) -> np.ndarray:
        return pad_to(q, self.n_vocab_target)


class _Drafted:
    """The guesses of one drafting, and the plan's answers so far."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.qs: list[np.ndarray | None] = []
        self.confidence: list[float] = []
        self.forced: list[bool] = []
        self.stopped = False
        """The plan (or ``k``) said to stop after the last guess taken."""

    def take(
        self, plan: Plan, token: int, top: float, q: np.ndarray | None, k: int, forced: bool = False
    ) -> bool:
        """Ask the plan about one more guess; True if it is taken and drafting may go on."""
        i = len(self.tokens)
        n = plan(i, top)
        if n <= i:
            self.stopped = True
            return False
        self.tokens.append(token)
        self.qs.append(q)
        self.confidence.append(top)
        self.forced.append(forced)
        self.stopped = len(self.tokens) >= min(k, n)
        return not self.stopped

    def proposal(self, source: str, greedy: bool) -> Proposal:
        n = len(self.tokens)
        q = None if greedy or all(q is None for q in self.qs) else self.qs
        return Proposal(
            self.tokens, source, q, self.confidence, [0] * n, self.forced if any(self.forced) else ()
        )


def _top_probability(logits: np.ndarray, top: int) -> float:
    # softmax(logits)[top] without building the distribution: one float32 pass over the vocabulary.
    return float(1.0 / np.exp(logits - logits[top]).sum())
