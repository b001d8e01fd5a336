"""Which curated pairs are on disk, for ``edgespec models``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgespec.hub.resolve import local_file
from edgespec.registry import ModelRef, PairSpec, default_pair, pairs


@dataclass(frozen=True)
class LocalModel:
    """A curated file and where it lies locally, if anywhere."""

    ref: ModelRef
    path: Path | None

    @property
    def size(self) -> int | None:
        """Bytes on disk, or None when absent."""
        return self.path.stat().st_size if self.path is not None else None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return {
            "repo": self.ref.repo,
            "file": self.ref.file,
            "sha256": self.ref.sha256,
            "path": str(self.path) if self.path else None,
            "size": self.size if self.path else self.ref.size,
            "present": self.path is not None,
        }


@dataclass(frozen=True)
class PairStatus:
    """A curated pair and which of its files are present."""

    pair: PairSpec
    is_default: bool
    target: LocalModel
    draft: LocalModel | None
    """None for a target that drafts with its own MTP layers."""

    @property
    def present(self) -> bool:
        """Every file of the pair is on disk."""
        return all(m.path is not None for m in self._models())

    @property
    def size(self) -> int | None:
        """Bytes on disk of the present files (None when none is)."""
        sizes = [m.size for m in self._models() if m.size is not None]
        return sum(sizes) if sizes else None

    def _models(self) -> list[LocalModel]:
        return [self.target, *([self.draft] if self.draft is not None else [])]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return {
            "name": self.pair.name,
            "default": self.is_default,
            "description": self.pair.description,
            "license": self.pair.license,
            "present": self.present,
            "target": self.target.to_dict(),
            "draft": self.draft.to_dict() if self.draft is not None else None,
        }


def list_models() -> list[PairStatus]:
    """Every curated pair, the default first, with the local path and size of each file present."""
    default = default_pair().name
    out = [
        PairStatus(
            p,
            name == default,
            LocalModel(p.target, local_file(p.target)),
            LocalModel(p.draft, local_file(p.draft)) if p.draft is not None else None,
        )
        for name, p in pairs().items()
    ]
    return sorted(out, key=lambda s: not s.is_default)
