"""Continue a Hub download that an earlier process left unfinished.

huggingface_hub up to 1.17 kept a file's bytes in ``blobs/<etag>.incomplete`` and resumed it with a
Range request in the next process. From 1.18 on it writes to a process-unique
``<etag>.<nonce>.incomplete``, resumes a dropped connection only within the process, and deletes the
file on any failure it can catch; a process that is killed (SIGKILL, SIGTERM, a closed terminal, a
power cut) leaves the file behind and no later run reads it. :func:`resume_partial` takes such a
leftover under the lock huggingface_hub takes for that blob (so a download running elsewhere is never
touched), asks for the rest with a Range request, checks the size and, for LFS files, the sha256
(their ETag), and only then moves it to the blob path, where ``hf_hub_download`` finds it. Until
then the bytes stay under the ``.incomplete`` name: a partial file is never taken for a model.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import WeakFileLock, build_hf_headers, hf_raise_for_status, http_stream_backoff

from edgespec.errors import DownloadError
from edgespec.mirror import sha256_file

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


def resume_partial(repo: str, filename: str, revision: str | None = None) -> bool:
    """Finish ``repo/filename`` from the partial file an earlier process left in the Hub cache.

    Returns True when the blob is now complete and checked, False when there was nothing to resume
    or the partial file could not be used (it is then deleted and the caller downloads the file
    whole, as it would have anyway). Raises :class:`DownloadError` when the transfer breaks again;
    the bytes received so far are kept for the next run.
    """
    cache = Path(constants.HF_HUB_CACHE)
    folder = f"models--{repo.replace('/', '--')}"
    blobs = cache / folder / "blobs"
    if not any(blobs.glob("*.incomplete")):
        return False  # the common case costs one directory listing, no request
    meta = get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision))
    if meta.etag is None or meta.size is None:
        return False
    what = f"{repo}/{filename}"
    blob = blobs / meta.etag
    lock = cache / ".locks" / folder / f"{meta.etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(str(lock)):
        partials = sorted(blobs.glob(glob.escape(meta.etag) + "*.incomplete"), key=lambda p: p.stat().st_size)
        if not partials or blob.exists():
            return False
        *stale, partial = partials
        for p in stale:
            p.unlink(missing_ok=True)
        if meta.xet_file_data is not None:
            # A Xet transfer writes its file out of order; its bytes cannot be continued over HTTP.
            logger.warning("%s: a Xet download cannot be resumed; downloading it again", what)
            partial.unlink()
            return False
        if not _fetch_rest(partial, meta.location, meta.size, what):
            return False
        if _SHA256.fullmatch(meta.etag) and sha256_file(partial) != meta.etag:
            logger.warning("%s: the resumed file does not match its sha256; downloading it again", what)
            partial.unlink()
            return False
        os.replace(partial, blob)
    return True


def _fetch_rest(partial: Path, url: str, size: int, what: str) -> bool:
    have = partial.stat().st_size
    if have >= size:
        logger.warning("%s: the partial file is not shorter than the file; downloading it again", what)
        partial.unlink()
        return False
    headers = {"Range": f"bytes={have}-"}
    if urlsplit(url).netloc == urlsplit(constants.ENDPOINT).netloc:
        headers.update(build_hf_headers())  # the token goes to the Hub only, never to a CDN
    logger.info("%s: resuming the download at byte %d of %d", what, have, size)
    try:
        with http_stream_backoff("GET", url, headers=headers, follow_redirects=True) as response:
            hf_raise_for_status(response)
            content_range = response.headers.get("Content-Range", "")
            if response.status_code != 206 or not content_range.startswith(f"bytes {have}-"):
                # The server sent the whole file (it ignores Range): the partial file is useless.
                logger.warning(
                    "%s: the server cannot resume downloads (it ignored the Range request); "
                    "downloading it again from the start",
                    what,
                )
                partial.unlink()
                return False
            with partial.open("ab") as f:
                for chunk in response.iter_bytes():  # as it arrives: a break keeps all of it
                    f.write(chunk)
    except HfHubHTTPError:
        raise
    except Exception as exc:  # a broken transfer, whatever the HTTP library calls it
        got = partial.stat().st_size
        raise DownloadError(
            f"the download of {what} was interrupted at {got:,} of {size:,} bytes "
            f"({exc or type(exc).__name__}); run the command again to resume it"
        ) from exc
    got = partial.stat().st_size
    if got != size:
        raise DownloadError(
            f"the download of {what} stopped at {got:,} of {size:,} bytes; run the command again to resume it"
        )
    return True
