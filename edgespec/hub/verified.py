"""Checking curated files against their pinned size and sha256, and remembering what passed.

A file that passed is remembered by path, size and modification time (one small JSON cache) and
not hashed again; a file that fails is deleted, so that the next pull fetches it afresh.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from pathlib import Path
from typing import Any

from edgespec.errors import DownloadError
from edgespec.mirror import sha256_file
from edgespec.paths import cache_dir, read_json, write_json
from edgespec.registry import ModelRef

logger = logging.getLogger(__name__)


def _verified_db() -> Path:
    return cache_dir() / "verified.json"


def _stamp(path: Path, sha256: str) -> list[Any]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, sha256]


def _remember_verified(path: Path, sha256: str) -> None:
    db = _verified_db()
    data = read_json(db)
    data[str(path.resolve())] = _stamp(path, sha256)
    with suppress(OSError):  # a cache we cannot write only costs a re-check next time
        write_json(db, data)


def _delete(path: Path) -> None:
    # A Hub cache entry is a symlink to a blob: remove both so the next pull fetches it again.
    real = path.resolve()
    path.unlink(missing_ok=True)
    real.unlink(missing_ok=True)


def check_file(path: Path, ref: ModelRef) -> Path:
    """Check ``path`` against the size and sha256 pinned for ``ref``; on a mismatch delete it and raise.

    A file that passed once is remembered (by size and modification time) and not hashed again.
    """
    if ref.size is not None and path.stat().st_size != ref.size:
        got = path.stat().st_size
        _delete(path)
        raise DownloadError(
            f"{ref.file} has {got} bytes, not the pinned {ref.size}; it was deleted: pull it again"
        )
    if ref.sha256 is None:
        return path
    if read_json(_verified_db()).get(str(path.resolve())) == _stamp(path, ref.sha256):
        return path
    logger.info("checking the sha256 of %s", path)
    digest = sha256_file(path)
    if digest != ref.sha256:
        _delete(path)
        raise DownloadError(
            f"{ref.file} does not match its pinned sha256 (got {digest[:12]}..., expected "
            f"{ref.sha256[:12]}...); it was deleted: pull it again"
        )
    _remember_verified(path, ref.sha256)
    return path
