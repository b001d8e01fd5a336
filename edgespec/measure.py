"""Measure what verification and drafting cost on this device, and cache the result.

A few seconds at load: the target decodes batches of n tokens (n up to 64) on a short context and
the cache is rewound after each; the draft decodes single tokens; a recurrent model's state is
saved and restored (what its rewind costs); a target's MTP layers decode single steps and the
batches they catch up with. Exact mode's batch cap (see
:mod:`edgespec.exactness`) is cached alongside. Results are kept per model file, backend, threads,
batch and kernel settings, and measured again when older than a week.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgespec import exactness
from edgespec.costs import CostModel
from edgespec.llama import Context, MtpContext, system_info, tiled_matmul
from edgespec.paths import cache_dir, read_json, write_json

logger = logging.getLogger(__name__)

BATCH_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)
DRAFT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
MAX_AGE_S = 7 * 24 * 3600
_PREFIX = 32


def _key(ctx: Context, n_gpu_layers: int) -> str:
    st = ctx.model.path.stat()
    parts = [
        str(ctx.model.path.resolve()),
        str(st.st_size),
        str(int(st.st_mtime)),
        system_info(),
        f"threads={ctx.n_threads}",
        f"batch={ctx.n_batch}",
        f"gpu_layers={n_gpu_layers}",
        f"repack={ctx.model.repack}",
        f"flash_attn={ctx.flash_attn}",
        f"kv={ctx.kv_type}",
        f"tiled={tiled_matmul()}",
        f"rewind={ctx.rewind}:{ctx.native_depth}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _mtp_key(target_key: str, mtp: MtpContext) -> str:
    # The target's own MTP layers are part of its file; an assistant is a file of its own.
    if not mtp.shared:
        return target_key + ":mtp"
    st = mtp.model.path.stat()
    return target_key + f":assistant:{mtp.model.path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def _time_decode(ctx: Context, n: int) -> float:
    # Each decode is rewound so that every run sees the same cache.
    tokens = [ctx.model.bos if ctx.model.bos >= 0 else 0] * n
    t0 = time.perf_counter()
    ctx.decode(tokens, _PREFIX, n)
    seconds = time.perf_counter() - t0
    ctx.truncate(_PREFIX)
    return seconds


def measure(
    ctx: Context,
    sizes: tuple[int, ...] = BATCH_SIZES,
    reps: int = 3,
    progress: Callable[[float], None] | None = None,
) -> dict[int, float]:
    """Seconds to decode n tokens (with logits for each) after a short prefix, by n.

    Sizes are measured round-robin and the fastest of ``reps`` runs is kept: other programs on a
    shared machine only ever add time, and round-robin spreads a burst of them over all sizes.
    ``progress`` is told the share done after each round.
    """
    ctx.clear()
    filler = ctx.model.bos if ctx.model.bos >= 0 else 0
    ctx.decode([filler] * _PREFIX, 0, 0)
    ctx.snapshot()  # a recurrent state comes back here after each timed decode
    _time_decode(ctx, 1)  # warm up: first calls allocate buffers
    sizes = tuple(n for n in sizes if n <= ctx.n_batch and _PREFIX + n <= ctx.n_ctx)
    out = {n: float("inf") for n in sizes}
    for rep in range(reps):
        for n in sizes:
            out[n] = min(out[n], _time_decode(ctx, n))
        if progress is not None:
            progress((rep + 1) / reps)
    ctx.clear()
    return out


def rewind_costs(ctx: Context, reps: int = 5) -> dict[str, float]:
    """Seconds to save a recurrent model's state and to restore it after a rejected guess (the
    fastest of ``reps``); both 0 for a plain KV cache, which is cut back for free."""
    if ctx.rewind == "cache":
        return {"save": 0.0, "restore": 0.0}
    filler = ctx.model.bos if ctx.model.bos >= 0 else 0
    ctx.clear()
    ctx.decode([filler] * _PREFIX, 0, 0)
    save = restore = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        ctx.checkpoint()
        save = min(save, time.perf_counter() - t0)
        ctx.decode([filler], _PREFIX, 1)  # one token: no native cut reaches back over it
        t0 = time.perf_counter()
        ctx.truncate(_PREFIX)
        restore = min(restore, time.perf_counter() - t0)
    ctx.clear()
    return {"save": save, "restore": restore}


def _entry(
    ctx: Context, sizes: tuple[int, ...], reps: int, now: float, progress: Callable[[float], None] | None
) -> dict[str, Any]:
    return {
        "at": now,
        "model": ctx.model.path.name,
        "seconds": measure(ctx, sizes, reps, progress),
        **rewind_costs(ctx),
    }


def _model(target: dict[str, Any], draft: dict[str, Any] | None, target_ctx: Context) -> CostModel:
    verify = {int(n): s for n, s in target["seconds"].items()}
    depth = None if target_ctx.rewind == "cache" else target_ctx.native_depth
    if draft is None:
        return CostModel(verify, restore_s=target["restore"], native_depth=depth)
    batch = {int(n): s for n, s in draft["seconds"].items()}
    rewind = draft["save"] + draft["restore"]
    return CostModel(verify, batch[1], batch, target["restore"], depth, rewind)


def measure_mtp(
    ctx: MtpContext, sizes: tuple[int, ...] = DRAFT_BATCH_SIZES, reps: int = 5
) -> dict[int, float]:
    """Seconds for the MTP layers to read n tokens with their hidden rows and guess after the last
    (n = 1 is one drafting step; more is catching up), by n, the fastest of ``reps`` round-robin.
    An assistant reads the target's cache (filled here, and emptied after) and catches up on
    nothing: only n = 1."""
    ctx.clear()
    filler = ctx.model.bos if ctx.model.bos >= 0 else 0
    rows = np.zeros((max(_PREFIX, *sizes), ctx.n_embd), np.float32)
    if ctx.shared:
        sizes = (1,)
        ctx.target.clear()
        ctx.target.decode([filler] * _PREFIX, 0, 0)
    else:
        ctx.decode([filler] * _PREFIX, rows[:_PREFIX], 0)
    sizes = tuple(n for n in sizes if n <= ctx.n_batch and _PREFIX + n <= ctx.n_ctx)
    out = {n: float("inf") for n in sizes}
    for rep in range(reps + 1):  # the first round warms up
        for n in sizes:
            t0 = time.perf_counter()
            ctx.decode([filler] * n, rows[:n], _PREFIX)
            seconds = time.perf_counter() - t0
            ctx.truncate(_PREFIX)
            if rep:
                out[n] = min(out[n], seconds)
    ctx.clear()
    if ctx.shared:
        ctx.target.clear()
    return out


def device_costs(
    target: Context,
    draft: Context | None,
    n_gpu_layers: int = 0,
    refresh: bool = False,
    mtp: MtpContext | None = None,
    progress: Callable[[float], None] | None = None,
) -> CostModel:
    """The cost model for this pair (and the target's MTP layers, when given) on this device,
    from the cache when fresh; ``progress`` is told the share measured (0 to 1) when it is
    measured."""
    path = cache_dir() / "costs.json"
    entries = read_json(path)
    target_key = _key(target, n_gpu_layers)
    keys = (
        [target_key]
        + ([_key(draft, n_gpu_layers)] if draft else [])
        + ([_mtp_key(target_key, mtp)] if mtp else [])
    )
    now = time.time()
    fresh = [entries[k] for k in keys if k in entries and now - entries[k]["at"] < MAX_AGE_S]
    if refresh or len(fresh) < len(keys):
        logger.info("measuring verification costs on this device (a few seconds, cached)")
        # Shares of the time, about: the draft's sizes are fewer, and the MTP layers' steps cheaper.
        share = 1.0 if draft is None and mtp is None else 0.75
        draft_end = 1.0 if mtp is None else 0.9
        entries[keys[0]] = _entry(target, BATCH_SIZES, 3, now, _scaled(progress, 0.0, share))
        if draft is not None:
            # Single steps (drafting) and a few batch sizes (catching up after a copy).
            entries[keys[1]] = _entry(draft, DRAFT_BATCH_SIZES, 5, now, _scaled(progress, share, draft_end))
        if mtp is not None:
            entries[keys[-1]] = {"at": now, "model": mtp.model.path.name, "seconds": measure_mtp(mtp)}
            if progress is not None:
                progress(1.0)
        _save(path, entries)
        fresh = [entries[k] for k in keys]
    costs = _model(fresh[0], fresh[1] if draft is not None else None, target)
    if mtp is not None:
        costs.mtp_batch_s = {int(n): s for n, s in fresh[-1]["seconds"].items()}
    return costs


def exact_cap(
    ctx: Context,
    n_gpu_layers: int = 0,
    max_n: int = 64,
    refresh: bool = False,
    progress: Callable[[float], None] | None = None,
) -> int:
    """The largest verification batch bit-identical to single steps on this device, from the cache
    when fresh (checked for batches up to ``max_n``; a cap found below it holds for any larger).
    ``progress`` is told the share checked when it is checked."""
    path = cache_dir() / "costs.json"
    entries = read_json(path)
    key = _key(ctx, n_gpu_layers) + ":exact"
    entry = entries.get(key)
    if (
        not refresh
        and entry
        and time.time() - entry["at"] < MAX_AGE_S
        and (entry["cap"] < entry["checked"] or entry["checked"] >= max_n)
    ):
        return min(int(entry["cap"]), max_n)
    logger.info("checking that batched verification is bit-identical on this device (once, cached)")
    cap = exactness.batch_cap(ctx, max_n, progress=progress)
    entries[key] = {"at": time.time(), "model": ctx.model.path.name, "cap": cap, "checked": max_n}
    _save(path, entries)
    return cap


def _scaled(
    progress: Callable[[float], None] | None, start: float, end: float
) -> Callable[[float], None] | None:
    """``progress`` for a part of the work that runs from ``start`` to ``end`` of the whole."""
    return None if progress is None else lambda fraction: progress(start + (end - start) * fraction)


def _save(path: Path, entries: dict[str, Any]) -> None:
    try:
        write_json(path, entries)
    except OSError as exc:  # a read-only cache only costs a re-measure next time
        logger.warning("could not cache device measurements in %s: %s", path, exc)
