"""Drafting with a target's own MTP layers (or Gemma 4's assistant): edgespec against llama.cpp's
driver, and auto against none.

    python scripts/bench_mtp.py --model M.gguf [--assistant A.gguf] [--draft-max 3] [--rounds 3]
        [--threads 2] [--n-predict 64] [--n-gpu-layers 0] [--prompt TEXT] [--json FILE]

Builds nothing: run scripts/build_llama_tools.sh first (llama-speculative-simple from the llama.cpp
that the installed llama-cpp-python vendors). ``M.gguf`` is a target with MTP layers, e.g. a
random-weight one at a real shape: ``scripts/make_random_model.py qwen3.5-2b-mtp --quantize Q4_K_M``;
or a Gemma 4 target with ``--assistant`` its assistant (``-md`` to llama.cpp, the draft to edgespec).

First it measures auto's costs afresh (outside the timed runs) and prints them in target steps: an
MTP step (a guess after the first), their catching up after a verification (reading the kept tokens
with the target's hidden rows, with the first guess), and verifying N + 1 tokens.

Each round runs, in an order that rotates by one every round, on the same raw prompt, greedy:

- ``llama mtp``: ``llama-speculative-simple --spec-type draft-mtp --spec-draft-n-max N
  --spec-draft-p-min 0`` (llama.cpp's MTP driver, common/speculative.cpp), a process of its own;
- ``edgespec mtp``: ``--strategy mtp --draft-max N --p-min 0``, the same fixed length, in this process;
- ``edgespec none`` (the target alone) and ``edgespec auto`` (which weighs the MTP layers, lookup and
  no guess every step), in this process.

Speed is decode tokens per second: edgespec's ``decode_seconds`` and llama-speculative-simple's
"decoded" line, both the generation loop after the prompt. The ratios are taken within a round
(``edgespec mtp`` over ``llama mtp``, ``auto`` over ``none``); the table gives their median over the
rounds and their range. On random weights every MTP guess is wrong: the fixed modes show what
drafting and rejecting costs each tool, and ``auto`` must learn to stop guessing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from edgespec.generate import Pair

TOOLS = Path(os.environ.get("LLAMA_TOOLS_DIR", Path.home() / ".cache" / "edgespec" / "llama-tools"))
PROMPT = "Write a Python function that checks whether a string is a palindrome, with a docstring and tests."
N_CTX = 4096
MODES = ("llama mtp", "edgespec mtp", "edgespec none", "edgespec auto")


def llama_mtp(args: argparse.Namespace) -> dict[str, float]:
    """One llama-speculative-simple run with the MTP driver: decoded tokens, seconds, drafted, kept."""
    cmd = [
        str(TOOLS / "llama-speculative-simple"),
        *("-m", str(args.model), "-t", str(args.threads), "-tb", str(args.threads)),
        *("-c", str(N_CTX), "-n", str(args.n_predict), "--temp", "0", "--top-k", "1", "--seed", "42"),
        *("-ngl", str(args.n_gpu_layers), "--no-escape", "-p", args.prompt),
        *("--spec-type", "draft-mtp", "--spec-draft-n-max", str(args.draft_max), "--spec-draft-p-min", "0"),
        *(("-md", str(args.assistant), "-ngld", str(args.n_gpu_layers)) if args.assistant else ()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    log = proc.stdout + proc.stderr
    decoded = re.search(r"decoded\s+(\d+) tokens in\s+([0-9.]+) seconds", log)
    if proc.returncode != 0 or decoded is None:
        sys.exit(f"llama-speculative-simple failed:\n{log[-3000:]}")

    def count(name: str) -> float:
        found = re.findall(rf"\b{name}\s*=\s*(\d+)", log)
        return float(found[-1]) if found else 0.0

    n, seconds = float(decoded.group(1)), float(decoded.group(2))
    return {"n_tokens": n, "tps": n / seconds, "drafted": count("n_drafted"), "accepted": count("n_accept")}


def edgespec_run(pair: Pair, strategy: str, args: argparse.Namespace) -> dict[str, float]:
    """One generation of the raw prompt, copying from nothing but its own text."""
    pair.reset(forget_earlier=True)
    s = pair.generate(
        args.prompt, max_tokens=args.n_predict, temperature=0.0, strategy=strategy, max_draft=args.draft_max
    ).stats
    return {"n_tokens": s.n_tokens, "tps": s.tokens_per_second, "drafted": s.drafted, "accepted": s.accepted}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}x ({min(values):.3f}-{max(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a target GGUF with MTP layers")
    parser.add_argument("--assistant", type=Path, help="Gemma 4's assistant for a Gemma 4 --model")
    parser.add_argument("--draft-max", type=int, default=3, help="the fixed modes' guesses a step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-predict", type=int, default=64)
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    args = parser.parse_args()
    if not (TOOLS / "llama-speculative-simple").exists():
        sys.exit(f"no llama-speculative-simple in {TOOLS}: run scripts/build_llama_tools.sh")
    pair = Pair(
        args.model,
        args.assistant,
        n_ctx=N_CTX,
        n_threads=args.threads,
        n_gpu_layers=args.n_gpu_layers,
        p_min=0.0,
    )
    if pair.mtp_draft is None:
        sys.exit(f"{args.model.name}: {pair.planners.no_mtp}")
    costs = pair.costs(refresh=True)  # auto's measurement, fresh and outside the timed runs
    mtp = costs.drafting("mtp")
    assert mtp is not None
    step, verify_k = costs.verify(1), costs.verify(args.draft_max + 1)
    catch_up = "their catching up after a verification, in target steps: " + ", ".join(
        f"{n} tokens {mtp.batch_s(n) / step:.3f}" for n in (2, args.draft_max + 1)
    )
    if pair.mtp_draft.ctx.shared:
        catch_up = "the assistant catches up on nothing (it reads the target's cache)"
    print(
        f"{args.model.name}: a target step {step * 1000:.1f} ms; an MTP step {mtp.step_s * 1000:.2f} ms "
        f"({mtp.step_s / step:.3f} of a target step); {catch_up}; verifying {args.draft_max + 1} tokens "
        f"{verify_k / step:.2f}",
        flush=True,
    )
    runs: list[dict[str, object]] = []
    ours_over_llama, auto_over_none = [], []
    for r in range(args.rounds):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        got = {}
        for mode in order:
            got[mode] = llama_mtp(args) if mode == "llama mtp" else edgespec_run(pair, mode.split()[1], args)
            runs.append({"round": r, "mode": mode, **got[mode]})
        ours_over_llama.append(got["edgespec mtp"]["tps"] / got["llama mtp"]["tps"])
        auto_over_none.append(got["edgespec auto"]["tps"] / got["edgespec none"]["tps"])
        print(
            f"round {r + 1}: "
            + ", ".join(
                f"{m} {got[m]['tps']:.2f} tok/s ({got[m]['n_tokens']:.0f} tokens, "
                f"{got[m]['accepted']:.0f}/{got[m]['drafted']:.0f} kept)"
                for m in MODES
            ),
            flush=True,
        )
    fixed = f"draft-mtp, n_max {args.draft_max}"
    print(f"edgespec mtp / llama-speculative-simple ({fixed}): {spread(ours_over_llama)}")
    print(f"edgespec auto / edgespec none: {spread(auto_over_none)}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    pair.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
