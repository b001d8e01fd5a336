"""Check that a file is a complete GGUF model before llama.cpp opens it.

llama.cpp is C: a truncated or malformed file can crash the process inside it. This module reads
the header, every metadata entry and every tensor description in Python, without loading weights.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from edgespec.errors import ModelFileError

_GGUF_VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def check_gguf(path: str | Path) -> Path:
    """Check that ``path`` is a complete GGUF file before llama.cpp opens it.

    Reads the header, every metadata entry and every tensor description, and checks that the
    tensor data they describe lies inside the file. Raises :class:`ModelFileError` naming the
    problem; returns the path otherwise.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelFileError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelFileError(f"{p} is a directory; give the path of a .gguf file")
    try:
        with p.open("rb") as f:
            _check_gguf_stream(f, p.stat().st_size, p)
    except OSError as exc:
        raise ModelFileError(f"cannot read {p}: {exc.strerror or exc}") from exc
    return p


def _check_gguf_stream(f: Any, size: int, p: Path) -> None:
    truncated = ModelFileError(f"{p} is truncated or corrupt: its GGUF header ends early")

    def read(n: int) -> bytes:
        data = f.read(n)
        if len(data) != n:
            raise truncated
        return bytes(data)

    def u32() -> int:
        return int(struct.unpack("<I", read(4))[0])

    def u64() -> int:
        return int(struct.unpack("<Q", read(8))[0])

    def skip_string() -> None:
        n = u64()
        if n > size:
            raise truncated
        f.seek(n, 1)

    def skip_value(vtype: int) -> None:
        if vtype == _STRING:
            skip_string()
        elif vtype == _ARRAY:
            item_type, count = u32(), u64()
            if item_type in _GGUF_VALUE_SIZES:
                f.seek(_GGUF_VALUE_SIZES[item_type] * count, 1)
            else:
                for _ in range(count):
                    skip_value(item_type)
        elif vtype in _GGUF_VALUE_SIZES:
            f.seek(_GGUF_VALUE_SIZES[vtype], 1)
        else:
            raise ModelFileError(f"{p} is corrupt: unknown GGUF value type {vtype}")
        if f.tell() > size:
            raise truncated

    magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{p} is not a GGUF file (it does not start with the bytes 'GGUF')")
    version = u32()
    if version not in (2, 3):
        raise ModelFileError(f"{p} has GGUF version {version}; llama.cpp reads versions 2 and 3")
    n_tensors, n_kv = u64(), u64()
    alignment = 32
    for _ in range(n_kv):
        key_len = u64()
        key = read(key_len) if key_len <= 1024 else b""
        if not key:
            raise truncated
        vtype = u32()
        if key == b"general.alignment" and vtype == 4:
            alignment = u32()
        else:
            skip_value(vtype)
    end = 0
    for _ in range(n_tensors):
        skip_string()
        n_dims = u32()
        if n_dims > 8:
            raise ModelFileError(f"{p} is corrupt: a tensor with {n_dims} dimensions")
        dims = [u64() for _ in range(n_dims)]
        ggml_type, offset = u32(), u64()
        end = max(end, offset + _tensor_nbytes(ggml_type, dims, p))
    data_start = -(-f.tell() // alignment) * alignment
    if data_start + end > size:
        raise ModelFileError(
            f"{p} is truncated: its tensors need {data_start + end:,} bytes but the file has {size:,}"
        )


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
