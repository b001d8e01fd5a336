"""Measure what verification and drafting cost on this device, and cache the result.

A few seconds at load: the target decodes batches of n tokens (n up to 64) on a short context and
the cache is rewound after each; the draft decodes single tokens. Exact mode's batch cap (see
:mod:`edgespec.exactness`) is cached alongside. Results are kept per model file, backend, threads,
batch and kernel settings, and measured again when older than a week.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from edgespec import exactness
from edgespec.costs import CostModel
from edgespec.llama import Context, system_info, tiled_matmul
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
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _time_decode(ctx: Context, n: int) -> float:
    # Each decode is rewound so that every run sees the same cache.
    tokens = [ctx.model.bos if ctx.model.bos >= 0 else 0] * n
    t0 = time.perf_counter()
    ctx.decode(tokens, _PREFIX, n)
    seconds = time.perf_counter() - t0
    ctx.truncate(_PREFIX)
    return seconds


def measure(ctx: Context, sizes: tuple[int, ...] = BATCH_SIZES, reps: int = 3) -> dict[int, float]:
    """Seconds to decode n tokens (with logits for each) after a short prefix, by n.

    Sizes are measured round-robin and the fastest of ``reps`` runs is kept: other programs on a
    shared machine only ever add time, and round-robin spreads a burst of them over all sizes.
    """
    ctx.clear()
    filler = ctx.model.bos if ctx.model.bos >= 0 else 0
    ctx.decode([filler] * _PREFIX, 0, 0)
    ctx.snapshot()  # a recurrent state comes back here after each timed decode
    _time_decode(ctx, 1)  # warm up: first calls allocate buffers
    sizes = tuple(n for n in sizes if n <= ctx.n_batch and _PREFIX + n <= ctx.n_ctx)
    out = {n: float("inf") for n in sizes}
    for _ in range(reps):
        for n in sizes:
            out[n] = min(out[n], _time_decode(ctx, n))
    ctx.clear()
    return out


def device_costs(
    target: Context, draft: Context | None, n_gpu_layers: int = 0, refresh: bool = False
) -> CostModel:
    """The cost model for this pair on this device, from the cache when fresh."""
    path = cache_dir() / "costs.json"
    entries = read_json(path)
    keys = [_key(target, n_gpu_layers)] + ([_key(draft, n_gpu_layers)] if draft else [])
    now = time.time()
    fresh = [entries[k] for k in keys if k in entries and now - entries[k]["at"] < MAX_AGE_S]
    if not refresh and len(fresh) == len(keys):
        verify = {int(n): s for n, s in fresh[0]["seconds"].items()}
        if draft is None:
            return CostModel(verify)
        cached = {int(n): s for n, s in fresh[1]["seconds"].items()}
        return CostModel(verify, cached[1], cached)
    logger.info("measuring verification costs on this device (a few seconds, cached)")
    verify = measure(target)
    entries[keys[0]] = {"at": now, "model": target.model.path.name, "seconds": verify}
    draft_batch: dict[int, float] = {}
    if draft is not None:
        # Single steps (drafting) and a few batch sizes (catching up after a copy).
        draft_batch = measure(draft, sizes=DRAFT_BATCH_SIZES, reps=5)
        entries[keys[1]] = {"at": now, "model": draft.model.path.name, "seconds": draft_batch}
    _save(path, entries)
    return CostModel(verify, draft_batch.get(1), draft_batch)


def exact_cap(ctx: Context, n_gpu_layers: int = 0, max_n: int = 64, refresh: bool = False) -> int:
    """The largest verification batch bit-identical to single steps on this device, from the cache
    when fresh (checked for batches up to ``max_n``; a cap found below it holds for any larger)."""
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
    cap = exactness.batch_cap(ctx, max_n)
    entries[key] = {"at": time.time(), "model": ctx.model.path.name, "cap": cap, "checked": max_n}
    _save(path, entries)
    return cap


def _save(path: Path, entries: dict[str, Any]) -> None:
    try:
        write_json(path, entries)
    except OSError as exc:  # a read-only cache only costs a re-measure next time
        logger.warning("could not cache device measurements in %s: %s", path, exc)
