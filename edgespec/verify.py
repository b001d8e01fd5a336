"""Verification: given the target's logits over ``[last, *draft]``, how many guesses to keep.

``p`` is the target's distribution and ``q`` the draft's, both after the same sampling transform.
Each function returns ``(n_accepted, token)``: the first ``n_accepted`` draft tokens are kept and
``token`` is the target's own choice after them, so every step yields at least one token.

Three exact rules:

- greedy: accept while the draft equals the target's argmax;
- sample-and-match: sample the target at each row, accept while the sample equals the guess. It
  needs no ``q`` and suits lookup drafts;
- rejection sampling: accept guess ``x`` with probability ``min(1, p(x)/q(x))``, else resample from
  ``norm(max(p - q, 0))``. It accepts more than sample-and-match when ``q`` is a real draft model.
  A row without ``q`` (a copied guess, chosen without randomness) is a one-hot ``q`` at ``x``: accept
  with ``p(x)``, else resample from ``p`` without ``x``, which is sample-and-match for that row. So a
  proposal that joins copied and drafted guesses is verified exactly row by row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgespec.sampling import SamplingParams, probabilities, sample


def verify_greedy(logits: np.ndarray, draft: Sequence[int]) -> tuple[int, int]:
    """Accept while each guess is the target's argmax."""
    choices = logits.argmax(axis=1)
    n = 0
    while n < len(draft) and choices[n] == draft[n]:
        n += 1
    return n, int(choices[n])


def verify_match(
    logits: np.ndarray, draft: Sequence[int], params: SamplingParams, rng: np.random.Generator
) -> tuple[int, int]:
    """Sample the target row by row; accept while the sample equals the guess."""
    for i in range(len(draft) + 1):
        token = sample(probabilities(logits[i], params), rng)
        if i == len(draft) or token != draft[i]:
            return i, token
    raise AssertionError("unreachable")


def accept_probability(p: np.ndarray, q: np.ndarray | None, x: int) -> float:
    """min(1, p(x)/q(x)); a guess the draft gave no mass is accepted only if p(x) > 0. ``q`` None
    is one-hot at ``x``."""
    if q is None:
        return float(p[x])
    if q[x] <= 0:
        return 1.0 if p[x] > 0 else 0.0
    return float(min(1.0, p[x] / q[x]))


def residual(p: np.ndarray, q: np.ndarray | None, x: int) -> np.ndarray:
    """norm(max(p - q, 0)), where a rejected guess ``x`` resamples from; p itself if that is
    empty. ``q`` None is one-hot at ``x``: p without x."""
    if q is None:
        r = p.copy()
        r[x] = 0.0
    else:
        r = np.maximum(p - q, 0.0)
    total = r.sum()
    return r / total if total > 0 else p


def verify_rejection(
    logits: np.ndarray,
    draft: Sequence[int],
    q: Sequence[np.ndarray | None],
    params: SamplingParams,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Speculative sampling (Leviathan et al., Chen et al.): exact in distribution."""
    for i, x in enumerate(draft):
        p = probabilities(logits[i], params)
        if rng.random() >= accept_probability(p, q[i], x):
            return i, sample(residual(p, q[i], x), rng)
    return len(draft), sample(probabilities(logits[len(draft)], params), rng)


def verify(
    logits: np.ndarray,
    draft: Sequence[int],
    q: Sequence[np.ndarray | None] | None,
    params: SamplingParams,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Pick the exact rule: greedy; rejection sampling when ``q`` is known; else sample-and-match."""
    if params.greedy:
        return verify_greedy(logits, draft)
    if q is not None:
        return verify_rejection(logits, draft, q, params, rng)
    return verify_match(logits, draft, params, rng)
