"""Exact mode: verification batches that compute the same bits as single steps, checked on this device.

llama.cpp picks its CPU kernels by the number of rows in a batch, so a batched verification can
round differently from the single steps of the target alone, and greedy output can part from it
after a near-tie. Measured on llama-cpp-python 0.3.36 (Qwen2.5-Coder-1.5B Q4_K_M, AVX-512):

- weight repacking ("extra buffer types") takes another kernel from 4 rows on;
- attention without flash attention differs from 2 rows on; with flash attention and an f16 KV
  cache a single token takes a split-KV path once the cache holds 512 cells or more (a q8_0
  cache never does), and 64 query rows or more take a tiled path (f16 cache only);
- ggml's tiled K-quant matmul (``ggml-cpu/tiled``) takes over from 8 rows on; it is switched off
  with ``GGML_CPU_TILED_MM=0``, which ggml reads once per process.

Exact mode therefore loads the target without repacking, with flash attention, a q8_0 KV cache and
the tiled matmul off, and caps every verification at the largest batch that :func:`batch_cap` finds
bit-identical on this device. That is a measurement, not a constant: other builds, backends and
models take other kernels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from edgespec.errors import LlamaError, NotExactError
from edgespec.llama import Context, Model, tiled_matmul

logger = logging.getLogger(__name__)

MODEL_OPTIONS: dict[str, Any] = {"repack": False}
"""How exact mode loads the target (:class:`edgespec.llama.Model` keywords)."""

N_PREFIX = 520
"""Probe context: past 512 cells, where llama.cpp's single-token attention may take a split path."""

# A little code and prose, repeated to fill the prefix: real tokens of any vocabulary.
_PROBE_TEXT = (
    "def merge(xs, ys):\n    out = []\n    while xs and ys:\n        out.append(xs.pop(0) if xs[0] < ys[0]"
    " else ys.pop(0))\n    return out + xs + ys\n\nThe quick brown fox jumps over the lazy dog; "
    "a hash table maps keys to values in constant time on average. 1, 2, 3, 5, 8, 13, 21.\n"
)


def make_context(model: Model, **options: Any) -> Context:
    """The target's context in exact mode: flash attention and a q8_0 KV cache, or an f16 one
    where the model's head size is not a multiple of q8_0's 32-value block (the self-check then
    finds whether long contexts still decode bit-identically). ``options`` go to :class:`Context`."""
    kv_type = "q8_0" if all(n % 32 == 0 for n in model.head_sizes()) else "f16"
    if kv_type == "f16":
        logger.info("%s: no q8_0 KV cache for this head size; exact mode uses an f16 one", model.path.name)
    try:
        return Context(model, flash_attn=True, kv_type=kv_type, **options)
    except LlamaError:
        if kv_type == "f16":
            raise
        return Context(model, flash_attn=True, kv_type="f16", **options)


def no_speculation_note(cap: int, ctx: Context) -> str | None:
    """What to tell the user when exact mode can verify no guess on this device (else None)."""
    if cap >= 2:
        return None
    return (
        f"exact mode: no batch decodes bit-identically to single steps here ({describe(ctx)}); "
        "generating with the target alone, without speculation"
    )


def describe(ctx: Context) -> str:
    """The settings of ``ctx`` that decide which kernels run, in words."""
    fa = {None: "llama.cpp's choice", True: "on", False: "off"}[ctx.flash_attn]
    return (
        f"weight repacking {'on' if ctx.model.repack else 'off'}, flash attention {fa}, "
        f"{ctx.kv_type} KV cache, tiled matmul {'on' if tiled_matmul() else 'off'}"
    )


def probe_tokens(ctx: Context, n: int) -> list[int]:
    """``n`` tokens of the probe text (repeated as needed)."""
    piece = ctx.model.tokenize(_PROBE_TEXT, add_special=False, parse_special=False)
    return (piece * (n // len(piece) + 1))[:n]


def batch_differences(
    ctx: Context,
    max_n: int,
    n_prefix: int = N_PREFIX,
    stop_at_first: bool = True,
    progress: Callable[[float], None] | None = None,
) -> dict[int, float]:
    """For each batch size 2..``max_n``: the largest difference between the logits of that many
    probe tokens decoded in one batch and the same tokens decoded one at a time (0.0: bit-identical).

    Decoding starts after a prefix of ``n_prefix`` tokens (fewer if the context is smaller). The
    last row of a batch reads the KV entries the batch wrote, so a match also shows that the
    cache holds the same bits. Stops after the first size that differs when ``stop_at_first``.
    The cache is cleared before and after. Raises :class:`NotExactError` when even two single
    steps of the same token differ (a device that does not compute the same thing twice).
    ``progress`` is told the share of batch sizes checked after each.
    """
    max_n = min(max_n, ctx.n_batch, ctx.n_ctx - 1)
    n_prefix = max(1, min(n_prefix, ctx.n_ctx - max_n))
    tokens = probe_tokens(ctx, n_prefix + max_n)
    prefix, probe = tokens[:n_prefix], tokens[n_prefix:]
    ctx.clear()
    try:
        ctx.decode(prefix, 0, 0)
        ctx.snapshot()  # a recurrent state comes back here after each probe
        single = np.concatenate([ctx.decode([t], n_prefix + i, 1) for i, t in enumerate(probe)])
        ctx.truncate(n_prefix)
        again = ctx.decode(probe[:1], n_prefix, 1)
        ctx.truncate(n_prefix)
        if not np.array_equal(again[0], single[0]):
            raise NotExactError(
                f"{ctx.model.path.name}: two single steps of the same token gave different logits "
                f"({describe(ctx)}); this device does not compute deterministically, so exact mode "
                "cannot hold here"
            )
        out: dict[int, float] = {}
        for n in range(2, max_n + 1):
            batched = ctx.decode(probe[:n], n_prefix, n)
            ctx.truncate(n_prefix)
            out[n] = 0.0 if np.array_equal(batched, single[:n]) else float(np.abs(batched - single[:n]).max())
            if out[n] and stop_at_first:
                break
            if progress is not None:
                progress((n - 1) / (max_n - 1))
        if progress is not None:
            progress(1.0)  # also when a size differed and the rest were not needed
        return out
    finally:
        ctx.clear()


def batch_cap(
    ctx: Context, max_n: int, n_prefix: int = N_PREFIX, progress: Callable[[float], None] | None = None
) -> int:
    """The largest n (at most ``max_n``) such that every batch of 2..n tokens decodes to logits
    bit-identical to single steps on this device; 1 when no batch does (``progress``: as
    :func:`batch_differences`)."""
    diffs = batch_differences(ctx, max_n, n_prefix, progress=progress)
    differing = [n for n, d in diffs.items() if d]
    return differing[0] - 1 if differing else max([1, *diffs])


def require_invariant(ctx: Context, n: int, n_prefix: int = N_PREFIX) -> None:
    """Refuse (:class:`NotExactError`) a configuration in which some batch of 2..``n`` tokens
    does not decode to exactly the logits of single steps."""
    diffs = batch_differences(ctx, n, n_prefix)
    for size, diff in diffs.items():
        if diff:
            raise NotExactError(
                f"{ctx.model.path.name} with {describe(ctx)}: a batch of {size} tokens gives logits up "
                f"to {diff:.3g} away from single steps; exact mode needs them bit-identical (load "
                "with exact=True / --exact, which turns repacking off and uses flash attention with "
                "a q8_0 KV cache, or verify at most "
                f"{size - 1} tokens at once)"
            )
