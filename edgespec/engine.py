"""The one hot loop: propose, verify in one batch, keep the target's KV cache consistent.

Invariant: the target's cache holds ``history[:-1]``; the last token is pending and goes first in
the next verification batch. Positions derive from ``len(history)`` alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

import numpy as np

from edgespec.errors import ContextOverflowError
from edgespec.llama import Context
from edgespec.options import DRAFT_LIMIT
from edgespec.proposers import Proposal, common_prefix
from edgespec.sampling import SamplingParams
from edgespec.verify import verify


class Planner(Protocol):
    """Chooses each step's proposal, and learns from how it went."""

    def propose(
        self, history: Sequence[int], max_k: int, params: SamplingParams, rng: np.random.Generator
    ) -> Proposal:
        """A proposal of at most ``max_k`` tokens (possibly none)."""
        ...

    def observe(self, proposal: Proposal, n_accepted: int, propose_s: float, verify_s: float) -> None:
        """How many guesses the target kept, and what proposing and verifying cost."""
        ...

    def begin(self) -> None:
        """A new generation starts."""
        ...


@dataclass(frozen=True)
class Step:
    """One verification: the tokens it added to the history, and where they came from."""

    tokens: list[int]
    """Accepted guesses, then the target's own token."""
    proposal: Proposal
    n_accepted: int


class Engine:
    """Speculative decoding over one target context. Not thread-safe: one generation at a time."""

    def __init__(self, target: Context) -> None:
        self.target = target
        self.history: list[int] = []
        """The token history; the target cache holds all but its last token."""

    def reset(self) -> None:
        """Forget the history and empty the target's cache (a new conversation)."""
        self.target.clear()
        self.history = []

    def start(self, prompt: Sequence[int]) -> int:
        """Make ``prompt`` the history, prefilling only what the cache does not already hold.

        Returns the number of tokens prefilled. A cached prefix (an earlier turn of the same
        conversation) is reused as it is.
        """
        if not prompt:
            raise ValueError("the prompt has no tokens")
        if len(prompt) > self.target.n_ctx:
            raise ContextOverflowError(
                f"the prompt has {len(prompt)} tokens but the context holds {self.target.n_ctx}; "
                "shorten it or raise --ctx-size"
            )
        keep = common_prefix(self.history[:-1], prompt[:-1])
        self.target.truncate(keep)
        self.history = self.history[:keep]  # what the cache holds, should the decode fail
        if len(prompt) - 1 > keep:
            self.target.decode(prompt[keep:-1], keep, 0)
        self.history = list(prompt)
        return len(prompt) - 1 - keep

    def steps(
        self,
        planner: Planner,
        params: SamplingParams,
        rng: np.random.Generator,
        max_new: int,
        max_draft: int = DRAFT_LIMIT,
    ) -> Iterator[Step]:
        """Generate until ``max_new`` tokens or a full context; the caller stops at EOS.

        No step guesses more than ``max_draft`` tokens."""
        history, n_ctx = self.history, self.target.n_ctx
        planner.begin()
        while max_new > 0 and len(history) <= n_ctx:
            t0 = perf_counter()
            max_k = min(max_new - 1, n_ctx - len(history), max_draft)
            proposal = planner.propose(history, max_k, params, rng)
            t1 = perf_counter()
            rows = len(proposal.tokens) + 1
            logits = self.target.decode([history[-1], *proposal.tokens], len(history) - 1, rows)
            n_accepted, token = verify(logits, proposal.tokens, proposal.q, params, rng)
            self.target.truncate(len(history) + n_accepted)
            accepted = [*proposal.tokens[:n_accepted], token]
            history.extend(accepted)
            max_new -= len(accepted)
            planner.observe(proposal, n_accepted, t1 - t0, perf_counter() - t1)
            yield Step(accepted, proposal, n_accepted)
