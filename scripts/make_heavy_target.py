"""Dequantize the default pair's Q4 target to F16: a "heavy" target for the laptop-with-a-7B regime.

    python scripts/make_heavy_target.py [--source Q4.gguf] [--out HEAVY.gguf]

On this project's small machines the Q4 pair is compute-bound: the 0.5B draft costs half a target step
and verifying 8 tokens costs several steps. A laptop running a 7B model is memory-bound instead: the
draft costs 0.1-0.2 of a step and a batch of 8 costs little more than one. The same target in F16 moves
this machine into that regime (every step reads 3 GB of weights) while keeping the tokenizer and,
up to F16 rounding of the dequantized weights, the greedy choices, so the prompts and the draft stay.

Every tensor goes through ``gguf.quants.dequantize``; matrices are written as F16 and 1-D tensors
(norms, biases) as F32, as llama.cpp's converters write an F16 model; all metadata is copied, with
``general.file_type`` = 1 (mostly F16). Tensors are converted one at a time (memory stays about one
F16 matrix), into a temporary file renamed into place at the end. An output that already exists with
the expected size is kept. Prints the output path. The default source is the default pair's target
assembled by scripts/fetch_test_models.py; the default output sits next to it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gguf
import numpy as np

from edgespec.registry import default_pair

MOSTLY_F16 = 1  # llama_ftype LLAMA_FTYPE_MOSTLY_F16
ROWS_PER_CHUNK = 4096  # dequantize this many rows at a time: float32 temporaries stay small


def heavy_path(source: Path) -> Path:
    """The default output: next to the source, named after it."""
    return source.with_name(f"{source.stem}-dequantized-f16.gguf")


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    for field in reader.fields.values():
        # GGUF.* are the reader's view of the header; the writer writes the architecture itself.
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = MOSTLY_F16 if field.name == gguf.Keys.General.FILE_TYPE else field.contents()
        if field.name == gguf.Keys.General.ALIGNMENT:
            writer.data_alignment = int(value)
        writer.add_key_value(field.name, value, vtype, sub_type=sub_type)


def _out_dtype(tensor: gguf.ReaderTensor) -> type[np.floating]:
    return np.float32 if len(tensor.shape) <= 1 else np.float16


def _dequantized(tensor: gguf.ReaderTensor) -> np.ndarray:
    """The tensor as F16 (or F32 when 1-D), numpy shape, converted a chunk of rows at a time."""
    shape = tuple(int(d) for d in reversed(tensor.shape))  # the reader gives ggml order (ne0 first)
    out = np.empty(shape, dtype=_out_dtype(tensor))
    rows_in, rows_out = tensor.data.reshape(-1, tensor.data.shape[-1]), out.reshape(-1, shape[-1])
    for start in range(0, rows_out.shape[0], ROWS_PER_CHUNK):
        chunk = gguf.quants.dequantize(rows_in[start : start + ROWS_PER_CHUNK], tensor.tensor_type)
        rows_out[start : start + ROWS_PER_CHUNK] = chunk.reshape(-1, shape[-1])
    return out


def make_heavy(source: Path, out: Path) -> Path:
    """Write the F16 copy of ``source`` to ``out`` (kept if already there with the expected size)."""
    reader = gguf.GGUFReader(source)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        _copy_metadata(reader, writer)
        for t in reader.tensors:
            shape = tuple(int(d) for d in reversed(t.shape))
            dtype = np.dtype(_out_dtype(t))
            writer.add_tensor_info(t.name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        align = writer.data_alignment
        expected = writer.ggml_pad(writer.fout[0].tell(), align) + sum(
            writer.ggml_pad(int(np.prod(t.shape)) * np.dtype(_out_dtype(t)).itemsize, align)
            for t in reader.tensors
        )
        if out.exists() and out.stat().st_size == expected:
            print(f"kept {out} (already there, {expected:,} bytes)", file=sys.stderr)
            return out
        for i, t in enumerate(reader.tensors, 1):
            data = _dequantized(t)
            writer.write_tensor_data(data)
            print(
                f"  [{i}/{len(reader.tensors)}] {t.name} {t.tensor_type.name} -> {data.dtype}",
                file=sys.stderr,
            )
        writer.close()
        if tmp.stat().st_size != expected:
            raise RuntimeError(f"wrote {tmp.stat().st_size:,} bytes, expected {expected:,}")
        os.replace(tmp, out)
        return out
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="the quantized GGUF (default: the default pair's target)")
    parser.add_argument("--out", type=Path, help="where to write (default: next to the source)")
    args = parser.parse_args()
    source = args.source or default_pair().target.mirror_path()
    if not source.is_file():
        print(f"error: {source} not found; run scripts/fetch_test_models.py first", file=sys.stderr)
        return 1
    print(make_heavy(source, args.out or heavy_path(source)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
