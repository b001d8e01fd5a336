"""Verification rules: the exact identity, and seeded statistical tests that can fail."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edgespec import verify as V
from edgespec.sampling import SamplingParams, sample

PLAIN = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
N = 20000
# Total variation between an empirical histogram of N draws and its source over 6 outcomes stays
# below sqrt(6 / N) / 2 * 3 ~= 0.026 (three times the expected size) with overwhelming probability.
TV_BOUND = 3 * np.sqrt(6 / N) / 2


def output_distribution(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """What one rejection-sampling position emits, computed exactly from verify.py's own pieces."""
    keep = np.array([q[x] * V.accept_probability(p, q, x) for x in range(p.size)])
    return keep + (1 - keep.sum()) * V.residual(p, q, 0)


@pytest.mark.parametrize(
    "p, q",
    [
        ([0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]),
        ([0.5, 0.5, 0.0, 0.0], [0.0, 0.1, 0.4, 0.5]),  # q = 0 where p has mass
        ([0.0, 0.0, 0.3, 0.7], [0.6, 0.4, 0.0, 0.0]),  # disjoint supports
        ([0.3, 0.3, 0.4, 0.0], [0.3, 0.3, 0.4, 0.0]),  # p == q: always accepted
        ([1.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]),
    ],
)
def test_rejection_sampling_identity_is_exact(p: list[float], q: list[float]) -> None:
    pa, qa = np.array(p), np.array(q)
    np.testing.assert_allclose(output_distribution(pa, qa), pa, atol=1e-12)


def test_identity_on_random_distributions() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.dirichlet(np.full(8, 0.3))
        q = rng.dirichlet(np.full(8, 0.3))
        q[rng.integers(8)] = 0
        q /= q.sum()
        np.testing.assert_allclose(output_distribution(p, q), p, atol=1e-12)


def test_p_equal_q_never_rejects() -> None:
    p = np.array([0.2, 0.3, 0.5])
    assert all(V.accept_probability(p, p, x) == 1.0 for x in range(3))


def tv(counts: np.ndarray, p: np.ndarray) -> float:
    return float(0.5 * np.abs(counts / counts.sum() - p).sum())


P1 = np.array([0.05, 0.40, 0.05, 0.30, 0.10, 0.10])
P2 = np.array([0.30, 0.05, 0.25, 0.05, 0.30, 0.05])
Q1 = np.array([0.40, 0.05, 0.30, 0.05, 0.10, 0.10])  # far from P1: TV(P1, Q1) = 0.6
Q2 = np.array([0.10, 0.30, 0.10, 0.30, 0.10, 0.10])


def run_rejection(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = np.log(np.stack([P1, P2, P2]) + 1e-300)
    q = np.stack([Q1, Q2])
    first, second = np.zeros(6), np.zeros(6)
    for _ in range(N):
        draft = [sample(Q1, rng), sample(Q2, rng)]
        n, token = V.verify_rejection(logits, draft, q, PLAIN, rng)
        emitted = [*draft[:n], token]
        first[emitted[0]] += 1
        if len(emitted) > 1:
            second[emitted[1]] += 1
    return first, second


def test_rejection_sampling_emits_the_target_distribution() -> None:
    first, second = run_rejection(seed=1)
    assert tv(first, P1) < TV_BOUND
    assert tv(second, P2) < TV_BOUND * 2  # fewer samples reach the second position


def broken_accept(p: np.ndarray, q: np.ndarray, x: int) -> float:
    return 1.0  # accept every guess: emits q, not p


def swapped_accept(p: np.ndarray, q: np.ndarray, x: int) -> float:
    return float(min(1.0, q[x] / p[x])) if p[x] > 0 else 1.0


@pytest.mark.parametrize("broken", [broken_accept, swapped_accept])
def test_the_statistical_test_catches_broken_acceptance(
    monkeypatch: pytest.MonkeyPatch, broken: Callable[[np.ndarray, np.ndarray, int], float]
) -> None:
    monkeypatch.setattr(V, "accept_probability", broken)
    first, _ = run_rejection(seed=1)
    assert tv(first, P1) > 4 * TV_BOUND


def run_match(seed: int, rule: Callable[..., tuple[int, int]]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = np.log(np.stack([P1, P2]))
    first = np.zeros(6)
    for _ in range(N):
        n, token = rule(logits, [1], PLAIN, rng)  # a lookup-style fixed guess
        first[1 if n else token] += 1
    return first


def test_sample_and_match_emits_the_target_distribution() -> None:
    assert tv(run_match(2, V.verify_match), P1) < TV_BOUND


def test_the_match_test_catches_a_rule_that_trusts_the_guess() -> None:
    def trusting(logits: np.ndarray, draft: list[int], params: SamplingParams, rng: np.random.Generator):  # type: ignore[no-untyped-def]
        n, token = V.verify_match(logits, draft, params, rng)
        return (1, token) if rng.random() < 0.5 else (n, token)  # accepts half the misses

    assert tv(run_match(2, trusting), P1) > 4 * TV_BOUND


def test_greedy_accepts_the_longest_agreeing_prefix() -> None:
    logits = np.zeros((4, 5))
    logits[[0, 1, 2, 3], [3, 1, 4, 2]] = 1.0
    assert V.verify_greedy(logits, [3, 1, 0]) == (2, 4)
    assert V.verify_greedy(logits, [3, 1, 4]) == (3, 2)
    assert V.verify_greedy(logits, [0]) == (0, 3)
    assert V.verify_greedy(logits[:1], []) == (0, 3)


P3 = np.array([0.10, 0.10, 0.20, 0.30, 0.15, 0.15])
COPY1, COPY3 = 1, 4  # copied guesses: fixed, with no distribution


def run_hybrid(seed: int) -> list[np.ndarray]:
    """A proposal joining proposers: a copied guess, a drafted one (sampled from Q2), a copied one.
    Returns histograms of the first, second and third emitted tokens."""
    rng = np.random.default_rng(seed)
    logits = np.log(np.stack([P1, P2, P3, P1]))
    counts = [np.zeros(6) for _ in range(3)]
    for _ in range(N):
        draft = [COPY1, sample(Q2, rng), COPY3]
        n, token = V.verify(logits, draft, [None, Q2, None], PLAIN, rng)
        for i, t in enumerate([*draft[:n], token][:3]):
            counts[i][t] += 1
    return counts


def bound(counts: np.ndarray) -> float:
    return 3 * np.sqrt(6 / counts.sum()) / 2


def test_hybrid_proposals_emit_the_target_distribution() -> None:
    # Each row's logits are fixed here, so the i-th token emitted (when the guesses before it were
    # kept) must follow row i's distribution whatever proposer guessed it.
    first, second, third = run_hybrid(seed=3)
    assert tv(first, P1) < bound(first)
    assert tv(second, P2) < bound(second)
    assert tv(third, P3) < bound(third)
    assert third.sum() > N / 20  # the test reaches the third row often enough to judge it


def test_the_hybrid_test_catches_a_copied_row_treated_as_drafted(monkeypatch: pytest.MonkeyPatch) -> None:
    # A copied guess given the uniform q (as if drafted) instead of the one-hot it is.
    real_accept, real_residual = V.accept_probability, V.residual
    uniform = np.full(6, 1 / 6)

    def accept(p: np.ndarray, q: np.ndarray | None, x: int) -> float:
        return real_accept(p, uniform if q is None else q, x)

    def residual(p: np.ndarray, q: np.ndarray | None, x: int) -> np.ndarray:
        return real_residual(p, uniform if q is None else q, x)

    monkeypatch.setattr(V, "accept_probability", accept)
    monkeypatch.setattr(V, "residual", residual)
    first, _, third = run_hybrid(seed=3)
    assert tv(first, P1) > 4 * bound(first) or tv(third, P3) > 4 * bound(third)


def test_the_hybrid_test_catches_a_residual_that_keeps_the_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Resampling a rejected copy from p itself (the copy not taken out) emits it too often.
    real_residual = V.residual
    monkeypatch.setattr(V, "residual", lambda p, q, x: p if q is None else real_residual(p, q, x))
    first, _, _ = run_hybrid(seed=3)
    assert tv(first, P1) > 4 * bound(first)
