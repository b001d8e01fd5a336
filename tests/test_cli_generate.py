"""`edgespec generate` from the outside: JSON output, streaming, and every bad input as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgespec", "generate", *args], capture_output=True, text=True, timeout=120
    )


def test_json_output_has_the_documented_fields(tiny: dict[str, Path]) -> None:
    proc = run(
        "--target",
        str(tiny["target"]),
        "--draft",
        str(tiny["draft-noisy"]),
        "--raw",
        "--prompt",
        "The quick brown fox",
        "--max-tokens",
        "12",
        "--temp",
        "0",
        "--strategy",
        "draft",
        "--json",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) >= {
        "text",
        "token_ids",
        "n_tokens",
        "finish_reason",
        "prompt_tokens",
        "prompt_seconds",
        "decode_seconds",
        "tokens_per_second",
        "strategy",
        "stats",
    }
    assert out["n_tokens"] == len(out["token_ids"]) == 12 and out["finish_reason"] == "length"
    assert out["strategy"] == "draft"
    assert {"steps", "drafted", "accepted", "steps_by_source"} <= set(out["stats"])
    assert out["stats"]["steps"] == out["stats"]["steps_by_source"]["draft"]


def test_streamed_text_equals_json_text_and_strategies_agree(tiny: dict[str, Path]) -> None:
    base = [
        "--target",
        str(tiny["target"]),
        "--draft",
        str(tiny["draft-noisy"]),
        "--raw",
        "--prompt",
        "The quick brown fox",
        "--max-tokens",
        "30",
        "--temp",
        "0",
        "--threads",
        "1",
    ]
    texts = {}
    for strategy in ("none", "draft", "lookup", "auto"):
        proc = run(*base, "--strategy", strategy, "--json")
        assert proc.returncode == 0, proc.stderr
        texts[strategy] = json.loads(proc.stdout.splitlines()[-1])["token_ids"]
    assert all(t == texts["none"] for t in texts.values())
    streamed = run(*base, "--strategy", "draft")
    as_json = json.loads(run(*base, "--strategy", "draft", "--json").stdout.splitlines()[-1])["text"]
    assert streamed.stdout == as_json + ("" if as_json.endswith("\n") else "\n")


def test_exact_flag_loads_exact_mode_and_says_when_it_cannot_speculate(tiny: dict[str, Path]) -> None:
    # The tiny float32 models decode no batch bit-identically to single steps (llamafile's sgemm
    # takes 2 rows and more): --exact then generates with the target alone and says so.
    args = ["--target", str(tiny["target"]), "--draft", str(tiny["draft-same"]), "--raw", "--prompt", "ab"]
    args += ["--max-tokens", "16", "--temp", "0", "--threads", "1", "--exact", "--json"]
    proc = run(*args, "--strategy", "draft")
    assert proc.returncode == 0, proc.stderr
    assert "no batch decodes bit-identically to single steps" in proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["stats"]["drafted"] == 0 and out["n_tokens"] == 16
    alone = json.loads(run(*args, "--strategy", "none").stdout.splitlines()[-1])
    assert alone["token_ids"] == out["token_ids"]


@pytest.fixture(scope="module")
def bad_files(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.gguf").write_text("not a model")
    (d / "cut.gguf").write_bytes(tiny["target"].read_bytes()[:5000])
    (d / "long.txt").write_text("word " * 2000)
    (d / "bad.schema.json").write_text('{"type": "array", "uniqueItems": true}')
    (d / "bad.gbnf").write_text("start: nothing")
    return {
        "dir": d,
        "text": d / "notes.gguf",
        "cut": d / "cut.gguf",
        "long": d / "long.txt",
        "schema": d / "bad.schema.json",
        "grammar": d / "bad.gbnf",
    }


CASES = {
    "missing file": (["--target", "{dir}/nope.gguf"], "not found"),
    "directory": (["--target", "{dir}"], "is a directory"),
    "not gguf": (["--target", "{text}"], "not a GGUF file"),
    "truncated": (["--target", "{cut}"], "truncated"),
    "other tokenizer": (["--draft", "{othervocab}"], "token 10 differs"),
    "zero max tokens": (["--max-tokens", "0"], "--max-tokens"),
    "negative max tokens": (["--max-tokens", "-5"], "--max-tokens"),
    "negative temperature": (["--temp", "-0.5"], "--temp"),
    "top-p zero": (["--top-p", "0"], "--top-p"),
    "top-p above one": (["--top-p", "1.01"], "--top-p"),
    "prompt longer than context": (["--prompt-file", "{long}", "--ctx-size", "256"], "context holds"),
    "missing prompt file": (["--prompt-file", "{dir}/none.txt"], "none.txt"),
    "no prompt": (["--no-prompt"], "prompt"),
    "unsupported schema keyword": (["--json-schema", "{schema}"], 'Unimplemented keys: ["uniqueItems"]'),
    "bad grammar": (["--grammar", "{grammar}"], 'unknown name: "nothing"'),
    "schema and grammar": (["--json-schema", "{schema}", "--grammar", "{grammar}"], "not both"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(case: str, tiny: dict[str, Path], bad_files: dict[str, Path]) -> None:
    args, expected = CASES[case]
    paths = {**{k: str(v) for k, v in bad_files.items()}, "othervocab": str(tiny["draft-othervocab"])}
    args = [a.format(**paths) for a in args]
    full = ["--target", str(tiny["target"]), "--prompt", "hi", "--max-tokens", "4", "--threads", "1"]
    if "--prompt-file" in args:
        full = full[:2] + full[4:]
    if args == ["--no-prompt"]:
        full, args = full[:2] + full[4:], []
    proc = run(*full, *args)
    assert proc.returncode in (1, 2), proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and expected in lines[0]
    assert lines[0].startswith("edgespec: error:")


def test_json_schema_and_grammar_files_constrain_the_output(tiny: dict[str, Path], tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    (tmp_path / "s.json").write_text(json.dumps(schema))
    (tmp_path / "g.gbnf").write_text('root ::= "answer: " ("yes" | "no")')
    common = ["--target", str(tiny["target"]), "--draft", str(tiny["draft-noisy"]), "--threads", "1"]
    common += ["--prompt", "hi", "--max-tokens", "40", "--temp", "0", "--json"]
    out = json.loads(run(*common, "--json-schema", str(tmp_path / "s.json")).stdout.splitlines()[-1])
    assert isinstance(json.loads(out["text"])["ok"], bool) and out["finish_reason"] == "stop"
    out = json.loads(run(*common, "--grammar", str(tmp_path / "g.gbnf")).stdout.splitlines()[-1])
    assert out["text"] in ("answer: yes", "answer: no")
