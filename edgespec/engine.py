"""The one hot loop: propose, verify in one batch, keep the target's cache consistent.

Invariant: the target's cache holds ``history[:target.n_past]``, at least all but the last token;
the tokens after it are pending and go first in the next verification batch. Usually one token is
pending; more where a recurrent state could only be cut back to a checkpoint before the last
batch (:class:`~edgespec.llama.Context`), so its accepted tokens are decoded again with the next.
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
        self,
        history: Sequence[int],
        max_k: int,
        params: SamplingParams,
        rng: np.random.Generator,
        n_pending: int = 1,
    ) -> Proposal:
        """A proposal of at most ``max_k`` tokens (possibly none), verified in one batch after the
        ``n_pending`` last tokens of ``history``."""
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
        """The token history; the target cache holds all but its pending tokens."""

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
        keep = self.target.truncate(common_prefix(self.history[:-1], prompt[:-1]))
        self.history = self.history[:keep]  # what the cache holds, should the decode fail
        if len(prompt) - 1 > keep:
            try:
                self.target.decode(prompt[keep:-1], keep, 0)
            except BaseException:
                # Stopped midway (Cancelled, Ctrl-C): keep the chunks read, one token pending, so
                # that the next prompt sharing them reads only the rest.
                self.history = list(prompt[: self.target.n_past + 1])
                raise
        self.target.snapshot()  # a recurrent state: the next turn or the same prompt comes back here
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

        No batch is longer than ``max_draft + 1`` tokens, pending ones included. Under a
        constraint (``params.grammar``) every verified row is masked by it before verifying, so
        the target's distribution is the masked one, and the grammar follows the history."""
        history, target = self.history, self.target
        planner.begin()
        while max_new > 0 and len(history) <= target.n_ctx:
            t0 = perf_counter()
            pending = history[target.n_past :]
            max_k = min(max_new - 1, target.n_ctx - len(history), max_draft + 1 - len(pending))
            proposal = planner.propose(history, max_k, params, rng, len(pending))
            t1 = perf_counter()
            rows = len(proposal.tokens) + 1
            logits = target.decode([*pending, *proposal.tokens], target.n_past, rows)
            logits = params.grammar.mask(logits, proposal.tokens)  # the target's constrained rows
            n_accepted, token = verify(logits, proposal.tokens, proposal.q, params, rng)
            target.truncate(len(history) + n_accepted)
            accepted = [*proposal.tokens[:n_accepted], token]
            history.extend(accepted)
            params.grammar.advance(accepted)
            max_new -= len(accepted)
            planner.observe(proposal, n_accepted, t1 - t0, perf_counter() - t1)
            yield Step(accepted, proposal, n_accepted)
