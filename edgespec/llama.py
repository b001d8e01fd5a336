"""Thin wrapper over llama-cpp-python's C API; the only module that imports ``llama_cpp``.

One small class per C handle (:class:`Model`, :class:`Context`), freed in order; C failures become
:mod:`edgespec.errors` exceptions; files are checked in Python before llama.cpp sees them, because
a malformed file can crash the process inside C.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp as C
import numpy as np

from edgespec.errors import LlamaError, ModelFileError
from edgespec.ggufcheck import check_gguf

logger = logging.getLogger("edgespec.llama")

# ggml_log_level -> logging level. llama.cpp's INFO is a page of load details: keep it at DEBUG.
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_log_state: dict[str, Any] = {"level": logging.DEBUG, "buffer": ""}


def _on_log(level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
    # llama.cpp sends lines in pieces; level 5 (CONT) continues the previous piece.
    if level != 5:
        _log_state["level"] = _LOG_LEVELS.get(level, logging.DEBUG)
    _log_state["buffer"] += (text or b"").decode("utf-8", "replace")
    *lines, _log_state["buffer"] = _log_state["buffer"].split("\n")
    for line in lines:
        if line.strip():
            logger.log(_log_state["level"], "%s", line)


# Must stay referenced for the life of the process: llama.cpp keeps the raw pointer.
_LOG_CALLBACK = C.llama_log_callback(_on_log)
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        C.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        C.llama_backend_init()
        _backend_ready = True


def system_info() -> str:
    """llama.cpp's one-line description of the compiled backends and CPU features."""
    _init_backend()
    return str(C.llama_print_system_info().decode("utf-8", "replace")).strip()


# ggml reads GGML_CPU_TILED_MM once per process, at the first decode: fixed here with the first context.
_tiled_matmul: bool | None = None


def tiled_matmul() -> bool:
    """Whether ggml-cpu's tiled K-quant matmul is on in this process (from 8 rows a batch on).

    It computes batches with other roundings than single steps. Until the first context is made
    this is the value that context will fix; from then on it cannot change in this process."""
    if _tiled_matmul is not None:
        return _tiled_matmul
    value = os.environ.get("GGML_CPU_TILED_MM")
    number = re.match(r"\s*([+-]?\d+)", value or "")
    return value is None or (number is not None and int(number[1]) != 0)  # ggml: unset, or atoi != 0


def set_tiled_matmul(on: bool) -> bool:
    """Turn ggml-cpu's tiled matmul on or off for this process; only possible before the first
    context is made. Returns whether it is now as asked."""
    if _tiled_matmul is None:
        os.environ["GGML_CPU_TILED_MM"] = "1" if on else "0"
    return tiled_matmul() == on


def supports_gpu_offload() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (CUDA, Metal, Vulkan...)."""
    _init_backend()
    return bool(C.llama_supports_gpu_offload())


# ---------------------------------------------------------------------------- model


class Model:
    """A loaded GGUF model: weights and vocabulary. Contexts (KV caches) are made from it."""

    def __init__(self, path: str | Path, *, n_gpu_layers: int = 0, repack: bool = True) -> None:
        """``repack`` lets llama.cpp repack weights into its faster CPU layouts ("extra buffer
        types"); their kernels change with the batch size, so exact mode turns it off."""
        self._ptr: Any = None
        self.path = check_gguf(path)
        _init_backend()
        params = C.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = repack
        ptr = C.llama_model_load_from_file(str(self.path).encode(), params)
        if not ptr:
            raise ModelFileError(f"llama.cpp could not load {self.path} (run with -v for its log)")
        self._ptr = ptr
        self._vocab = C.llama_model_get_vocab(ptr)
        self.n_vocab: int = C.llama_vocab_n_tokens(self._vocab)
        self.vocab_type: int = C.llama_vocab_type(self._vocab)
        self.bos: int = C.llama_vocab_bos(self._vocab)
        self.eos: int = C.llama_vocab_eos(self._vocab)
        self.add_bos: bool = bool(C.llama_vocab_get_add_bos(self._vocab))
        self.add_eos: bool = bool(C.llama_vocab_get_add_eos(self._vocab))
        self.n_ctx_train: int = C.llama_model_n_ctx_train(ptr)
        self.repack = repack
        # llama_vocab_is_eog is a C call per token; the engine checks every emitted token.
        self._eog_cache: dict[int, bool] = {}

    def close(self) -> None:
        """Free the weights. Contexts made from this model must be closed first."""
        if self._ptr is not None:
            C.llama_model_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:
        self.close()

    def head_sizes(self) -> tuple[int, int]:
        """The attention heads' key and value widths (GGUF ``*.attention.key_length`` and
        ``value_length``, else the embedding width over the head count)."""
        n_head = C.llama_model_n_head(self._ptr)
        default = C.llama_model_n_embd(self._ptr) // n_head if n_head > 0 else 0
        arch = self._meta("general.architecture")
        key, value = (self._meta(f"{arch}.attention.{kv}_length") for kv in ("key", "value"))
        return (int(key) if key.isdigit() else default, int(value) if value.isdigit() else default)

    def _meta(self, key: str) -> str:
        # A short GGUF metadata value as text; "" when absent.
        buf = ctypes.create_string_buffer(256)
        n = C.llama_model_meta_val_str(self._ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else ""

    def chat_template(self) -> str | None:
        """The model's default ``tokenizer.chat_template``, or None."""
        raw = C.llama_model_chat_template(self._ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT, <|im_end|>...)."""
        hit = self._eog_cache.get(token)
        if hit is None:
            hit = self._eog_cache[token] = bool(C.llama_vocab_is_eog(self._vocab, token))
        return hit

    def token_text(self, token: int) -> bytes:
        """The vocabulary entry's raw text (as stored in the GGUF), for compatibility checks."""
        raw = C.llama_vocab_get_text(self._vocab, token)
        return bytes(raw) if raw else b""

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Text -> token ids. ``add_special`` adds BOS/EOS as the model asks; ``parse_special``
        turns control-token text such as ``<|im_start|>`` into those tokens."""
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (C.llama_token * n_max)()
        n = C.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (C.llama_token * n_max)()
            n = C.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            raise LlamaError(f"llama.cpp could not tokenize the text ({n})")
        return list(buf[:n])

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        """The bytes one token stands for (a piece may be part of a UTF-8 character).

        Control tokens render as empty unless ``special`` is true."""
        buf = ctypes.create_string_buffer(64)
        n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        """Token ids -> text (invalid UTF-8 at the edges is replaced)."""
        return b"".join(self.token_bytes(t, special=special) for t in tokens).decode("utf-8", "replace")


# ---------------------------------------------------------------------------- context

_DECODE_ERRORS = {
    1: "no room in the KV cache for the batch (the context is full)",
    2: "aborted",
    -1: "invalid input batch",
}


KV_TYPES = {"f16": C.GGML_TYPE_F16, "q8_0": C.GGML_TYPE_Q8_0}
"""KV cache element types a context may be made with, by name."""


class Context:
    """A KV cache and compute state for one sequence of one model.

    Positions are the caller's business: :meth:`decode` writes tokens at ``pos, pos+1, ...``
    and :meth:`truncate` drops everything from a position on. ``flash_attn`` None lets
    llama.cpp decide; ``kv_type`` names the KV cache's element type (a key of :data:`KV_TYPES`).
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
    ) -> None:
        global _tiled_matmul
        self._ptr: Any = None
        self.model = model
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
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch or n_threads
        params.no_perf = True
        if _tiled_matmul is None:
            _tiled_matmul = tiled_matmul()
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
        self._batch = C.llama_batch_init(n_batch, 0, 1)
        for i in range(n_batch):
            self._batch.n_seq_id[i] = 1
            self._batch.seq_id[i][0] = 0

    def close(self) -> None:
        """Free the batch and the context."""
        if self._ptr is not None:
            C.llama_batch_free(self._batch)
            C.llama_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:
        self.close()

    def decode(self, tokens: Sequence[int], pos: int, n_logits: int = 1) -> np.ndarray:
        """Run ``tokens`` at positions ``pos...``; return logits of the last ``n_logits`` rows.

        The result is a float32 array of shape ``(n_logits, n_vocab)``, copied out of llama.cpp's
        buffer (which the next decode overwrites). Longer inputs are split into ``n_batch``
        chunks; the rows asked for must lie in the last chunk.
        """
        n = len(tokens)
        last_chunk = n - (n - 1) // self.n_batch * self.n_batch if n else 0
        if n == 0 or n_logits > last_chunk:
            raise ValueError(f"cannot return {n_logits} logit rows for {n} tokens")
        if pos + n > self.n_ctx:
            raise LlamaError(f"the context is full ({self.n_ctx} tokens)")
        batch = self._batch
        start = 0
        while start < n:
            chunk = min(self.n_batch, n - start)
            last = start + chunk == n
            first_out = chunk - n_logits if last else chunk
            for i in range(chunk):
                batch.token[i] = tokens[start + i]
                batch.pos[i] = pos + start + i
                batch.logits[i] = i >= first_out
            batch.n_tokens = chunk
            ret = C.llama_decode(self._ptr, batch)
            if ret != 0:
                why = _DECODE_ERRORS.get(ret, "fatal error")
                raise LlamaError(f"llama_decode failed with {ret}: {why}")
            start += chunk
        out = np.empty((n_logits, self.n_vocab), dtype=np.float32)
        for r in range(n_logits):
            row = C.llama_get_logits_ith(self._ptr, first_out + r)
            out[r] = np.ctypeslib.as_array(row, shape=(self.n_vocab,))
        return out

    def truncate(self, n_keep: int) -> None:
        """Drop every cached position from ``n_keep`` on.

        Raises :class:`LlamaError` where llama.cpp refuses a partial removal, as it does for
        recurrent and hybrid models, whose state cannot be rewound.
        """
        if not C.llama_memory_seq_rm(self._mem, 0, n_keep, -1):
            raise LlamaError(
                f"{self.model.path.name}: llama.cpp cannot rewind this model's cache "
                "(recurrent or hybrid architecture); speculative decoding needs a rewindable cache"
            )

    def clear(self) -> None:
        """Empty the KV cache."""
        C.llama_memory_clear(self._mem, True)

    def n_cached(self) -> int:
        """How many positions the cache holds (max position + 1)."""
        return int(C.llama_memory_seq_pos_max(self._mem, 0)) + 1
