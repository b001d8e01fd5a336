"""The curated model pairs shipped in ``edgespec/models/pairs.toml``.

Users can add their own pairs (or override shipped ones) in a TOML file of the same shape named by
``EDGESPEC_PAIRS``; its ``default`` key, when present, changes the default pair.
"""

from __future__ import annotations

import os
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

ROLES = ("target", "draft")


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

    def __str__(self) -> str:
        return f"{self.repo}/{self.file}"


@dataclass(frozen=True)
class PairSpec:
    """A curated target/draft pair; a target with MTP layers may come alone (it drafts for itself)."""

    name: str
    description: str
    license: str
    target: ModelRef
    draft: ModelRef | None

    def model(self, role: str) -> ModelRef | None:
        """The target or the draft (None for a pair without one), by role name."""
        if role not in ROLES:
            raise ValueError(f"role must be 'target' or 'draft', got {role!r}")
        ref: ModelRef | None = getattr(self, role)
        return ref


def _model(where: str, d: dict[str, Any]) -> ModelRef:
    try:
        m = d.get("mirror")
        mirror = None
        if m is not None:
            mirror = PypiMirror(tuple(m["packages"]), m["member"], d["sha256"], d["size"])
        return ModelRef(d["repo"], d["file"], d.get("size"), d.get("sha256"), mirror)
    except (KeyError, TypeError) as exc:
        raise EdgespecError(f"{where}: a model needs 'repo' and 'file' (missing {exc})") from exc


def _parse(text: str, where: str) -> tuple[str | None, dict[str, PairSpec]]:
    try:
        data = tomllib.loads(text)
        out = {}
        for name, p in data.get("pairs", {}).items():
            out[name] = PairSpec(
                name,
                p.get("description", ""),
                p.get("license", "unknown"),
                _model(where, p["target"]),
                _model(where, p["draft"]) if "draft" in p else None,
            )
    except tomllib.TOMLDecodeError as exc:
        raise EdgespecError(f"{where} is not valid TOML: {exc}") from exc
    except (KeyError, AttributeError) as exc:
        raise EdgespecError(f"{where}: every pair needs a target (missing {exc})") from exc
    default = data.get("default")
    return (str(default) if default is not None else None), out


@cache
def _load(extra: str | None) -> tuple[str, dict[str, PairSpec]]:
    text = resources.files("edgespec").joinpath("models/pairs.toml").read_text("utf-8")
    default, all_pairs = _parse(text, "edgespec/models/pairs.toml")
    if extra:
        try:
            extra_text = Path(extra).read_text("utf-8")
        except OSError as exc:
            raise EdgespecError(f"cannot read EDGESPEC_PAIRS={extra}: {exc.strerror or exc}") from exc
        extra_default, extra_pairs = _parse(extra_text, extra)
        all_pairs.update(extra_pairs)
        default = extra_default or default
    if default not in all_pairs:
        raise EdgespecError(f"the default pair {default!r} is not in the registry")
    return str(default), all_pairs


def _registry() -> tuple[str, dict[str, PairSpec]]:
    return _load(os.environ.get("EDGESPEC_PAIRS") or None)


def pairs() -> dict[str, PairSpec]:
    """All curated pairs by name (the shipped ones plus any from ``EDGESPEC_PAIRS``)."""
    return dict(_registry()[1])


def default_pair() -> PairSpec:
    """The pair used when no model is named."""
    name, all_pairs = _registry()
    return all_pairs[name]


def find_pair(name: str) -> PairSpec | None:
    """The pair called ``name``, or None."""
    return _registry()[1].get(name)


def get_pair(name: str) -> PairSpec:
    """A pair by name; the error lists the names that exist."""
    all_pairs = _registry()[1]
    if name not in all_pairs:
        raise EdgespecError(f"unknown pair {name!r}; known pairs: {', '.join(sorted(all_pairs))}")
    return all_pairs[name]
