"""A conversation's caches on disk, beside its saved chat, checked whole before anything is loaded.

The file: a magic line, the length of a JSON header, the header, then the target's and the draft's
states (``llama_state_seq_get_data``), and where the target has MTP layers their cache's state and
the target's hidden rows they have not read yet (float32; a file without them still loads). The
header names what the states were made with (each model file by name, size and a hash of its first
and last MiB; the context settings that shape the cache) and holds the tokens the caches hold, the
sha256 of each state, and the caller's own fields (the conversation's text). :func:`read` refuses a
file that is not one, is cut short or corrupt, or was made for other models or settings, with one
line saying which; a state is never loaded from it then.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgespec.errors import StateFileError
from edgespec.llama import Context, Model
from edgespec.mtp import MtpState
from edgespec.sessions import SavedState

MAGIC = b"EDGESPEC-STATE 1\n"
_HEADER_MAX = 64 << 20  # the header holds token lists: 64 MiB is millions of tokens
_MIB = 1 << 20


def fingerprint(model: Model) -> dict[str, Any]:
    """A model file, told apart from any other: its name, size, and a hash of its first and last MiB
    (the header and tensor table, and the last weights), read in a millisecond."""
    path = model.path
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(_MIB))
        f.seek(max(0, size - _MIB))
        digest.update(f.read(_MIB))
    return {"file": path.name, "size": size, "sha256_ends": digest.hexdigest()}


def identity(target: Context, draft: Context | None) -> dict[str, Any]:
    """What a state must have been made with to be loaded into these contexts: the models, and the
    settings that change what the cache holds (its element type, flash attention's layout, exact
    mode's kernels)."""

    def one(ctx: Context) -> dict[str, Any]:
        return {
            "model": fingerprint(ctx.model),
            "kv_type": ctx.kv_type,
            "flash_attn": ctx.flash_attn,
            "repack": ctx.model.repack,
        }

    return {"target": one(target), "draft": one(draft) if draft is not None else None}


def write(path: Path, state: SavedState, ident: dict[str, Any], extra: dict[str, Any]) -> int:
    """Write ``state`` to ``path`` (through a temporary file, so a failed write leaves no half
    file); returns the bytes written."""
    blobs = [state.target or b"", state.draft or b""]
    has = [state.target is not None, state.draft is not None]
    mtp = state.mtp
    if mtp is not None:
        blobs += [mtp.state or b"", mtp.rows.astype("<f4").tobytes()]
        has += [mtp.state is not None, True]
    header = {
        **ident,
        "history": state.history,
        "draft_cached": state.draft_cached,
        "mtp": {"cached": mtp.cached, "rows_from": mtp.rows_from, "rows": len(mtp.rows)} if mtp else None,
        "states": [{"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for b in blobs],
        "has": has,
        "extra": extra,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(MAGIC + len(head).to_bytes(8, "little") + head)
            for blob in blobs:
                f.write(blob)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StateFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return len(MAGIC) + 8 + len(head) + sum(map(len, blobs))


def read(
    path: Path, ident: dict[str, Any], n_vocab: int, n_ctx: int, n_embd: int = 0
) -> tuple[SavedState, dict[str, Any]]:
    """The state in ``path`` and the caller's fields, if it was made with ``ident`` and is whole;
    else :class:`StateFileError` saying what is wrong. ``n_embd``: the width of the target's hidden
    rows where it has MTP layers (0: none; the file's MTP part, if any, is then not used)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    header, body = _split(path, data)
    for role in ("target", "draft"):
        _same(path, role, header.get(role), ident[role])
    history, cached = _tokens(header.get("history"), n_vocab), _tokens(header.get("draft_cached"), n_vocab)
    if history is None or cached is None or len(history) > n_ctx + 1:
        raise StateFileError(f"{path}: its tokens do not fit this pair ({n_vocab} tokens, {n_ctx} context)")
    blobs, at, has = [], 0, header.get("has")
    try:
        for entry in header["states"]:
            blob = body[at : at + entry["size"]]
            at += entry["size"]
            if len(blob) != entry["size"] or hashlib.sha256(blob).hexdigest() != entry["sha256"]:
                raise StateFileError(f"{path}: corrupt (a saved state does not match its checksum)")
            blobs.append(blob)
    except (KeyError, TypeError) as exc:
        raise StateFileError(f"{path}: corrupt (its header lacks {exc})") from exc
    if len(blobs) not in (2, 4) or at != len(body) or not isinstance(has, list) or len(has) != len(blobs):
        raise StateFileError(f"{path}: corrupt (its states are not as its header says)")
    target, draft, *rest = (blob if kept else None for blob, kept in zip(blobs, has, strict=True))
    mtp = _mtp(path, header.get("mtp"), rest, n_vocab, n_ctx, n_embd) if rest and n_embd else None
    saved = SavedState(history, target, cached if draft is not None else [], draft, mtp)
    return saved, header.get("extra", {})


def _mtp(
    path: Path, fields: Any, blobs: list[bytes | None], n_vocab: int, n_ctx: int, n_embd: int
) -> MtpState:
    """The MTP layers' part of a state file, checked to fit this target."""
    state, rows = blobs
    try:
        cached, start, n = _tokens(fields["cached"], n_vocab), int(fields["rows_from"]), int(fields["rows"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StateFileError(f"{path}: corrupt (its MTP part lacks {exc})") from exc
    if cached is None or rows is None or not 0 <= start <= start + n <= n_ctx or len(rows) != n * n_embd * 4:
        raise StateFileError(
            f"{path}: its MTP part does not fit this target ({n_embd}-wide rows, a {n_ctx}-token context)"
        )
    return MtpState(cached, state, start, np.frombuffer(rows, "<f4").reshape(n, n_embd).astype(np.float32))


def _split(path: Path, data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and the states that follow it."""
    if not data.startswith(MAGIC):
        raise StateFileError(f"{path}: not an edgespec state file")
    start = len(MAGIC) + 8
    size = int.from_bytes(data[len(MAGIC) : start], "little")
    if size > min(_HEADER_MAX, len(data) - start):
        raise StateFileError(f"{path}: corrupt or cut short (its header runs past the end)")
    try:
        header = json.loads(data[start : start + size])
    except ValueError as exc:
        raise StateFileError(f"{path}: corrupt (its header is not JSON: {exc})") from exc
    if not isinstance(header, dict):
        raise StateFileError(f"{path}: corrupt (its header is not an object)")
    return header, data[start + size :]


def _same(path: Path, role: str, saved: Any, now: dict[str, Any] | None) -> None:
    if saved == now:
        return
    if now is None or saved is None:
        raise StateFileError(f"{path}: saved {'without' if saved is None else 'with'} a draft model")
    if not isinstance(saved, dict) or saved.get("model") != now["model"]:
        name = saved.get("model", {}).get("file", "?") if isinstance(saved, dict) else "?"
        raise StateFileError(
            f"{path}: saved for another {role} model file ({name}), not {now['model']['file']}"
        )
    differ = ", ".join(f"{k} {saved.get(k)!r} (now {v!r})" for k, v in now.items() if saved.get(k) != v)
    raise StateFileError(f"{path}: saved with other {role} settings: {differ}")


def _tokens(value: Any, n_vocab: int) -> list[int] | None:
    """``value`` if it is a list of token ids of this vocabulary, else None."""
    if isinstance(value, list) and all(isinstance(t, int) and 0 <= t < n_vocab for t in value):
        return value
    return None
