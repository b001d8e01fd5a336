"""Where edgespec keeps its files: one cache directory, overridable with ``EDGESPEC_CACHE_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """The cache root: ``$EDGESPEC_CACHE_DIR`` if set, else the platform's user cache dir."""
    override = os.environ.get("EDGESPEC_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("edgespec"))


def data_dir() -> Path:
    """Per-user data that is not a cache (chat history)."""
    return Path(platformdirs.user_data_dir("edgespec"))
