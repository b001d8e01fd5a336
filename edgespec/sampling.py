"""Sampling parameters and the pure-numpy maths that turns logits into a distribution.

The transform order is Hugging Face's: temperature, then top-k, top-p, min-p. The same function
gives the target's ``p`` and the draft's ``q``, which is what exact rejection sampling needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgespec.grammar import FREE, Grammar
from edgespec.options import GenerationOptions, check

_DEFAULT = GenerationOptions()


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy (argmax); the rest is then ignored
    (but for ``grammar``, which holds at any temperature).

    Built from :class:`~edgespec.options.GenerationOptions`, whose defaults (llama.cpp's) and
    rules these share.
    """

    temperature: float = _DEFAULT.temperature
    top_k: int = _DEFAULT.top_k
    """Keep the k most likely tokens; 0 keeps all."""
    top_p: float = _DEFAULT.top_p
    """Keep the smallest set of tokens whose probability adds up to top_p; 1 keeps all."""
    min_p: float = _DEFAULT.min_p
    """Drop tokens less likely than min_p times the most likely one; 0 keeps all."""
    seed: int | None = None
    """Seed of the random generator; None draws one."""
    grammar: Grammar = FREE
    """What may be said next: the target's distribution is the one its mask leaves, and the
    proposers guess under the same mask (:mod:`edgespec.grammar`)."""

    def __post_init__(self) -> None:
        for name in ("temperature", "top_k", "top_p", "min_p", "seed"):
            check(name, getattr(self, name))  # the rules of GenerationOptions, written once there

    @property
    def greedy(self) -> bool:
        """True when tokens are chosen by argmax."""
        return self.temperature == 0

    def rng(self) -> np.random.Generator:
        """A fresh generator seeded with ``seed``."""
        return np.random.default_rng(self.seed)


GREEDY = SamplingParams(temperature=0.0)


def probabilities(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The distribution to sample from: a float64 vector over the vocabulary that sums to 1."""
    if params.greedy:
        p = np.zeros(logits.shape[-1])
        p[int(np.argmax(logits))] = 1.0
        return p
    x = logits.astype(np.float64) / params.temperature
    if 0 < params.top_k < x.size:
        kth = np.partition(x, -params.top_k)[-params.top_k]
        x[x < kth] = -np.inf
    x -= x.max()
    p = np.exp(x)
    p /= p.sum()
    if params.top_p < 1:
        p = _top_p(p, params.top_p)
    if params.min_p > 0:
        p[p < params.min_p * p.max()] = 0.0
        p /= p.sum()
    return p


def _top_p(p: np.ndarray, top_p: float) -> np.ndarray:
    # Sorting 150k probabilities per row is slow; partition the top k, and widen k until the
    # kept mass reaches top_p. The result is the same as a full sort.
    n = p.size
    k = min(64, n)
    while True:
        idx = np.argpartition(-p, k - 1)[:k] if k < n else np.arange(n)
        order = idx[np.argsort(-p[idx], kind="stable")]
        cut = int(np.searchsorted(np.cumsum(p[order]), top_p))
        if cut < k or k == n:
            keep = order[: cut + 1]
            break
        k = min(k * 4, n)
    out = np.zeros_like(p)
    out[keep] = p[keep]
    out /= out.sum()
    return out


def sample(p: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token id from the distribution ``p`` (need not be normalised)."""
    cdf = np.cumsum(p)
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(i, p.size - 1)
