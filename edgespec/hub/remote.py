"""Talking to the Hub: repo listings and file downloads through huggingface_hub's cache.

Its cache, progress bars, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` apply. Every failure
of the Hub, the network or the disk becomes a one-line :class:`DownloadError` here, in one place.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from edgespec.errors import DownloadError
from edgespec.hub.resume import resume_partial

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class HubUnreachable(DownloadError):
    """The Hub could not be reached at all (DNS, refused connection, timeout)."""


def _client_errors(*names: str) -> tuple[type[Exception], ...]:
    # huggingface_hub 1.x and later speak httpx (2.x: its fork httpx2); 0.x speaks requests.
    # The classes named "module.Class" whose module is installed.
    found: list[type[Exception]] = []
    for dotted in names:
        module, _, name = dotted.partition(".")
        with suppress(ImportError, AttributeError):
            found.append(getattr(__import__(module), name))
    return tuple(found)


_TRANSPORT_ERRORS = _client_errors(
    "httpx2.TransportError", "httpx.TransportError", "requests.RequestException"
)
_CONNECT_ERRORS = _client_errors(
    "httpx2.ConnectError",
    "httpx2.ConnectTimeout",
    "httpx.ConnectError",
    "httpx.ConnectTimeout",
    "requests.ConnectionError",
)


def _endpoint() -> str:
    return str(constants.ENDPOINT)


def hub_cache() -> Path:
    """huggingface_hub's cache directory (``HF_HUB_CACHE``)."""
    return Path(constants.HF_HUB_CACHE)


@contextmanager
def _hub_errors(repo: str, what: str, revision: str | None) -> Iterator[None]:
    """Turn huggingface_hub's and the network's exceptions into one-line :class:`DownloadError`s."""
    rev = revision or "main"
    try:
        yield
    except GatedRepoError as exc:
        raise DownloadError(
            f"{repo} is gated: accept its license on {_endpoint()}/{repo} and set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise DownloadError(
            f"{repo} was not found on the Hub (HTTP 404; a private repo needs HF_TOKEN)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise DownloadError(f"revision {rev!r} was not found in {repo} (HTTP 404)") from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        if constants.is_offline_mode():
            raise DownloadError(f"{what} is not in the cache and HF_HUB_OFFLINE is set") from exc
        raise HubUnreachable(
            f"cannot reach the Hub at {_endpoint()}, and {what} is not in the cache"
        ) from exc
    except EntryNotFoundError as exc:
        raise DownloadError(f"{what} was not found in {repo} at revision {rev!r} (HTTP 404)") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "error"
        hint = ": set HF_TOKEN to a token that may read it" if status in (401, 403) else ""
        raise DownloadError(f"the Hub answered HTTP {status} for {what}{hint}") from exc
    except _CONNECT_ERRORS as exc:
        raise HubUnreachable(f"cannot reach the Hub at {_endpoint()}: {exc}") from exc
    except _TRANSPORT_ERRORS as exc:
        raise DownloadError(
            f"the download of {what} was interrupted ({exc or type(exc).__name__}); "
            "nothing partial was kept: run the command again"
        ) from exc
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise DownloadError(
                f"not enough disk space for {what} in {hub_cache()} ({exc.strerror}); "
                "nothing partial was kept"
            ) from exc
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DownloadError(f"the download of {what} failed: {first}") from exc


@cache
def _reachable(endpoint: str) -> bool:
    # huggingface_hub retries a refused connection for ~20 s per file before giving up; one quick
    # TCP connection tells whether the Hub answers at all. Behind a proxy only the client can tell.
    if any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
    ):
        return True
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def hub_reachable() -> bool:
    """Whether the Hub (``HF_ENDPOINT``) accepts connections; False in offline mode."""
    return not constants.is_offline_mode() and _reachable(_endpoint())


def check_space(need: int, where: Path, what: str) -> None:
    """Raise a :class:`DownloadError` unless ``where`` (or its nearest existing parent) has ``need`` bytes."""
    existing = where
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need > free:
        raise DownloadError(
            f"not enough disk space for {what}: it needs {_gb(need)}, {existing} has {_gb(free)} free"
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def _cached_repo_files(repo: str, revision: str | None) -> list[str] | None:
    """Files of ``repo`` at ``revision`` as far as the local cache knows them, or None."""
    storage = hub_cache() / f"models--{repo.replace('/', '--')}"
    rev = revision or "main"
    commit = rev
    if not re.fullmatch(r"[0-9a-f]{40}", rev):
        ref = storage / "refs" / rev
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snapshot = storage / "snapshots" / commit
    if not snapshot.is_dir():
        return None
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())


def repo_files(repo: str, revision: str | None = None, *, download: bool = True) -> dict[str, int | None]:
    """The files of a Hub repo with their sizes (None where unknown), from the cache when offline."""
    if download and hub_reachable():
        try:
            with _hub_errors(repo, repo, revision):
                tree = HfApi().list_repo_tree(repo, revision=revision, recursive=True)
                return {f.path: getattr(f, "size", None) for f in tree if hasattr(f, "size")}
        except HubUnreachable:
            cached = _cached_repo_files(repo, revision)
            if cached is None:
                raise
            logger.info("cannot reach the Hub; using the cached listing of %s", repo)
            return dict.fromkeys(cached)
    cached = _cached_repo_files(repo, revision)
    if cached is None:
        if constants.is_offline_mode():
            raise DownloadError(f"{repo} is not in the cache and HF_HUB_OFFLINE is set")
        if download:
            raise HubUnreachable(f"cannot reach the Hub at {_endpoint()}, and {repo} is not in the cache")
        raise DownloadError(f"{repo} is not downloaded yet: run `edgespec pull {repo}`")
    return dict.fromkeys(cached)


def download_file(
    repo: str, filename: str, revision: str | None = None, *, download: bool = True, size: int | None = None
) -> Path:
    """One file of a Hub repo through huggingface_hub's cache; the local path."""
    what = f"{repo}/{filename}"
    online = download and hub_reachable()
    with _hub_errors(repo, what, revision):
        if download and not online and not constants.is_offline_mode():
            cached = try_to_load_from_cache(repo, filename, revision=revision)
            if not (isinstance(cached, str) and Path(cached).is_file()):
                raise HubUnreachable(f"cannot reach the Hub at {_endpoint()}, and {what} is not in the cache")
            return Path(cached)
        if online:
            info: Any = hf_hub_download(repo, filename, revision=revision, dry_run=True)
            need = info.file_size if info.file_size is not None else size
            if info.will_download and need:
                check_space(need, hub_cache(), what)
            if info.will_download:
                resume_partial(repo, filename, revision)  # what a killed earlier run left
        path = hf_hub_download(repo, filename, revision=revision, local_files_only=not online)
    return Path(str(path))
