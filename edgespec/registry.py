"""The curated model pairs shipped in ``edgespec/models/pairs.toml``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from edgespec.errors import EdgespecError
from edgespec.mirror import PypiMirror
from edgespec.paths import cache_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class ModelRef:
    """One model file on the Hub, with what is known to check it."""

    repo: str
    file: str
    size: int | None = None
    sha256: str | None = None
    mirror: PypiMirror | None = None

    def mirror_path(self) -> Path:
        """Where a copy assembled from the PyPI mirror is kept."""
        return cache_dir() / "mirror" / self.repo / self.file


@dataclass(frozen=True)
class PairSpec:
    """A curated target/draft pair."""

    name: str
    description: str
    license: str
    target: ModelRef
    draft: ModelRef


def _model(d: dict[str, Any]) -> ModelRef:
    m = d.get("mirror")
    mirror = None
    if m is not None:
        mirror = PypiMirror(tuple(m["packages"]), m["member"], d["sha256"], d["size"])
    return ModelRef(d["repo"], d["file"], d.get("size"), d.get("sha256"), mirror)


@cache
def _load() -> tuple[str, dict[str, PairSpec]]:
    text = resources.files("edgespec").joinpath("models/pairs.toml").read_text("utf-8")
    data = tomllib.loads(text)
    pairs = {
        name: PairSpec(name, p["description"], p["license"], _model(p["target"]), _model(p["draft"]))
        for name, p in data["pairs"].items()
    }
    return data["default"], pairs


def pairs() -> dict[str, PairSpec]:
    """All curated pairs by name."""
    return dict(_load()[1])


def default_pair() -> PairSpec:
    """The pair used when no model is named."""
    name, all_pairs = _load()
    return all_pairs[name]


def get_pair(name: str) -> PairSpec:
    """A pair by name; the error lists the names that exist."""
    all_pairs = _load()[1]
    if name not in all_pairs:
        raise EdgespecError(f"unknown pair {name!r}; known pairs: {', '.join(sorted(all_pairs))}")
    return all_pairs[name]
