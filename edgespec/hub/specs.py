"""Model specs: what a spec string names, and which GGUF file of a Hub repo carries a quant.

A spec is one of:

- a local path to a ``.gguf`` file;
- a curated pair name (``qwen2.5-coder-1.5b``): its target or its draft, by role;
- ``org/repo[:QUANT]``: the repo's ``.gguf`` file whose name carries the quant (matched
  case-insensitively, as llama.cpp's ``-hf`` does; Q4_K_M when none is named);
- ``org/repo/path/file.gguf``: that file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgespec.errors import DownloadError, EdgespecError
from edgespec.registry import PairSpec, find_pair, pairs

DEFAULT_QUANTS = ("Q4_K_M", "Q4_0")
"""Tried in order when ``org/repo`` names no quant (llama.cpp's ``-hf`` default)."""
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_REPO_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<quant>[\w.-]+))?$")


@dataclass(frozen=True)
class HubSpec:
    """A model on the Hub: a repo, and either a file in it or a quant to pick one by."""

    repo: str
    file: str | None = None
    quant: str | None = None

    def __str__(self) -> str:
        if self.file is not None:
            return f"{self.repo}/{self.file}"
        return self.repo + (f":{self.quant}" if self.quant else "")


ModelSpec = Path | HubSpec | PairSpec


def parse_spec(spec: str | Path) -> ModelSpec:
    """What a model spec names: a local :class:`Path`, a :class:`HubSpec` or a curated :class:`PairSpec`."""
    if isinstance(spec, Path):
        return spec.expanduser()
    text = spec.strip()
    if not text:
        raise EdgespecError("an empty model spec was given")
    path = Path(text).expanduser()
    if path.exists():
        return path
    pair = find_pair(text)
    if pair is not None:
        return pair
    if text.startswith(("/", ".", "~")) or "\\" in text:
        return path
    parts = text.split("/")
    if len(parts) >= 3 and text.lower().endswith(".gguf") and all(parts):
        return HubSpec("/".join(parts[:2]), "/".join(parts[2:]))
    match = _REPO_RE.match(text)
    if match and not text.lower().endswith(".gguf"):
        return HubSpec(match["repo"], None, match["quant"])
    if text.lower().endswith(".gguf"):
        return path
    raise EdgespecError(
        f"cannot read the model spec {text!r}: give a .gguf path, a pair name "
        f"({', '.join(sorted(pairs()))}), org/repo[:QUANT] or org/repo/file.gguf"
    )


# ---------------------------------------------------------------------------- choosing a file


def split_parts(filename: str) -> list[str]:
    """All parts of a split GGUF file in order (``[filename]`` when it is not split)."""
    match = SPLIT_RE.search(filename)
    if match is None:
        return [filename]
    stem = filename[: match.start()]
    total = int(match[2])
    return [f"{stem}-{i:05d}-of-{total:05d}.gguf" for i in range(1, total + 1)]


def _quant_pattern(quant: str) -> re.Pattern[str]:
    # The quant as a whole word of the file name: "Q4_K" matches neither "Q4_K_M" nor "IQ4_K".
    return re.compile(rf"(?:^|[-._/]){re.escape(quant)}(?=[-.])", re.IGNORECASE)


def _model_files(files: list[str]) -> list[str]:
    # GGUF weights only (no vision projectors), first parts of split files, in a stable order.
    out = []
    for f in sorted(files):
        name = f.rsplit("/", 1)[-1].lower()
        if not name.endswith(".gguf") or "mmproj" in name:
            continue
        match = SPLIT_RE.search(f)
        if match is None or int(match[1]) == 1:
            out.append(f)
    return out


def _quant_of(filename: str) -> str:
    name = SPLIT_RE.sub(".gguf", filename.rsplit("/", 1)[-1])
    match = re.search(r"((?:I?Q\d[\w]*)|(?:[BF]F?16)|F32)\.gguf$", name, re.IGNORECASE)
    return match[1].upper() if match else name


def pick_file(files: list[str], quant: str | None, repo: str = "the repo") -> str:
    """The GGUF file of ``files`` that carries ``quant`` (Q4_K_M, else Q4_0, when None).

    Raises :class:`DownloadError` naming the quants available when none matches.
    """
    candidates = _model_files(files)
    if not candidates:
        raise DownloadError(f"{repo} holds no .gguf model file")
    wanted = (quant,) if quant else DEFAULT_QUANTS
    for q in wanted:
        pattern = _quant_pattern(q)
        matches = [f for f in candidates if pattern.search(f)]
        if matches:
            # Prefer a file at the top of the repo, then the shortest name (no "-imat" variants).
            return min(matches, key=lambda f: (f.count("/"), len(f), f))
    if quant is None and len(candidates) == 1:
        return candidates[0]
    available = ", ".join(sorted({_quant_of(f) for f in candidates}))
    what = f"no file with quant {quant}" if quant else "several quants and no Q4_K_M or Q4_0"
    raise DownloadError(f"{repo} has {what}; available: {available} (name one as {repo}:QUANT)")
