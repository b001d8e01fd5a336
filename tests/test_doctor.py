"""The doctor: its forecast from measured costs (docs/design.md's CPU figures, and a GPU-like flat
curve), how the face phrases it, and loading a pair for the diagnosis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgespec.cli.doctor import forecast_line
from edgespec.costs import CostModel
from edgespec.diagnosis import gpu_backends, load, offloaded_layers, weight_buffers
from edgespec.forecast import (
    PAYS,
    Speedup,
    draft_speedup,
    drafting_s,
    forecast,
    lookup_ceiling,
    speedups,
)
from edgespec.llama import Model

STEP = 0.0315
CPU_UNITS = {1: 1.0, 2: 1.74, 4: 2.9, 8: 6.7, 12: 8.3, 16: 7.8, 24: 13.5, 32: 13.3, 64: 23.6}


def cpu(draft_ratio: float | None = 0.6) -> CostModel:
    return CostModel({n: u * STEP for n, u in CPU_UNITS.items()}, draft_ratio * STEP if draft_ratio else None)


def test_a_step_is_worth_its_expected_tokens_over_verifying_and_drafting_them() -> None:
    # Verifying 1, 2, 3 tokens: 1, 1, 1.5 s; drafting one token 0.1 s, catching up on two 0.15 s.
    costs = CostModel({1: 1.0, 2: 1.0, 3: 1.5}, 0.1, {1: 0.1, 2: 0.15})
    rates = np.array([0.5, 0.5])
    # k = 1: the catch-up is two tokens when the last step's one guess was kept (1/2), else one.
    # k = 2: two tokens when both were kept (1/4); and one more draft step.
    assert drafting_s(costs, rates) == pytest.approx([0.0, 0.125, 0.25 * 0.15 + 0.75 * 0.1 + 0.1])
    expected = [1.0, 1.5 / (1.0 + 0.125), 1.75 / (1.5 + 0.2125)]
    assert speedups(costs, rates, drafting_s(costs, rates)) == pytest.approx(expected)
    assert draft_speedup(costs, 0.5, k_max=2) == Speedup(pytest.approx(expected[1]), 1)


def test_the_design_cpu_pair_cannot_pay_with_a_draft() -> None:
    costs = cpu()
    assert not draft_speedup(costs, 1.0).pays  # not even if every guess were kept
    assert draft_speedup(costs, 0.9) == Speedup(1.0, 0)
    ceiling = lookup_ceiling(costs)
    assert ceiling.k == 63 and ceiling.speedup == pytest.approx(64 / 23.6)  # 63 guesses: a batch of 64
    f = forecast(costs)
    assert f.lookup.pays and f.draft_perfect is not None and not f.draft_perfect.pays
    assert (
        forecast_line(f)
        == "a draft model cannot pay on this device; lookup can reach up to 2.7 x on copy-heavy text"
    )


def test_a_flat_verification_curve_lets_the_draft_pay() -> None:
    flat = CostModel({1: STEP, 2: STEP, 4: 1.05 * STEP, 8: 1.1 * STEP, 16: 1.3 * STEP}, 0.1 * STEP)
    typical = draft_speedup(flat, 0.8)
    assert typical.speedup > 2 and 2 <= typical.k <= 16
    f = forecast(flat)
    assert f.draft_typical == typical and f.acceptance == 0.8
    line = forecast_line(f)
    assert line.startswith(f"a draft model can reach about {typical.speedup:.1f} x at 80% acceptance")
    assert f"({typical.k} tokens a step;" in line
    assert line.endswith("lookup can reach up to 12.3 x on copy-heavy text")


def test_a_draft_that_pays_only_when_every_guess_is_kept() -> None:
    # On the compute-bound CPU even a draft five times cheaper pays only on copies it gets all right.
    f = forecast(cpu(0.2))
    assert f.draft_perfect is not None and f.draft_perfect.pays
    assert f.draft_typical is not None and not f.draft_typical.pays
    assert forecast_line(f).startswith(
        f"a draft model pays only at very high acceptance (at most {f.draft_perfect.speedup:.1f} x"
    )


def test_without_a_draft_and_with_timing_noise() -> None:
    noisy = CostModel({1: STEP, 2: 0.5 * STEP, 64: 0.05 * STEP})  # n tokens cheaper than one: noise
    assert lookup_ceiling(noisy) == Speedup(64.0, 63)
    f = forecast(noisy)
    assert f.draft_typical is None and f.draft_perfect is None
    assert forecast_line(f).startswith("no draft model given; lookup can reach up to 64.0 x")
    linear = forecast(CostModel({1: STEP, 2: 2 * STEP, 8: 8 * STEP}))
    assert linear.lookup == Speedup(1.0, 0) and not linear.lookup.pays
    assert forecast_line(linear, "the draft cannot be used with this target") == (
        "the draft cannot be used with this target; "
        "lookup cannot pay either (verifying n tokens costs n steps)"
    )


def test_a_gain_within_the_noise_does_not_pay() -> None:
    assert not Speedup(PAYS, 3).pays and Speedup(PAYS + 0.01, 3).pays


def test_gpu_backends_are_read_from_system_info() -> None:
    assert gpu_backends("CPU : AVX2 = 1 | OPENMP = 1 |") == ()
    assert gpu_backends("CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : AVX2 = 1") == ("CUDA",)
    assert gpu_backends("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1") == ("Metal",)


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


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGESPEC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every model llama.cpp loads from now on: (file name, n_gpu_layers)."""
    seen: list[tuple[str, int]] = []
    real_init = Model.__init__

    def init(self: Model, path: str | Path, *, n_gpu_layers: int = 0, **options: bool) -> None:
        seen.append((Path(path).name, n_gpu_layers))
        real_init(self, path, n_gpu_layers=n_gpu_layers, **options)

    monkeypatch.setattr(Model, "__init__", init)
    return seen


@pytest.mark.usefixtures("fresh_cache")
def test_loading_checks_and_measures_each_model_once_with_the_gpu_setting(
    tiny: dict[str, Path], loads: list[tuple[str, int]]
) -> None:
    # -1 asks for every layer on the GPU: a CPU-only build ignores it, but it must reach llama.cpp.
    loaded = load(tiny["target"], tiny["draft-noisy"], 1, -1)
    assert sorted(loads) == sorted([(tiny["target"].name, -1), (tiny["draft-noisy"].name, -1)])
    assert loaded.incompatibility is None
    assert loaded.costs.draft_s is not None and loaded.costs.draft_s > 0
    assert loaded.forecast.draft_typical is not None
    assert loaded.weight_buffers_mib  # from llama.cpp's log, for both models


@pytest.mark.usefixtures("fresh_cache")
def test_an_incompatible_draft_is_reported_and_the_target_measured_alone(
    tiny: dict[str, Path], loads: list[tuple[str, int]]
) -> None:
    loaded = load(tiny["target"], tiny["draft-othervocab"], 1, 0)
    assert [name for name, _ in loads] == [tiny["target"].name, tiny["draft-othervocab"].name]
    assert loaded.incompatibility is not None and loaded.incompatibility.startswith("token 10 differs")
    assert loaded.costs.draft_s is None and loaded.forecast.draft_typical is None
    assert loaded.costs.verify(1) > 0


@pytest.mark.real
def test_the_real_pair_is_loaded_once_checked_and_forecast(
    real_paths: dict[str, Path], loads: list[tuple[str, int]]
) -> None:
    """The user's cache: costs measured before are reused, as ``doctor`` reuses them."""
    loaded = load(real_paths["target"], real_paths["draft"], None, 0)
    assert sorted(loads) == sorted([(real_paths["target"].name, 0), (real_paths["draft"].name, 0)])
    assert loaded.incompatibility is None  # 151,936 tokens compared from id 5 on
    assert loaded.costs.draft_s is not None and loaded.costs.draft_s > 0
    f = loaded.forecast
    assert f.draft_perfect is not None and f.draft_typical is not None
    assert f.draft_perfect.speedup >= f.draft_typical.speedup >= 1.0 and f.lookup.speedup >= 1.0
