"""1,200 seeded mutations of a tiny GGUF model through ``Pair`` and a short generation.

Each batch runs in its own process (tests/gguf_fuzz.py), so a crash inside llama.cpp shows as a
dead worker, named by the mutation it was on, and the batch carries on after it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 12
N_MUTATIONS = 1200
BATCH = 300


def run_batches(model: Path, draft: Path, scratch: Path) -> tuple[list[dict[str, object]], list[str]]:
    """Every mutation's result, and a line for each one that killed its worker."""
    results: list[dict[str, object]] = []
    crashes: list[str] = []
    for first in range(0, N_MUTATIONS, BATCH):
        start, stop = first, min(first + BATCH, N_MUTATIONS)
        while start < stop:
            args = [model, draft, SEED, start, stop, scratch]
            proc = subprocess.run(
                [sys.executable, str(HERE / "gguf_fuzz.py"), *map(str, args)],
                capture_output=True,
                text=True,
                timeout=600,
            )
            lines = proc.stdout.splitlines()
            results += [json.loads(line) for line in lines if line.startswith("{")]
            if proc.returncode == 0:
                break
            begun = [line for line in lines if line.startswith("begin ")]
            if not begun:
                raise AssertionError(f"the fuzz worker failed before its first mutation:\n{proc.stderr}")
            index = int(begun[-1].split()[1])
            crashes.append(
                f"mutation {index} (seed {SEED}) ended the process with {proc.returncode}: {begun[-1]}"
            )
            start = index + 1
    return results, crashes


def test_mutated_models_never_crash_and_fail_only_with_edgespec_errors(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    t0 = time.perf_counter()
    results, crashes = run_batches(tiny["target"], tiny["draft-same"], tmp_path)
    seconds = time.perf_counter() - t0
    outcomes = {k: sum(r["outcome"] == k for r in results) for k in ("ok", "refused", "error")}
    errors = [
        f"mutation {r['i']} (seed {SEED}): {r['what']}: {r['detail']}"
        for r in results
        if r["outcome"] == "error"
    ]
    print(
        f"\n{N_MUTATIONS} mutations in {seconds:.1f} s: {len(crashes)} process crashes, "
        f"{outcomes['error']} exceptions outside EdgespecError, {outcomes['refused']} refused with "
        f"an EdgespecError, {outcomes['ok']} loaded and generated"
    )
    replay = f"replay one: python tests/gguf_fuzz.py {tiny['target']} {tiny['draft-same']} {SEED} I I+1 DIR"
    assert crashes == [], "\n".join([*crashes, replay])
    assert errors == [], "\n".join([*errors, replay])
    assert len(results) == N_MUTATIONS
    # The mutations reach past the file checks: some files load and generate, most are refused.
    assert outcomes["ok"] > N_MUTATIONS // 20 and outcomes["refused"] > N_MUTATIONS // 2
