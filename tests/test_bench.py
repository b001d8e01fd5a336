"""The benchmark: strategies alternated on the shipped prompts; outputs checked equal; a plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgespec import Pair
from edgespec.bench import BenchPrompt, load_prompts, run_bench


def test_prompt_set_covers_the_categories() -> None:
    categories = {p.category for p in load_prompts()}
    assert categories == {
        "code generation",
        "code completion",
        "code editing",
        "chat",
        "summarise / extract",
        "translation",
        "structured extraction",
    }
    assert all(len([p for p in load_prompts() if p.category == c]) >= 3 for c in categories)
    # Only structured extraction runs under a schema, and each of its schemas compiles.
    assert {p.category for p in load_prompts() if p.schema} == {"structured extraction"}
    assert all(p.constraint is not None for p in load_prompts(["structured extraction"]))


def test_completion_prompts_are_raw_and_end_in_a_docstring() -> None:
    completions = load_prompts(["code completion"])
    assert completions and all(p.raw and p.prompt == p.text for p in completions)
    assert all(p.text.rstrip().endswith(('"""', "{")) for p in completions)
    chat = load_prompts(["chat"])[0]
    assert not chat.raw and chat.prompt == [{"role": "user", "content": chat.text}]


def test_run_bench_reads_raw_prompts_without_the_template(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["target"], tiny["draft-same"], n_ctx=512, n_threads=1)
    raw = BenchPrompt("code completion", "raw", "def add(a, b):\n", raw=True)
    report = run_bench(pair, [raw], ["draft"], max_tokens=8)
    assert report.mismatches == []
    # the template would wrap the text in <|im_start|>user ... ; raw, the output continues the text
    templated = pair.prompter.tokenize([{"role": "user", "content": raw.text}])
    assert pair.prompter.tokenize(raw.prompt) == pair.target.tokenize(raw.text, add_special=True)
    assert len(templated) > len(pair.prompter.tokenize(raw.prompt))
    none = next(r for r in report.runs if r.strategy == "none")
    want = pair.generate(raw.text, max_tokens=8, temperature=0, strategy="none")
    assert none.token_ids == want.token_ids


def test_run_bench_alternates_and_checks_outputs(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["target"], tiny["draft-noisy"], n_ctx=512, n_threads=1)
    prompts = load_prompts(["chat"])[:2]
    report = run_bench(pair, prompts, ["auto", "draft", "lookup"], max_tokens=16)
    assert [r.strategy for r in report.runs] == [
        "none",
        "auto",
        "draft",
        "lookup",
        "auto",
        "draft",
        "lookup",
        "none",
    ]
    assert report.mismatches == []
    assert (report.exact, report.n_compared, report.n_identical) == (False, 6, 6)
    summary = {(s.category, s.strategy): s for s in report.summaries}
    assert summary[("chat", "none")].speedup == 1.0
    assert summary[("all", "draft")].acceptance > 0
    assert set(report.cost_curve) >= {1, 2, 4, 8, 16}


def test_cli_bench_json_and_plot(tiny: dict[str, Path], tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgespec",
            "bench",
            "--target",
            str(tiny["target"]),
            "--draft",
            str(tiny["draft-same"]),
            "--categories",
            "chat,translation",
            "--max-tokens",
            "8",
            "--threads",
            "1",
            "--strategies",
            "draft,lookup",
            "--json",
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {s["strategy"] for s in report["summaries"]} == {"none", "draft", "lookup"}
    assert {s["category"] for s in report["summaries"]} == {"chat", "translation", "all"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run(
        [sys.executable, "-m", "edgespec", "bench", "--strategies", "fast"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "fast is not a strategy" in bad.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "edgespec", "bench", "--categories", "chat,poetry"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2 and "poetry: no such category" in unknown.stderr


def test_cli_bench_runs_what_the_pair_can(tiny: dict[str, Path]) -> None:
    """Without --strategies: every strategy the pair can run; a target with MTP layers and no draft
    runs mtp and not draft, and the report says what an MTP step costs."""
    target = str(tiny["qwen35-mtp-agree-target"])
    args = ["--target", target, "--categories", "chat", "--max-tokens", "8", "--threads", "1", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "edgespec", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {s["strategy"] for s in report["summaries"]} == {"none", "auto", "mtp", "lookup"}
    assert report["mtp_cost"] > 0 and report["draft_cost"] is None


def test_no_run_copies_from_an_earlier_run(tiny: dict[str, Path]) -> None:
    # The lookup remembers earlier requests; in the bench, the answer `none` just gave to the same
    # prompt would be copied whole and inflate the strategies run after it.
    prompt = BenchPrompt("code completion", "raw", "def add(a, b):\n", raw=True)
    with Pair(tiny["target"], None, n_ctx=512, n_threads=1) as pair:
        report = run_bench(pair, [prompt], ["lookup"], max_tokens=40)
        bench_run = next(r for r in report.runs if r.strategy == "lookup")
        pair.reset(forget_earlier=True)
        fresh = pair.generate(prompt.prompt, max_tokens=40, temperature=0, strategy="lookup")
        pair.generate(prompt.prompt, max_tokens=40, temperature=0, strategy="none")
        remembered = pair.generate(prompt.prompt, max_tokens=40, temperature=0, strategy="lookup")
    assert remembered.stats.steps < fresh.stats.steps  # the memory would have made a difference
    assert (bench_run.steps, bench_run.drafted) == (fresh.stats.steps, fresh.stats.drafted)


def test_structured_extraction_runs_under_its_schema_and_reports_the_masks_cost(
    tiny: dict[str, Path],
) -> None:
    import jsonschema

    # The tiny models write random text: a schema with short strings, so that every reply ends.
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string", "maxLength": 6}, "n": {"type": "integer", "maximum": 99}},
        "required": ["id", "n"],
        "additionalProperties": False,
    }
    pair = Pair(tiny["target"], tiny["draft-noisy"], n_ctx=1024, n_threads=1)
    prompt = BenchPrompt("structured extraction", "tiny", "Extract: id ab12, n 7.", schema=json.dumps(schema))
    report = run_bench(pair, [prompt], ["auto"], max_tokens=100)
    assert report.mismatches == []
    for run in report.runs:
        text = pair.target.detokenize(run.token_ids)
        jsonschema.validate(json.loads(text), json.loads(prompt.schema or ""))
        assert run.masked_rows >= run.steps and run.mask_seconds > 0
    summary = {(s.category, s.strategy): s for s in report.summaries}
    assert summary[("all", "auto")].mask_us_per_row > 0
    assert 0 < summary[("all", "auto")].grammar_share < 1
    plain = run_bench(pair, load_prompts(["chat"])[:1], ["draft"], max_tokens=8)
    assert all(r.masked_rows == 0 for r in plain.runs)  # no schema, no constraint
