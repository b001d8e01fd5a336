"""The tokens a constraint forces, as guesses: the only ones its mask allows, so each is kept
whenever the guesses before it are (a keep probability of 1).

Forced tokens are what SGLang's jump-forward decoding emits without asking the model. Here they are
guesses verified in the same batch as the others, so the output is exactly what the masked target
gives, and the target still pays a batch row for each: on a compute-bound CPU that row costs
a good part of a step, on a memory-bound device almost nothing. The planner takes a run of them
where their rows pay at the rate generation reaches, then weighs its other options after them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgespec.proposers import NO_PROPOSAL, Proposal
from edgespec.sampling import SamplingParams


def forced_proposal(tokens: Sequence[int]) -> Proposal:
    """Forced tokens as a proposal (source ``"grammar"``)."""
    n = len(tokens)
    return Proposal(list(tokens), "grammar", None, [1.0] * n, [0] * n, [True] * n)


def forced_lead(
    history: Sequence[int], max_k: int, curve: np.ndarray, rate: float, params: SamplingParams
) -> Proposal:
    """The forced tokens after ``history`` worth verifying: as many of them as maximise the tokens
    they add minus ``rate`` times the seconds their rows add to the batch (``curve[j]``: seconds
    to verify j guesses)."""
    with params.grammar.at(history) as grammar:
        tokens = grammar.forced(max_k)
    if not tokens:
        return NO_PROPOSAL
    j = np.arange(len(tokens) + 1)
    value = j - rate * (curve[: j.size] - curve[0])
    return forced_proposal(tokens[: int(np.argmax(value))])
