"""The cost of orchestrating in Python: edgespec against llama.cpp's own tools, side by side.

    python scripts/compare_llama_cpp.py [--rounds 3] [--threads 2] [--n-predict 128]

Builds nothing: run scripts/build_llama_tools.sh first (llama-bench and llama-speculative-simple from
the llama.cpp source inside the installed llama-cpp-python's sdist). Uses the default pair from the
cache (scripts/fetch_test_models.py). Alternates, round by round:

- llama-bench tg64 for the target  vs  ``edgespec generate --strategy none`` (tokens/s);
- llama-speculative-simple, draft length 3, p_min 0  vs  ``edgespec generate --strategy draft
  --draft-max 3 --p-min 0`` (decode tokens/s), on the same prompt, greedy.

Prints each round and the median ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from edgespec.registry import default_pair

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a Python function that checks whether a string is a palindrome, with a docstring and tests."


def reference(target: Path, draft: Path, prompt_file: Path, threads: int, n_predict: int) -> dict[str, float]:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "reference_llama_cpp.sh"), str(target), str(draft), str(prompt_file)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "THREADS": str(threads), "N_PREDICT": str(n_predict), "DRAFT_MAX": "3"},
    )
    return {k: float(v) for k, v in (line.split("=", 1) for line in proc.stdout.split()) if v}


def edgespec(target: Path, draft: Path, strategy: str, threads: int, n_predict: int) -> dict[str, object]:
    cmd = [
        sys.executable,
        "-m",
        "edgespec",
        "generate",
        "--target",
        str(target),
        "--draft",
        str(draft),
        "--prompt",
        PROMPT,
        "--max-tokens",
        str(n_predict),
        "--temp",
        "0",
        "--threads",
        str(threads),
        "--strategy",
        strategy,
        "--draft-max",
        "3",
        "--p-min",
        "0",
        "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-predict", type=int, default=128)
    args = parser.parse_args()
    pair = default_pair()
    target, draft = pair.target.mirror_path(), pair.draft.mirror_path()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(PROMPT)
    tg_ratios, spec_ratios = [], []
    for i in range(args.rounds):
        ref = reference(target, draft, Path(f.name), args.threads, args.n_predict)
        none = edgespec(target, draft, "none", args.threads, args.n_predict)
        spec = edgespec(target, draft, "draft", args.threads, args.n_predict)
        tg, ours_tg = ref["llama_bench_tg_tps"], float(none["tokens_per_second"])  # type: ignore[arg-type]
        ss, ours_ss = ref["spec_simple_tps"], float(spec["tokens_per_second"])  # type: ignore[arg-type]
        stats = spec["stats"]
        assert isinstance(stats, dict)
        tg_ratios.append(ours_tg / tg)
        spec_ratios.append(ours_ss / ss)
        print(
            f"round {i + 1}: llama-bench tg64 {tg:.2f} tok/s, edgespec none {ours_tg:.2f} tok/s "
            f"({ours_tg / tg:.3f}x) | speculative-simple {ss:.2f} tok/s "
            f"(accept {ref.get('spec_simple_accept', 0):.1f}%), edgespec draft {ours_ss:.2f} tok/s "
            f"(accept {100 * float(stats['acceptance']):.1f}%) ({ours_ss / ss:.3f}x)",
            flush=True,
        )
    print(
        f"median: none / llama-bench tg = {statistics.median(tg_ratios):.3f}x; "
        f"draft / speculative-simple = {statistics.median(spec_ratios):.3f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
