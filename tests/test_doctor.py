"""The doctor's forecast from measured costs: docs/design.md's CPU figures, and a GPU-like flat curve."""

from __future__ import annotations

import pytest

from edgespec.cli.doctor import (
    draft_speedup,
    forecast,
    gpu_backends,
    lookup_ceiling,
    offloaded_layers,
    weight_buffers,
)
from edgespec.costs import CostModel

STEP = 0.0315
CPU_UNITS = {1: 1.0, 2: 1.74, 4: 2.9, 8: 6.7, 12: 8.3, 16: 7.8, 24: 13.5, 32: 13.3, 64: 23.6}


def cpu(draft_ratio: float | None = 0.6) -> CostModel:
    return CostModel({n: u * STEP for n, u in CPU_UNITS.items()}, draft_ratio * STEP if draft_ratio else None)


def test_the_design_cpu_pair_cannot_pay_with_a_draft() -> None:
    costs = cpu()
    assert draft_speedup(costs, 1.0)[0] < 1.01  # not even if every guess were kept
    assert draft_speedup(costs, 0.9) == (1.0, 0)
    ceiling, n = lookup_ceiling(costs)
    assert n == 64 and ceiling == pytest.approx(64 / 23.6)
    assert (
        forecast(costs)
        == "a draft model cannot pay on this device; lookup can reach up to 2.7 x on copy-heavy text"
    )


def test_a_flat_verification_curve_lets_the_draft_pay() -> None:
    flat = CostModel({1: STEP, 2: STEP, 4: 1.05 * STEP, 8: 1.1 * STEP, 16: 1.3 * STEP}, 0.1 * STEP)
    speed, k = draft_speedup(flat, 0.8)
    assert speed > 2 and 2 <= k <= 16
    line = forecast(flat)
    assert line.startswith("a draft model can reach about ") and "at 80% acceptance" in line
    assert line.endswith("lookup can reach up to 12.3 x on copy-heavy text")


def test_without_a_draft_and_with_timing_noise() -> None:
    noisy = CostModel({1: STEP, 2: 0.5 * STEP, 64: 0.05 * STEP})  # n tokens cheaper than one: noise
    assert lookup_ceiling(noisy) == (64.0, 64)
    assert forecast(noisy).startswith("no draft model given; lookup can reach up to 64.0 x")
    linear = CostModel({1: STEP, 2: 2 * STEP, 8: 8 * STEP})
    assert forecast(linear, "the draft cannot be used with this target") == (
        "the draft cannot be used with this target; "
        "lookup cannot pay either (verifying n tokens costs n steps)"
    )


def test_gpu_backends_are_read_from_system_info() -> None:
    assert gpu_backends("CPU : AVX2 = 1 | OPENMP = 1 |") == []
    assert gpu_backends("CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : AVX2 = 1") == ["CUDA"]
    assert gpu_backends("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1") == ["Metal"]


def test_gpu_use_is_read_from_the_load_log() -> None:
    cuda_log = [
        "load_tensors: offloading 28 repeating layers to GPU",
        "load_tensors: offloaded 29/29 layers to GPU",
        "load_tensors:        CUDA0 model buffer size =  1034.56 MiB",
        "load_tensors:   CPU_Mapped model buffer size =   292.41 MiB",
    ]
    assert offloaded_layers(cuda_log) == "29/29"
    assert weight_buffers(cuda_log) == {"CUDA0": 1034.56, "CPU_Mapped": 292.41}
    assert offloaded_layers(["load_tensors:   CPU_Mapped model buffer size =     0.44 MiB"]) is None
