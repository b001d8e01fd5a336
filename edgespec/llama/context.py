"""A KV cache and recurrent state for one sequence (:class:`Context`): decoding, and cutting back."""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import llama_cpp as C
import numpy as np

from edgespec.errors import LlamaError
from edgespec.llama.abort import AbortHook
from edgespec.llama.backend import fix_tiled_matmul
from edgespec.llama.checkpoints import Checkpoints
from edgespec.llama.model import Model

_DECODE_ERRORS = {
    1: "no room in the KV cache for the batch (the context is full)",
    2: "aborted",
    -1: "invalid input batch",
}


KV_TYPES = {"f16": C.GGML_TYPE_F16, "q8_0": C.GGML_TYPE_Q8_0}
"""KV cache element types a context may be made with, by name."""

ROLLBACK_DEPTH = 16
"""Recurrent-state snapshots a context keeps per decode where llama.cpp can roll back natively: the
deepest rewind of a verification that costs no restore. Each one costs a copy of the recurrent
state in memory."""

STOPPABLE_FROM = 64
"""Decodes of more tokens than this (a prompt, a draft catching up) can be stopped midway
(:meth:`Context.stop_when`); shorter ones (a verification step) run to their end, sparing their
graph a call into Python at every node."""

_PARTIAL = C.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY  # only the recurrent part; the KV cache is trimmed


def _params(
    model: Model,
    n_ctx: int,
    n_batch: int,
    n_threads: int,
    n_threads_batch: int,
    flash_attn: bool | None,
    kv_type: str,
    rollback: int,
) -> Any:
    if kv_type not in KV_TYPES:
        raise ValueError(f"unknown KV cache type {kv_type!r}; choose one of {', '.join(KV_TYPES)}")
    params = C.llama_context_default_params()
    if flash_attn is not None:
        params.flash_attn_type = (
            C.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else C.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
    params.type_k = params.type_v = KV_TYPES[kv_type]
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.n_seq_max = 1
    # A rollback needs the last n_rs_seq + 1 tokens of a decode in one micro-batch, and llama.cpp
    # aborts the process unless the micro-batch is longer still.
    params.n_rs_seq = max(0, min(rollback, n_batch - 2)) if model.recurrent else 0
    params.n_threads = n_threads
    params.n_threads_batch = n_threads_batch
    params.no_perf = True
    return params


def _batch(n: int) -> Any:
    batch = C.llama_batch_init(n, 0, 1)
    for i in range(n):
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
    return batch


DecodeHook = Callable[["Context", int, int], None]
_DECODE_HOOKS: weakref.WeakKeyDictionary[Context, DecodeHook] = weakref.WeakKeyDictionary()


def on_decode(ctx: Context, hook: DecodeHook) -> None:
    """Call ``hook(ctx, pos, n)`` after each chunk of ``n`` tokens at ``pos`` that ``ctx`` decodes,
    while llama.cpp's outputs of that chunk are readable (:class:`~edgespec.llama.HiddenRows` keeps
    the target's hidden rows so)."""
    _DECODE_HOOKS[ctx] = hook


def _decode_chunk(ctx: Context, tokens: Sequence[int], pos: int, first_out: int) -> int:
    """One ``llama_decode`` of at most ``n_batch`` tokens, logits from row ``first_out`` on."""
    batch = ctx._batch
    for i, token in enumerate(tokens):
        batch.token[i] = token
        batch.pos[i] = pos + i
        batch.logits[i] = i >= first_out
    batch.n_tokens = len(tokens)
    ret = int(C.llama_decode(ctx._ptr, batch))
    hook = _DECODE_HOOKS.get(ctx)
    if ret == 0 and hook is not None:
        hook(ctx, pos, len(tokens))
    return ret


def _decode_chunks(ctx: Context, tokens: Sequence[int], pos: int, n_logits: int) -> int:
    """``tokens`` in ``n_batch`` chunks; returns the first row with logits in the last chunk. A
    long decode can be stopped midway (:meth:`Context.stop_when`)."""
    n, start, first_out = len(tokens), 0, 0
    stoppable = n > STOPPABLE_FROM
    ctx._abort.arm(stoppable)
    while start < n:
        chunk = min(ctx.n_batch, n - start)
        first_out = chunk - n_logits if start + chunk == n else chunk
        if stoppable and ctx.model.recurrent and pos + start:
            ctx.checkpoint()  # a chunk stopped midway leaves a half-written recurrent state
        ret = _decode_chunk(ctx, tokens[start : start + chunk], pos + start, first_out)
        if ret == 2:
            raise _stopped(ctx, pos + start)
        if ret != 0:
            raise LlamaError(f"llama_decode failed with {ret}: {_DECODE_ERRORS.get(ret, 'fatal error')}")
        start += chunk
        ctx._checkpoints.decoded(chunk)
    if stoppable and (interrupt := ctx._abort.take_interrupt()):
        raise interrupt  # caught as the last node finished: the decode is whole
    return first_out


def _stopped(ctx: Context, at: int) -> BaseException:
    """A decode was stopped in the chunk that starts at ``at``: what to raise. llama.cpp has
    dropped that micro-batch's KV cells (src/llama-context.cpp, decode), but it cannot cut a
    recurrent state back that far, and the state may be half written: go back to the one saved
    before the chunk."""
    if ctx.model.recurrent:
        if at == 0:
            ctx.clear()
        else:
            _restore(ctx, ctx._checkpoints.get(at))
            if not C.llama_memory_seq_rm(ctx._mem, 0, at, -1):
                ctx.clear()
            ctx._checkpoints.drop_after(at)
    return ctx._abort.stopped(f"stopped while reading the prompt; {ctx.n_past} tokens read are kept")


class StateHolder(Protocol):
    """A llama.cpp context whose sequence state can be saved and restored (:class:`Context`, and
    :class:`~edgespec.llama.MtpContext`)."""

    _ptr: Any
    model: Model

    def clear(self) -> None: ...


def save_state(ctx: StateHolder, partial: bool = False) -> bytes:
    """The state of ``ctx``'s sequence: everything, or with ``partial`` only its recurrent part."""
    return bytes(_save(ctx, None, _PARTIAL if partial else 0))


def restore_state(ctx: StateHolder, data: bytes, partial: bool = False) -> None:
    """Restore what :func:`save_state` returned (with the same ``partial``) onto ``ctx``, a context
    of the same model; if llama.cpp refuses it, ``ctx`` is left empty."""
    _restore(ctx, (ctypes.c_uint8 * len(data)).from_buffer_copy(data), _PARTIAL if partial else 0)


def load_state(ctx: Context, data: bytes, partial: bool = False) -> None:
    """:func:`restore_state`, and ``ctx``'s own checkpoints forgotten."""
    restore_state(ctx, data, partial)
    ctx.forget_checkpoints()


def _save(ctx: StateHolder, reuse: Any, flags: int = _PARTIAL) -> Any:
    """The sequence's state (``flags``: only its recurrent part) in a ctypes buffer, ``reuse``'s
    if it has the right size."""
    size = C.llama_state_seq_get_size_ext(ctx._ptr, 0, flags)
    buf = reuse if reuse is not None and len(reuse) == size else (ctypes.c_uint8 * size)()
    if size == 0 or C.llama_state_seq_get_data_ext(ctx._ptr, buf, size, 0, flags) != size:
        raise LlamaError(f"{ctx.model.path.name}: llama.cpp cannot save this model's state")
    return buf


def _restore(ctx: StateHolder, buf: Any, flags: int = _PARTIAL) -> None:
    if C.llama_state_seq_set_data_ext(ctx._ptr, buf, len(buf), 0, flags) != len(buf):
        ctx.clear()
        raise LlamaError(f"{ctx.model.path.name}: llama.cpp could not restore a saved state")


class Context:
    """A KV cache (and, for recurrent and hybrid models, a recurrent state) for one sequence.

    Positions are the caller's business: :meth:`decode` appends tokens at :attr:`n_past`, and
    :meth:`truncate` cuts back. How far back a cut can go depends on the model, chosen once here
    (:attr:`rewind`): ``"cache"`` (a plain KV cache, any position), ``"rollback"`` (llama.cpp
    keeps the last :data:`ROLLBACK_DEPTH` recurrent states of a decode) or ``"checkpoint"`` (the
    recurrent state is saved before a decode that may be cut back, and restored). Where no cut is
    possible, :meth:`truncate` lands earlier and says where: the caller decodes the rest again.
    ``flash_attn`` None lets llama.cpp decide; ``kv_type`` names the KV cache's element type (a key
    of :data:`KV_TYPES`); ``rollback`` is how many recurrent states llama.cpp keeps for a native
    cut, where the architecture allows (0: always checkpoints; benchmarks compare the two).
    """

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int,
        n_batch: int = 512,
        n_threads: int,
        n_threads_batch: int | None = None,
        flash_attn: bool | None = None,
        kv_type: str = "f16",
        rollback: int = ROLLBACK_DEPTH,
    ) -> None:
        self._ptr: Any = None
        self.model = model
        threads_batch = n_threads_batch or n_threads
        params = _params(model, n_ctx, n_batch, n_threads, threads_batch, flash_attn, kv_type, rollback)
        fix_tiled_matmul()
        ptr = C.llama_init_from_model(model._ptr, params)
        if not ptr:
            raise LlamaError(f"llama.cpp could not create a context of {n_ctx} tokens (out of memory?)")
        self._ptr = ptr
        self.n_ctx: int = C.llama_n_ctx(ptr)
        self.n_batch = n_batch
        self.n_threads = n_threads
        self.flash_attn = flash_attn
        self.kv_type = kv_type
        self.n_vocab = model.n_vocab
        self._mem = C.llama_get_memory(ptr)
        self._batch = _batch(n_batch)
        # llama.cpp clamps n_rs_seq to 0 in silence for architectures it cannot roll back.
        depth = int(C.llama_n_rs_seq(ptr)) if model.recurrent else 0
        self.rewind = "cache" if not model.recurrent else "rollback" if depth else "checkpoint"
        """How this context cuts back: ``"cache"``, ``"rollback"`` or ``"checkpoint"``."""
        self.native_depth = depth if model.recurrent else n_ctx
        """The most tokens of the last decode that :meth:`truncate` drops with no restore."""
        self._checkpoints = Checkpoints(depth if model.recurrent else None)
        self._cutting = False  # a cut is half done (interrupted): start again from nothing
        self._abort = AbortHook(ptr)

    def stop_when(self, check: Callable[[], bool] | None) -> None:
        """Ask ``check`` during long decodes (over :data:`STOPPABLE_FROM` tokens) after each node
        of llama.cpp's graph; True stops the decode with :class:`~edgespec.errors.Cancelled`,
        keeping the chunks decoded before it (:attr:`n_past` says how many tokens)."""
        self._abort.check = check

    def close(self) -> None:
        """Free the batch and the context."""
        if self._ptr is not None:
            C.llama_batch_free(self._batch)
            C.llama_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:
        self.close()

    def decode(self, tokens: Sequence[int], pos: int, n_logits: int = 1) -> np.ndarray:
        """Run ``tokens`` at positions ``pos...`` (``pos`` is :attr:`n_past`); return logits of the
        last ``n_logits`` rows.

        The last ``n_logits - 1`` tokens may be cut back afterwards (the guesses those rows verify):
        where that needs a checkpoint, one is saved first. The result is a float32 array of shape
        ``(n_logits, n_vocab)``, copied out of llama.cpp's buffer (which the next decode
        overwrites). Longer inputs are split into ``n_batch`` chunks; the rows asked for must lie
        in the last chunk.
        """
        n = len(tokens)
        last_chunk = n - (n - 1) // self.n_batch * self.n_batch if n else 0
        if n == 0 or n_logits > last_chunk:
            raise ValueError(f"cannot return {n_logits} logit rows for {n} tokens")
        if pos + n > self.n_ctx:
            raise LlamaError(f"the context is full ({self.n_ctx} tokens)")
        if pos != self.n_past:
            raise ValueError(f"decoding at position {pos}, but the context holds {self.n_past}")
        if n_logits - 1 > self.native_depth:
            self.checkpoint()
        self._checkpoints.room = 0  # no native cut until a chunk is in (an interrupt may come first)
        first_out = _decode_chunks(self, tokens, pos, n_logits)
        out = np.empty((n_logits, self.n_vocab), dtype=np.float32)
        for r in range(n_logits):
            row = C.llama_get_logits_ith(self._ptr, first_out + r)
            out[r] = np.ctypeslib.as_array(row, shape=(self.n_vocab,))
        return out

    @property
    def n_past(self) -> int:
        """How many positions the context holds (llama.cpp's count: an interrupt cannot make it stale)."""
        return int(C.llama_memory_seq_pos_max(self._mem, 0)) + 1

    def reach(self, n_keep: int) -> int:
        """Where :meth:`truncate` to ``n_keep`` would land (``n_keep`` or earlier), doing nothing."""
        return self.n_past if n_keep >= self.n_past else self._checkpoints.where(n_keep, self.n_past)[0]

    def truncate(self, n_keep: int) -> int:
        """Drop every position from ``n_keep`` on; returns :attr:`n_past`, which is ``n_keep``
        unless the recurrent state cannot be cut back there. Then it is the latest checkpoint
        before ``n_keep`` (or 0, an empty context), and the caller decodes the rest again."""
        n_past = self.n_past
        if n_keep >= n_past and not self._cutting:
            return n_past
        at, native = self._checkpoints.where(n_keep, n_past)
        if at == 0 or self._cutting:
            self.clear()
            return 0
        self._cutting = True
        if not native:
            _restore(self, self._checkpoints.get(at))  # then only the KV cache part is cut below
        if not C.llama_memory_seq_rm(self._mem, 0, at, -1):
            raise LlamaError(f"{self.model.path.name}: llama.cpp refused to cut its cache back")
        self._checkpoints.drop_after(at)
        self._cutting = False
        return at

    def checkpoint(self) -> None:
        """Save the recurrent state at :attr:`n_past` as the one to come back to from the decodes
        that follow (replacing the last one saved so): a draft saves it before drafting token by
        token. Nothing to do for a plain KV cache."""
        if self.model.recurrent:
            self._checkpoints.set_step(self.n_past, _save(self, self._checkpoints.step_buffer))

    def snapshot(self) -> None:
        """Keep the recurrent state at :attr:`n_past` so that a later :meth:`truncate` back to it
        (a new turn, the same prompt again) needs no re-reading; the oldest snapshots go first.
        Nothing to do for a plain KV cache."""
        if self.model.recurrent and self.n_past:
            self._checkpoints.add(self.n_past, _save(self, None))

    def clear(self) -> None:
        """Empty the cache and forget every checkpoint."""
        C.llama_memory_clear(self._mem, True)
        self.forget_checkpoints()

    def forget_checkpoints(self) -> None:
        """Forget every saved state (the cache was set from outside, :func:`load_state`)."""
        self._checkpoints = Checkpoints(self._checkpoints.native_depth)
        self._cutting = False
