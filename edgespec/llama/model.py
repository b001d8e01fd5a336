"""A loaded GGUF model: weights and vocabulary (:class:`Model`)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llama_cpp as C

from edgespec.errors import LlamaError, ModelFileError
from edgespec.ggufcheck import check_gguf
from edgespec.llama.backend import init_backend


class Model:
    """A loaded GGUF model: weights and vocabulary. Contexts (KV caches) are made from it."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_gpu_layers: int = 0,
        repack: bool = True,
        load_mtp: bool = False,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """``repack`` lets llama.cpp repack weights into its faster CPU layouts ("extra buffer
        types"); their kernels change with the batch size, so exact mode turns it off. ``load_mtp``
        also loads the MTP layers a model has (:mod:`edgespec.llama.mtp`), where this
        llama-cpp-python can load them. ``progress`` is called with the share loaded so far (0 to
        1) as llama.cpp reads the file."""
        self._ptr: Any = None
        self.path = check_gguf(path)
        init_backend()
        params = C.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = repack
        mtp_loaded = load_mtp and "load_mtp" in dict(C.llama_model_params._fields_)
        if mtp_loaded:
            params.load_mtp = True
        caught: list[BaseException] = []
        if progress is not None:
            # Referenced until loading returns, which is as long as llama.cpp keeps the pointer.
            callback = C.llama_progress_callback(_progress_callback(progress, caught))
            params.progress_callback = callback
        ptr = C.llama_model_load_from_file(str(self.path).encode(), params)
        if caught:  # Ctrl-C (or the callback failing) stopped the loading: pass it on
            if ptr:
                C.llama_model_free(ptr)
            raise caught[0]
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
        self.arch = self.meta("general.architecture")
        self.n_embd_out: int = int(C.llama_model_n_embd_out(ptr))
        """The width of the hidden rows it outputs (an assistant's: its target's width)."""
        self.recurrent: bool = bool(C.llama_model_is_recurrent(ptr) or C.llama_model_is_hybrid(ptr))
        """Whether some layers keep a recurrent state (Mamba, DeltaNet, short convolutions...), which
        cannot be cut back to an arbitrary position like a KV cache."""
        nextn = getattr(C, "llama_model_n_layer_nextn", None)
        self.n_layer_nextn: int = int(nextn(ptr)) if nextn else 0
        """MTP (NextN) layers in the file, loaded or not."""
        self.mtp_loaded = mtp_loaded and self.n_layer_nextn > 0
        """Whether the MTP layers were loaded (an MTP context may be made on this model)."""
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
        key, value = (self.meta(f"{self.arch}.attention.{kv}_length") for kv in ("key", "value"))
        return (int(key) if key.isdigit() else default, int(value) if value.isdigit() else default)

    def meta(self, key: str) -> str:
        """A short GGUF metadata value (not an array) as text; "" when absent."""
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


def _progress_callback(
    progress: Callable[[float], None], caught: list[BaseException]
) -> Callable[[float, ctypes.c_void_p], bool]:
    """llama.cpp's loading callback around ``progress``: an exception raised in it (Ctrl-C in the
    main thread) would be lost inside ctypes, so it stops the loading and is kept in ``caught``."""

    def call(fraction: float, _data: ctypes.c_void_p) -> bool:
        try:
            progress(float(fraction))
        except BaseException as exc:
            caught.append(exc)
            return False
        return True

    return call
