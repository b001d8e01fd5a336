"""The llama.cpp wrapper: file checks before C sees a file, decoding, KV rewind, tokenization."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgespec.errors import LlamaError, ModelFileError
from edgespec.ggufcheck import check_gguf
from edgespec.llama import Context, Model


def test_missing_directory_and_non_gguf_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        check_gguf(tmp_path / "nope.gguf")
    with pytest.raises(ModelFileError, match="is a directory"):
        check_gguf(tmp_path)
    text = tmp_path / "notes.gguf"
    text.write_text("hello, I am not a model")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        check_gguf(text)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        check_gguf(empty)


@pytest.mark.parametrize("keep", [8, 100, 4000, -1000, -1])
def test_truncated_gguf_is_refused_before_llama_cpp_sees_it(
    tiny: dict[str, Path], tmp_path: Path, keep: int
) -> None:
    data = tiny["target"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:keep])
    with pytest.raises(ModelFileError, match=r"truncated|corrupt"):
        check_gguf(cut)
    with pytest.raises(ModelFileError):
        Model(cut)


def test_complete_file_passes(tiny: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    shutil.copy(tiny["target"], copy)
    assert check_gguf(copy) == copy


@pytest.fixture(scope="module")
def model(tiny: dict[str, Path]) -> Model:
    return Model(tiny["target"])


def test_vocabulary_facts(model: Model) -> None:
    assert model.n_vocab == 262
    assert (model.bos, model.eos, model.add_bos) == (1, 2, True)
    assert model.is_eog(2) and model.is_eog(260) and not model.is_eog(100)
    assert model.chat_template() is not None and "im_start" in model.chat_template()  # type: ignore[operator]


def test_tokenize_roundtrip_with_special_tokens(model: Model) -> None:
    text = "héllo <|im_start|>wörld 🙂"
    tokens = model.tokenize(text, add_special=True, parse_special=True)
    assert tokens[0] == model.bos
    assert 259 in tokens  # <|im_start|> parsed as one control token
    assert model.detokenize(tokens[1:], special=True) == text
    plain = model.tokenize(text, add_special=False, parse_special=False)
    assert 259 not in plain and plain[0] != model.bos


def test_decode_returns_requested_rows_matching_single_steps(model: Model) -> None:
    ctx = Context(model, n_ctx=128, n_batch=32, n_threads=1)
    tokens = model.tokenize("the cat sat on the mat", add_special=True)
    batched = ctx.decode(tokens, 0, len(tokens))
    assert batched.shape == (len(tokens), model.n_vocab)
    ctx.clear()
    singles = np.stack([ctx.decode([t], i, 1)[0] for i, t in enumerate(tokens)])
    # Batched and single-token logits differ in the last bits (seen: 1.3e-3 on logits of ~10),
    # never in substance; the argmax may differ only where the top two are that close.
    np.testing.assert_allclose(batched, singles, atol=1e-2)
    top2 = np.sort(singles, axis=1)[:, -2:]
    near_tie = top2[:, 1] - top2[:, 0] < 1e-2
    assert ((batched.argmax(1) == singles.argmax(1)) | near_tie).all()


def test_kv_rollback_gives_identical_logits(model: Model) -> None:
    ctx = Context(model, n_ctx=128, n_batch=32, n_threads=1)
    prefix = model.tokenize("speculative decoding", add_special=True)
    ctx.decode(prefix, 0, 0)
    first = ctx.decode([50, 60, 70, 80], len(prefix), 4)
    ctx.truncate(len(prefix))
    assert ctx.n_past == len(prefix)
    ctx.decode([99, 98], len(prefix), 2)  # a rejected guess, then rewind again
    ctx.truncate(len(prefix))
    again = ctx.decode([50, 60, 70, 80], len(prefix), 4)
    np.testing.assert_array_equal(first, again)


def test_long_inputs_are_chunked_and_a_full_context_is_an_error(model: Model) -> None:
    ctx = Context(model, n_ctx=64, n_batch=16, n_threads=1)
    tokens = [10 + i % 200 for i in range(40)]
    out = ctx.decode(tokens, 0, 3)
    assert out.shape == (3, model.n_vocab)
    assert ctx.n_past == 40
    with pytest.raises(LlamaError, match="context is full"):
        ctx.decode(tokens, ctx.n_ctx - 10, 1)
    with pytest.raises(ValueError):
        ctx.decode(tokens[:20], 0, 5)  # the last chunk has only 4 rows
