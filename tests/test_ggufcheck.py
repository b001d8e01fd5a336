"""Absurd hyperparameters and inconsistent files are refused in Python, naming the key and value.

Each case is the tiny model with one field rewritten. Without these checks llama.cpp aborts the
process on several of them (a block count of 0 or above 512, a duplicated token text) and
segfaults on an integer-typed weight.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _script
from gguf_fuzz import set_field

from edgespec import Pair
from edgespec.errors import ModelFileError
from edgespec.ggufcheck import check_gguf

U32_MAX = (1 << 32) - 1

# (field as tests/gguf_fuzz.py's layout names it, value, what the one-line error must say)
CASES = {
    "no blocks": ("llama.block_count", 0, "llama.block_count is 0, but it must be an integer from 1 to 512"),
    "513 blocks": ("llama.block_count", 513, "llama.block_count is 513, but"),
    "billions of blocks": ("llama.block_count", 3_000_000_000, "llama.block_count is 3,000,000,000, but"),
    "zero width": ("llama.embedding_length", 0, "llama.embedding_length is 0, but"),
    "billions wide": ("llama.embedding_length", U32_MAX, "llama.embedding_length is 4,294,967,295, but"),
    "narrower than its tensors": (
        "llama.embedding_length",
        32,
        "llama.embedding_length is 32, but the tensor token_embd.weight is 64 wide",
    ),
    "no heads": (
        "llama.attention.head_count",
        0,
        "llama.attention.head_count is 0, but the model has attention tensors (blk.0.attn_q.weight)",
    ),
    "billions of heads": ("llama.attention.head_count", 2_000_000_000, "head_count is 2,000,000,000, but"),
    "no kv heads": (
        "llama.attention.head_count_kv",
        0,
        "llama.attention.head_count_kv is 0, but the model has attention tensors (blk.0.attn_q.weight)",
    ),
    "more kv heads than heads": (
        "llama.attention.head_count_kv",
        8,
        "llama.attention.head_count_kv is 8, but it must be at most llama.attention.head_count (4)",
    ),
    "zero context": ("llama.context_length", 0, "llama.context_length is 0, but"),
    "billions of context": ("llama.context_length", U32_MAX, "llama.context_length is 4,294,967,295, but"),
    "embedding rows disagree with the vocabulary": (
        "token_embd.weight dim 1",
        200,
        "the tensor token_embd.weight has 200 rows but tokenizer.ggml.tokens has 262 entries",
    ),
    "integer weights": (
        "blk.0.attn_q.weight type",
        26,
        "the weight blk.0.attn_q.weight has the integer type I32",
    ),
    "float64 weights": (
        "blk.0.attn_q.weight type",
        28,
        "the weight blk.0.attn_q.weight has the type F64",
    ),
}


@pytest.fixture(scope="module")
def make_bad(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A function writing the tiny target with fields rewritten; returns its path."""
    out = tmp_path_factory.mktemp("bad")
    original = tiny["target"].read_bytes()

    def make(name: str, *fields: tuple[str, int]) -> Path:
        data = original
        for label, value in fields:
            data = set_field(data, label, value)
        path = out / f"{name.replace(' ', '-')}.gguf"
        path.write_bytes(data)
        return path

    return make


@pytest.mark.parametrize("case", list(CASES))
def test_absurd_hyperparameters_are_refused_naming_key_and_value(case: str, make_bad) -> None:  # type: ignore[no-untyped-def]
    label, value, message = CASES[case]
    path = make_bad(case, (label, value))
    with pytest.raises(ModelFileError, match="^" + re.escape(str(path))) as caught:
        check_gguf(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ModelFileError, match=re.escape(message)):
        Pair(path, n_threads=1)  # the public API refuses it before llama.cpp loads anything


def test_negative_integers_are_refused(make_bad) -> None:  # type: ignore[no-untyped-def]
    # The field retyped as INT32 (GGUF type 5) holding -1.
    path = make_bad("negative", ("llama.block_count type", 5), ("llama.block_count", U32_MAX))
    with pytest.raises(
        ModelFileError, match=r"llama\.block_count is -1, but it must be an integer from 1 to 512"
    ):
        check_gguf(path)


def test_a_vocabulary_size_that_disagrees_with_the_token_list_is_refused(tmp_path: Path) -> None:
    tiny = _script("make_tiny_models")
    path = tmp_path / "vocab.gguf"
    tiny.write_model(path, tiny.weights(seed=1), extra_metadata={"llama.vocab_size": 300})
    with pytest.raises(
        ModelFileError, match=r"llama\.vocab_size is 300, but tokenizer\.ggml\.tokens has 262 entries"
    ):
        check_gguf(path)
    tiny.write_model(path, tiny.weights(seed=1), extra_metadata={"llama.vocab_size": 262})
    assert check_gguf(path) == path


def test_a_duplicated_token_text_is_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    data = tiny["target"].read_bytes()
    path = tmp_path / "dup.gguf"
    path.write_bytes(data.replace(b"<0x41>", b"<0x42>", 1))  # llama.cpp asserts and aborts on this
    with pytest.raises(
        ModelFileError, match=r"tokenizer.ggml.tokens holds the token '<0x42>' twice \(ids 68 and 69\)"
    ):
        check_gguf(path)


@pytest.mark.parametrize(
    "label",
    ["tokenizer.chat_template length", "tokenizer.ggml.scores count", "tensor count", "metadata count"],
)
@pytest.mark.parametrize("value", [U32_MAX, 1 << 63, (1 << 64) - 1])
def test_huge_lengths_and_counts_are_refused_without_reading_them(
    make_bad,  # type: ignore[no-untyped-def]
    label: str,
    value: int,
) -> None:
    # 2**64 - 1 as a string length once made the reader seek past what Python's seek takes
    # (ValueError: cannot fit 'int' into an offset-sized integer).
    path = make_bad(f"{label}-{value}", (label, value))
    with pytest.raises(ModelFileError, match=r"truncated|corrupt"):
        check_gguf(path)


def test_the_cli_names_the_key_and_value_on_one_line(make_bad) -> None:  # type: ignore[no-untyped-def]
    path = make_bad("cli", ("llama.block_count", 0))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgespec",
            "generate",
            "--target",
            str(path),
            "--prompt",
            "hi",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"edgespec: error: {path}: llama.block_count is 0, but it must be an integer from 1 to 512"
    ]
