"""scripts/make_random_model.py: the real shapes' sizes, and random files llama.cpp loads (at tiny sizes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _module():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("make_random_model", SCRIPTS / "make_random_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _module()
H = sys.modules["make_tiny_hybrids"]


@pytest.mark.parametrize(
    ("shape", "billions"),
    [
        ("qwen3.5-0.8b", 0.752),  # the text model; the 0.8B of the name counts the vision tower too
        ("qwen3.5-2b", 1.882),
        ("lfm2-1.2b", 1.170),  # LiquidAI gives 1,170,340,608
        ("granite-4.0-h-micro", 3.191),
    ],
)
def test_shapes_have_the_real_parameter_counts(shape: str, billions: float) -> None:
    arch, dims = R.SHAPES[shape]
    n = sum(int(np.prod(init.shape)) for init in H.layout(arch, dims).values())
    assert n / 1e9 == pytest.approx(billions, abs=0.001)


def test_mtp_shapes_add_one_block() -> None:
    plain, mtp = (H.layout(*R.SHAPES[s]) for s in ("qwen3.5-0.8b", "qwen3.5-0.8b-mtp"))
    extra = set(mtp) - set(plain)
    assert extra and all(name.startswith("blk.24.") for name in extra)
    assert "blk.24.nextn.eh_proj.weight" in extra


@pytest.mark.parametrize("name", ["lfm2", "qwen35-mtp", "granitehybrid"])
def test_random_files_load_and_decode(name: str, tmp_path: Path) -> None:
    arch, dims, _ = H.ARCHS[name]
    small = H.Dims(**{**dims.__dict__, "n_vocab": 1000, "tied": True})
    path = tmp_path / f"random-{name}.gguf"
    R.write_random(path, arch, small)
    report = R.check(path, n_threads=1, n_gpu_layers=0, quiet=False)
    assert "decode 1 token" in report
    assert ("n_rs_seq=8" in report) is (arch != "granitehybrid")
