"""scripts/make_heavy_target.py: a quantized model dequantized to F16 that llama.cpp loads and runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np

from edgespec import Pair

_spec = importlib.util.spec_from_file_location(
    "make_heavy_target", Path(__file__).resolve().parent.parent / "scripts" / "make_heavy_target.py"
)
assert _spec and _spec.loader
heavy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(heavy)


def _quantized_copy(source: Path, out: Path) -> Path:
    """The tiny float32 target with every matrix in Q8_0, as a quantized download would have it."""
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    for t in reader.tensors:
        data = np.array(t.data)
        if data.ndim == 2:
            q8 = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(t.name, q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(t.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def test_dequantizes_every_tensor_keeps_metadata_and_runs(tiny: dict[str, Path], tmp_path: Path) -> None:
    source = _quantized_copy(tiny["target"], tmp_path / "tiny-q8_0.gguf")
    out = heavy.make_heavy(source, tmp_path / "out" / "tiny-f16.gguf")
    assert out == tmp_path / "out" / "tiny-f16.gguf" and not list(out.parent.glob(".*partial"))

    src, dst = gguf.GGUFReader(source), gguf.GGUFReader(out)
    assert dst.fields[gguf.Keys.General.FILE_TYPE].contents() == 1
    for name, field in src.fields.items():
        if name != gguf.Keys.General.FILE_TYPE and not name.startswith("GGUF."):
            assert dst.fields[name].contents() == field.contents(), name
    assert [t.name for t in dst.tensors] == [t.name for t in src.tensors]
    for s, d in zip(src.tensors, dst.tensors, strict=True):
        want = gguf.quants.dequantize(s.data, s.tensor_type)
        if len(s.shape) == 1:
            assert d.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(d.data, want)
        else:
            assert s.tensor_type == gguf.GGMLQuantizationType.Q8_0
            assert d.tensor_type == gguf.GGMLQuantizationType.F16
            np.testing.assert_array_equal(d.data, want.astype(np.float16))

    pair = Pair(out, n_ctx=256, n_threads=1)
    result = pair.generate("hello", max_tokens=8, temperature=0, strategy="none")
    pair.close()
    assert len(result.token_ids) > 0


def test_an_existing_output_is_kept_and_a_truncated_one_rewritten(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    source = _quantized_copy(tiny["target"], tmp_path / "tiny-q8_0.gguf")
    out = heavy.make_heavy(source, tmp_path / "tiny-f16.gguf")
    size, mtime = out.stat().st_size, out.stat().st_mtime_ns
    assert heavy.make_heavy(source, out).stat().st_mtime_ns == mtime
    with out.open("r+b") as f:
        f.truncate(size - 100)
    assert heavy.make_heavy(source, out).stat().st_size == size
    assert heavy.heavy_path(source) == tmp_path / "tiny-q8_0-dequantized-f16.gguf"
