"""Check that a file is a complete, sane GGUF model before llama.cpp opens it.

llama.cpp is C: a truncated or malformed file can crash the process inside it, and absurd
hyperparameters (a block count of 0, billions of heads) trip its assertions, which abort the
process. This module reads the header, every metadata entry and every tensor description in
Python, without loading weights and never reading or skipping past the end of the file, then checks
the hyperparameters llama.cpp sizes the model by (``llama_model::load_hparams``, ``llama_vocab::load``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, Keys

from edgespec.errors import ModelFileError

_FORMATS = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_MAX_DIMS = 4  # GGML_MAX_DIMS
# Index and mapping tensors may hold integers; a weight of an integer type, or of float64 (which a
# careless numpy conversion writes), makes llama.cpp's matrix products call a kernel that does not
# exist (a segfault).
_UNCOMPUTABLE_TYPES = {
    GGMLQuantizationType.I8: "the integer type I8",
    GGMLQuantizationType.I16: "the integer type I16",
    GGMLQuantizationType.I32: "the integer type I32",
    GGMLQuantizationType.I64: "the integer type I64",
    GGMLQuantizationType.F64: "the type F64",
}
_KEPT_STRING = 256  # longer string values (chat templates) are skipped, not kept
_KEPT_ARRAY = 1024  # numeric arrays up to this long are kept (per-layer hyperparameters)

# Hyperparameter ranges. llama.cpp asserts 1 <= block_count <= LLAMA_MAX_LAYERS (512) and aborts
# the process otherwise. The other ceilings are far above any published model (widths of about
# 16k, contexts of about 10M tokens, vocabularies of about 260k) and far below what would make
# llama.cpp allocate more than a machine has.
MAX_LAYERS = 512
MAX_WIDTH = 1 << 20
MAX_CONTEXT = 1 << 27
MAX_VOCAB = 1 << 22


@dataclass(frozen=True)
class _Array:
    item_type: int
    count: int
    values: tuple[Any, ...] | None  # kept for short numeric arrays only


def check_gguf(path: str | Path) -> Path:
    """Check that ``path`` is a complete GGUF file with sane hyperparameters.

    Reads the header, every metadata entry and every tensor description, checks that the tensor
    data they describe lies inside the file, and that the block count, widths, head counts, context
    length and vocabulary agree with each other and with the tensor shapes. Raises
    :class:`ModelFileError` naming the problem (the key and its value); returns the path otherwise.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelFileError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelFileError(f"{p} is a directory; give the path of a .gguf file")
    try:
        with p.open("rb") as f:
            metadata, tensors = _Reader(f, p.stat().st_size, p).read_file()
    except OSError as exc:
        raise ModelFileError(f"cannot read {p}: {exc.strerror or exc}") from exc
    _check_hparams(metadata, tensors, p)
    return p


def read_metadata(path: str | Path) -> dict[str, object]:
    """The metadata of a GGUF file :func:`check_gguf` has passed: short numeric arrays (per-layer
    hyperparameters) as tuples, long strings as None."""
    p = Path(path)
    with p.open("rb") as f:
        metadata, _ = _Reader(f, p.stat().st_size, p).read_file()
    return {k: v.values if isinstance(v, _Array) else v for k, v in metadata.items()}


class _Reader:
    """Reads GGUF structures; every length is checked against what is left of the file first."""

    def __init__(self, f: BinaryIO, size: int, p: Path) -> None:
        self.f, self.size, self.p, self.pos = f, size, p, 0

    def truncated(self) -> ModelFileError:
        return ModelFileError(f"{self.p} is truncated or corrupt: its GGUF header ends early")

    def corrupt(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.p} is corrupt: {what}")

    def read(self, n: int) -> bytes:
        if n > self.size - self.pos:
            raise self.truncated()
        data = self.f.read(n)
        if len(data) != n:
            raise self.truncated()
        self.pos += n
        return bytes(data)

    def skip(self, n: int) -> None:
        if n > self.size - self.pos:
            raise self.truncated()
        self.pos += n
        self.f.seek(self.pos)

    def u32(self) -> int:
        return int(struct.unpack("<I", self.read(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.read(8))[0])

    def string(self, keep: int) -> bytes | None:
        n = self.u64()
        if n > keep:
            self.skip(n)
            return None
        return self.read(n)

    def count(self, n: int, min_bytes: int, what: str) -> int:
        # Each item takes at least min_bytes: a count the rest of the file cannot hold is corrupt,
        # refused at once rather than looped over.
        if n > (self.size - self.pos) // min_bytes:
            raise ModelFileError(
                f"{self.p} is truncated or corrupt: {what} claims {n:,} entries, "
                "more than the rest of the file can hold"
            )
        return n

    def value(self, vtype: int, key: str) -> object:
        if vtype == GGUFValueType.STRING:
            raw = self.string(_KEPT_STRING)
            return None if raw is None else raw.decode("utf-8", "replace")
        if vtype == GGUFValueType.ARRAY:
            return self.array(key)
        fmt = _FORMATS.get(vtype)
        if fmt is None:
            raise self.corrupt(f"metadata {key!r} has the unknown GGUF value type {vtype}")
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt)))[0]

    def array(self, key: str) -> _Array:
        item_type, n = self.u32(), self.u64()
        fmt = _FORMATS.get(item_type)
        if fmt is not None:
            width = struct.calcsize(fmt)
            self.count(n, width, repr(key))
            if n <= _KEPT_ARRAY:
                return _Array(item_type, n, struct.unpack(f"<{n}{fmt}", self.read(n * width)))
            self.skip(n * width)
            return _Array(item_type, n, None)
        if item_type != GGUFValueType.STRING:
            # llama.cpp reads arrays of scalars and of strings only (no arrays of arrays).
            raise self.corrupt(f"metadata {key!r} is an array of GGUF type {item_type}")
        self.count(n, 8, repr(key))
        if key == Keys.Tokenizer.LIST:
            self.tokens(n)
        else:
            for _ in range(n):
                self.skip(self.u64())
        return _Array(item_type, n, None)

    def tokens(self, n: int) -> None:
        # llama.cpp asserts that no two tokens share a text (it aborts the process otherwise),
        # naming an empty token "[EMPTY_<id>]" as it does.
        if n > MAX_VOCAB:
            raise ModelFileError(
                f"{self.p}: {Keys.Tokenizer.LIST} has {n:,} entries; at most {MAX_VOCAB:,} are allowed"
            )
        seen: dict[bytes, int] = {}
        for i in range(n):
            text = self.read(self.u64()) or f"[EMPTY_{i}]".encode()
            first = seen.setdefault(text, i)
            if first != i:
                raise self.corrupt(
                    f"{Keys.Tokenizer.LIST} holds the token {text.decode('utf-8', 'replace')!r} twice "
                    f"(ids {first} and {i})"
                )

    def read_file(self) -> tuple[dict[str, object], dict[str, list[int]]]:
        if self.size < 4 or self.f.read(4) != b"GGUF":
            raise ModelFileError(f"{self.p} is not a GGUF file (it does not start with the bytes 'GGUF')")
        self.pos = 4
        version = self.u32()
        if version not in (2, 3):
            raise ModelFileError(f"{self.p} has GGUF version {version}; llama.cpp reads versions 2 and 3")
        n_tensors, n_kv = self.u64(), self.u64()
        self.count(n_kv, 13, "the metadata table")  # key length, a 1-byte key, type, 1-byte value
        metadata: dict[str, object] = {}
        for _ in range(n_kv):
            raw = self.string(1024)
            if not raw:
                raise self.corrupt("a metadata key is empty or longer than 1 KiB")
            key = raw.decode("utf-8", "replace")
            metadata[key] = self.value(self.u32(), key)
        alignment = metadata.get(Keys.General.ALIGNMENT, 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise self.corrupt(f"{Keys.General.ALIGNMENT} is {alignment!r}, not a power of 2")
        self.count(n_tensors, 24, "the tensor table")  # name length, dims, type, offset
        tensors: dict[str, list[int]] = {}
        end = 0
        for _ in range(n_tensors):
            name = (self.string(1024) or b"").decode("utf-8", "replace")
            n_dims = self.u32()
            if n_dims > _MAX_DIMS:
                raise self.corrupt(f"tensor {name!r} has {n_dims} dimensions; llama.cpp allows {_MAX_DIMS}")
            dims = [self.u64() for _ in range(n_dims)]
            ggml_type, offset = self.u32(), self.u64()
            if name.endswith(".weight") and ggml_type in _UNCOMPUTABLE_TYPES:
                kind = _UNCOMPUTABLE_TYPES[ggml_type]
                raise self.corrupt(f"the weight {name} has {kind}; llama.cpp cannot compute with it")
            tensors[name] = dims
            end = max(end, offset + _tensor_nbytes(ggml_type, dims, self.p))
        data_start = -(-self.pos // alignment) * alignment
        if data_start + end > self.size:
            raise ModelFileError(
                f"{self.p} is truncated: its tensors need {data_start + end:,} bytes "
                f"but the file has {self.size:,}"
            )
        return metadata, tensors


def _tensor_nbytes(ggml_type: int, dims: list[int], p: Path) -> int:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ModelFileError(
            f"{p} uses a tensor type ({ggml_type}) this gguf package does not know"
        ) from None
    n = 1
    for d in dims:
        n *= d
    return int(n // block * type_size)


# ---------------------------------------------------------------------------- hyperparameters


def _bad(p: Path, key: str, value: object, but: str) -> ModelFileError:
    shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    return ModelFileError(f"{p}: {key} is {shown}, but {but}")


def _integer(meta: dict[str, object], key: str, low: int, high: int, p: Path) -> int:
    value = meta.get(key)
    if value is None:
        raise ModelFileError(f"{p}: the metadata key {key} is missing; llama.cpp needs it")
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(p, key, value, f"it must be an integer from {low:,} to {high:,}")
    return value


def _per_layer(meta: dict[str, object], key: str, n_layer: int, high: int, p: Path) -> list[int] | None:
    """A value given once or once per layer (llama.cpp's get_key_or_arr), as a per-layer list."""
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, _Array):
        if value.count != n_layer or value.values is None:
            raise ModelFileError(
                f"{p}: {key} is an array of {value.count:,} values, "
                f"but llama.cpp needs one value or one per layer ({n_layer})"
            )
        values = list(value.values)
    else:
        values = [value] * n_layer
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= high:
            raise _bad(p, key, v, f"it must be an integer from 0 to {high:,}")
    return values


def _has_attention(tensors: dict[str, list[int]], layer: int) -> str | None:
    for name in ("attn_q", "attn_qkv", "attn_k"):
        if f"blk.{layer}.{name}.weight" in tensors:
            return f"blk.{layer}.{name}.weight"
    return None


def _check_hparams(meta: dict[str, object], tensors: dict[str, list[int]], p: Path) -> None:
    arch = meta.get(Keys.General.ARCHITECTURE)
    if not isinstance(arch, str):
        return  # llama.cpp refuses a file without an architecture by itself, cleanly
    block_key = Keys.LLM.BLOCK_COUNT.format(arch=arch)
    width_key = Keys.LLM.EMBEDDING_LENGTH.format(arch=arch)
    n_layer = _integer(meta, block_key, 1, MAX_LAYERS, p)
    n_embd = _integer(meta, width_key, 1, MAX_WIDTH, p)
    _integer(meta, Keys.LLM.CONTEXT_LENGTH.format(arch=arch), 1, MAX_CONTEXT, p)

    head_key = Keys.Attention.HEAD_COUNT.format(arch=arch)
    kv_key = Keys.Attention.HEAD_COUNT_KV.format(arch=arch)
    heads = _per_layer(meta, head_key, n_layer, n_embd, p) or [0] * n_layer
    kv_heads = _per_layer(meta, kv_key, n_layer, n_embd, p) or heads
    for layer, (n_head, n_kv) in enumerate(zip(heads, kv_heads, strict=True)):
        # Layers without attention tensors may have no heads (recurrent layers, DeciLM's
        # attention-free and linear-attention layers); llama.cpp sizes attention tensors by both.
        attention = _has_attention(tensors, layer)
        if attention is not None and 0 in (n_head, n_kv):
            key = head_key if n_head == 0 else kv_key
            raise _bad(p, key, 0, f"the model has attention tensors ({attention})")
        if n_kv > n_head > 0:
            raise _bad(p, kv_key, n_kv, f"it must be at most {head_key} ({n_head})")

    tokens = meta.get(Keys.Tokenizer.LIST)
    n_vocab = tokens.count if isinstance(tokens, _Array) else None
    vocab_key = Keys.LLM.VOCAB_SIZE.format(arch=arch)
    if vocab_key in meta and n_vocab is not None and meta[vocab_key] != n_vocab:
        raise _bad(p, vocab_key, meta[vocab_key], f"{Keys.Tokenizer.LIST} has {n_vocab:,} entries")
    for name in ("token_embd.weight", "output.weight"):
        dims = tensors.get(name)
        if dims is None or len(dims) != 2:
            continue
        if dims[0] != n_embd:
            raise _bad(p, width_key, n_embd, f"the tensor {name} is {dims[0]:,} wide")
        if n_vocab is not None and dims[1] != n_vocab:
            raise ModelFileError(
                f"{p}: the tensor {name} has {dims[1]:,} rows "
                f"but {Keys.Tokenizer.LIST} has {n_vocab:,} entries"
            )
