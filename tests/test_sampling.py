"""Sampling transforms against straightforward full-sort references."""

from __future__ import annotations

import numpy as np
import pytest

from edgespec.errors import InvalidParameterError
from edgespec.sampling import SamplingParams, probabilities, sample


def reference(logits: np.ndarray, p: SamplingParams) -> np.ndarray:
    x = logits.astype(np.float64) / p.temperature
    order = np.argsort(-x, kind="stable")
    keep = np.ones(x.size, bool)
    if p.top_k:
        keep[order[p.top_k :]] = False
    y = np.where(keep, np.exp(x - x.max()), 0.0)
    y /= y.sum()
    if p.top_p < 1:
        c = np.cumsum(y[order])
        cut = int(np.searchsorted(c, p.top_p))
        mask = np.zeros(x.size, bool)
        mask[order[: cut + 1]] = True
        y = np.where(mask, y, 0.0)
        y /= y.sum()
    if p.min_p:
        y[y < p.min_p * y.max()] = 0
        y /= y.sum()
    return y


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(1.0, 0, 1.0, 0.0),
        SamplingParams(0.7, 40, 0.95, 0.05),
        SamplingParams(1.3, 0, 0.5, 0.0),
        SamplingParams(1.0, 5, 1.0, 0.0),
        SamplingParams(2.0, 0, 0.999, 0.0),
        SamplingParams(1.0, 0, 1.0, 0.2),
    ],
)
def test_transforms_match_full_sort_reference(params: SamplingParams) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        logits = (rng.standard_normal(5000) * 3).astype(np.float32)
        np.testing.assert_allclose(probabilities(logits, params), reference(logits, params), atol=1e-12)


def test_greedy_is_one_hot_argmax() -> None:
    logits = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    assert probabilities(logits, SamplingParams(temperature=0)).tolist() == [0, 1, 0, 0]


def test_sample_frequencies_follow_the_distribution() -> None:
    p = np.array([0.5, 0.0, 0.3, 0.2])
    rng = np.random.default_rng(0)
    counts = np.bincount([sample(p, rng) for _ in range(20000)], minlength=4) / 20000
    assert counts[1] == 0
    np.testing.assert_allclose(counts, p, atol=0.015)


@pytest.mark.parametrize(
    "kwargs, what",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 2.0}, "min_p"),
    ],
)
def test_out_of_range_parameters_are_named(kwargs: dict[str, float], what: str) -> None:
    with pytest.raises(InvalidParameterError, match=what):
        SamplingParams(**kwargs)  # type: ignore[arg-type]
