"""The benchmark: strategies alternated on the shipped prompts; outputs checked equal; a plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgespec import Pair
from edgespec.bench import load_prompts, run_bench


def test_prompt_set_covers_the_categories() -> None:
    categories = {p.category for p in load_prompts()}
    assert categories == {"code generation", "code editing", "chat", "summarise / extract", "translation"}
    assert all(len([p for p in load_prompts() if p.category == c]) >= 3 for c in categories)


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
            "--category",
            "chat",
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
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run(
        [sys.executable, "-m", "edgespec", "bench", "--strategies", "fast"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "fast is not a strategy" in bad.stderr
