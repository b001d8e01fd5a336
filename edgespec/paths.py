"""Where edgespec keeps its files (one cache directory, overridable with ``EDGESPEC_CACHE_DIR``),
and the one way it reads and writes its small JSON caches."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import platformdirs


def cache_dir() -> Path:
    """The cache root: ``$EDGESPEC_CACHE_DIR`` if set, else the platform's user cache dir."""
    override = os.environ.get("EDGESPEC_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("edgespec"))


def data_dir() -> Path:
    """Per-user data that is not a cache (chat history)."""
    return Path(platformdirs.user_data_dir("edgespec"))


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; an empty dict when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically: readers see the old file or the new one.

    The new file is written under a unique temporary name beside ``path`` and renamed over it, so
    that two processes writing at once never mix their bytes (the last rename wins). Raises
    :class:`OSError` when the directory cannot be written; the caller decides what that costs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
