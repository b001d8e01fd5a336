"""A target's own MTP (multi-token prediction, NextN) layers as a drafter's context.

Qwen3.5/3.6, GLM-4.5 and DeepSeek GGUFs carry MTP layers after the trunk. Loaded with
``llama_model_params.load_mtp``, a second context on the same model with ``ctx_type =
LLAMA_CONTEXT_TYPE_MTP`` runs them: at position p it reads token p with the target's hidden row at
p - 1 (the row that predicted token p) and predicts token p + 1; drafting on, it reads its own rows.
llama.cpp's driver is common/speculative.cpp (``draft-mtp``).

The hidden-row calls are not in llama.h: llama-cpp-python binds them in its private
``llama_cpp.llama_cpp_ext`` by their C++ symbol names, so :func:`bindings` checks for them and says
what is missing, once, instead of crashing.
"""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import llama_cpp as C
import numpy as np

from edgespec.errors import LlamaError, MtpUnavailableError
from edgespec.llama.abort import AbortHook
from edgespec.llama.context import STOPPABLE_FROM, Context, on_decode, restore_state, save_state
from edgespec.llama.model import Model

_BATCH_CALLS = (
    "llama_batch_ext_init",
    "llama_batch_ext_add_token",
    "llama_batch_ext_set_embd_token",
    "llama_batch_ext_set_pos",
    "llama_batch_ext_set_output_logits",
    "llama_process",
)
_EXT_CALLS = ("llama_set_embeddings_nextn", "llama_get_embeddings_nextn", "llama_get_embeddings_nextn_ith")


@cache
def bindings() -> Any:
    """llama-cpp-python's private ``llama_cpp_ext`` module, checked to bind what MTP drafting needs;
    raises :class:`MtpUnavailableError` naming what this build lacks."""
    missing = [name for name in _BATCH_CALLS if not hasattr(C, name)]
    missing += [f for f in ("load_mtp",) if f not in dict(C.llama_model_params._fields_)]
    missing += [f for f in ("ctx_type", "ctx_other") if f not in dict(C.llama_context_params._fields_)]
    try:
        ext = importlib.import_module("llama_cpp.llama_cpp_ext")
    except (ImportError, AttributeError) as exc:  # AttributeError: a symbol its module binds is absent
        raise MtpUnavailableError(
            f"this llama-cpp-python cannot drive MTP layers: llama_cpp.llama_cpp_ext failed ({exc}); "
            "llama-cpp-python 0.3.36 or later binds them"
        ) from None
    missing += [name for name in _EXT_CALLS if not hasattr(ext, name)]
    if missing:
        raise MtpUnavailableError(
            f"this llama-cpp-python cannot drive MTP layers: it lacks {', '.join(missing)}; "
            "llama-cpp-python 0.3.36 or later binds them"
        )
    return ext


class HiddenRows:
    """The target's hidden rows (its last layer, output-normed: what feeds an MTP layer), kept by
    position after every decode of the target context, so that the MTP context can read the tokens
    it has not seen with the rows that go with them whenever it next drafts.

    A row at position p is the one the target computed for the token it holds there, once the
    target has decoded p; the array is the context's size (``n_ctx`` rows)."""

    def __init__(self, target: Context) -> None:
        ext = bindings()
        self.n_embd = int(C.llama_model_n_embd_out(target.model._ptr))
        self.rows = np.zeros((target.n_ctx, self.n_embd), dtype=np.float32)
        ext.llama_set_embeddings_nextn(target._ptr, True, False)  # every token's row, not only outputs
        self._get = ext.llama_get_embeddings_nextn
        on_decode(target, self._keep)

    def _keep(self, ctx: Context, pos: int, n: int) -> None:
        ptr = self._get(ctx._ptr)
        if not ptr:
            raise LlamaError(f"{ctx.model.path.name}: llama.cpp returned no hidden rows")
        self.rows[pos : pos + n] = np.ctypeslib.as_array(ptr, shape=(n, self.n_embd))

    def before(self, start: int, stop: int) -> np.ndarray:
        """The rows that go with tokens ``start..stop-1``: row p - 1 for token p (zeros for 0)."""
        if start > 0:
            return self.rows[start - 1 : stop - 1]
        return np.concatenate([np.zeros((1, self.n_embd), np.float32), self.rows[: stop - 1]])


class MtpContext:
    """Drafting layers that read tokens paired with hidden rows: by default the target's own MTP
    layers (its model must have been loaded with ``load_mtp``), with their own KV cache (a plain
    attention cache, whatever the trunk); or a separate ``assistant`` model (Gemma 4's), which has
    no cache of its own and reads the target's (:attr:`shared`).

    An assistant's context must be made before the target decodes anything: llama.cpp lays out the
    cache they share anew when it is made (the target's contents are lost)."""

    def __init__(self, target: Context, assistant: Model | None = None) -> None:
        self._ptr: Any = None
        ext = bindings()
        model = assistant or target.model
        self.model = model
        self.target = target
        self.shared = assistant is not None
        """Whether it reads the target's cache (an assistant): it holds what the target holds, every
        guess is read at the position after it, and cutting or clearing it is the target's business."""
        if not self.shared and (not model.n_layer_nextn or not model.mtp_loaded):
            raise MtpUnavailableError(f"{model.path.name} has no MTP layers loaded")
        if self.shared and target.n_past:  # making it would empty the target's cache behind its back
            raise ValueError("an assistant's context must be made before the target reads anything")
        params = C.llama_context_default_params()
        params.n_ctx = target.n_ctx
        params.n_batch = params.n_ubatch = target.n_batch
        params.n_seq_max = 1
        params.n_rs_seq = 0
        params.n_threads = params.n_threads_batch = target.n_threads
        params.no_perf = True
        params.ctx_type = C.LLAMA_CONTEXT_TYPE_MTP
        params.ctx_other = target._ptr  # the driver's convention; an assistant reads this one's cache
        ptr = C.llama_init_from_model(model._ptr, params)
        if not ptr:
            raise MtpUnavailableError(f"llama.cpp could not make a drafting context for {model.path.name}")
        self._ptr = ptr
        ext.llama_set_embeddings_nextn(ptr, True, True)  # its own rows, for the rows it outputs
        self._own_row = ext.llama_get_embeddings_nextn_ith
        self.n_ctx = target.n_ctx
        self.n_batch = target.n_batch
        self.n_threads = target.n_threads
        self.n_vocab = model.n_vocab
        self.n_embd = int(C.llama_model_n_embd_out(model._ptr))
        self._mem = C.llama_get_memory(ptr)
        self._batch = C.llama_batch_ext_init(ptr)
        self._pos = (C.llama_pos * 1)()
        self._abort = AbortHook(ptr)

    def stop_when(self, check: Callable[[], bool] | None) -> None:
        """Ask ``check`` during a long catching up (a prompt), as :meth:`Context.stop_when` does: True
        stops it with :class:`~edgespec.errors.Cancelled`, the chunks read kept (:attr:`n_past`)."""
        self._abort.check = check

    def close(self) -> None:
        """Free the batch and the context (before the target's model)."""
        if self._ptr is not None:
            C.llama_batch_ext_free(self._batch)
            C.llama_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:
        self.close()

    @property
    def n_past(self) -> int:
        """How many positions the cache holds (an assistant's: the target's)."""
        return int(C.llama_memory_seq_pos_max(self._mem, 0)) + 1

    def decode(self, tokens: Sequence[int], rows: np.ndarray, pos: int) -> tuple[np.ndarray, np.ndarray]:
        """Read ``tokens`` at ``pos...`` (:attr:`n_past`), each with its row of ``rows``; return the
        logits after the last one and its own hidden row (what a next guess reads), both copied.
        Longer inputs are decoded in ``n_batch`` chunks, and can be stopped (:meth:`stop_when`)."""
        n = len(tokens)
        if n == 0 or rows.shape != (n, self.n_embd):
            raise ValueError(f"cannot decode {n} tokens with hidden rows of shape {rows.shape}")
        if pos + n > self.n_ctx:
            raise LlamaError(f"the MTP context is full ({self.n_ctx} tokens)")
        if pos != self.n_past:
            raise ValueError(f"decoding at position {pos}, but the MTP context holds {self.n_past}")
        if self.shared and n > 1:  # it writes nothing to the cache: a token reads what the target holds
            raise ValueError(f"an assistant reads one token at a time, not {n}")
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        stoppable = n > STOPPABLE_FROM
        self._abort.arm(stoppable)
        for start in range(0, n, self.n_batch):
            stop = min(start + self.n_batch, n)
            ret = self._decode_chunk(tokens[start:stop], rows[start:stop], pos + start, stop == n)
            if ret == 2:  # stopped: llama.cpp dropped this chunk's cells, the chunks before stay
                read = f"{self.n_past} tokens read are kept"
                raise self._abort.stopped(f"stopped while the MTP layers caught up; {read}")
            if ret != 0:
                raise LlamaError(f"llama_process on the MTP context failed with {ret}")
        if stoppable and (interrupt := self._abort.take_interrupt()):
            raise interrupt  # caught as the last node finished: the decode is whole
        last = stop - start - 1
        logits = np.ctypeslib.as_array(C.llama_get_logits_ith(self._ptr, last), shape=(self.n_vocab,))
        own = self._own_row(self._ptr, last)
        if not own:
            raise LlamaError(f"{self.model.path.name}: llama.cpp returned no MTP hidden row")
        return logits.copy(), np.ctypeslib.as_array(own, shape=(self.n_embd,)).copy()

    def _decode_chunk(self, tokens: Sequence[int], rows: np.ndarray, pos: int, last: bool) -> int:
        batch, n = self._batch, len(tokens)
        C.llama_batch_ext_clear(batch)
        row = C.llama_embd(None, 1, self.n_embd)
        for i, token in enumerate(tokens):
            idx = C.llama_batch_ext_add_token(batch, 0, token)
            row.data = rows[i].ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            self._pos[0] = pos + i
            if (
                idx != i
                or not C.llama_batch_ext_set_embd_token(batch, idx, row)  # copied into the batch
                or not C.llama_batch_ext_set_pos(batch, idx, self._pos)
                or not C.llama_batch_ext_set_output_logits(batch, idx, last and i == n - 1)
            ):
                raise LlamaError(f"llama.cpp refused MTP batch entry {i} (token {token} at {pos + i})")
        return int(C.llama_process(self._ptr, C.LLAMA_PROCESS_TYPE_DECODE, batch))

    def truncate(self, n_keep: int) -> None:
        """Drop every position from ``n_keep`` on (a plain KV cache: any position); an assistant's
        cache is the target's, cut with it."""
        if self.shared:
            return
        if n_keep < self.n_past and not C.llama_memory_seq_rm(self._mem, 0, n_keep, -1):
            raise LlamaError(f"{self.model.path.name}: llama.cpp refused to cut the MTP cache back")

    def clear(self) -> None:
        """Empty the cache (an assistant's is the target's: left as it is)."""
        if not self.shared:
            C.llama_memory_clear(self._mem, True)

    def save(self) -> bytes | None:
        """What the cache holds (None: nothing, or it is the target's, an assistant's)."""
        return None if self.shared or not self.n_past else save_state(self)

    def load(self, data: bytes | None) -> None:
        """Bring back what :meth:`save` returned (None: empty); refused by llama.cpp, it stays empty."""
        self.clear()
        if data is not None and not self.shared:
            restore_state(self, data)
