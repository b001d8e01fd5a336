"""edgespec against llama.cpp's own tools, side by side, on the same models and prompts.

    python scripts/compare_llama_cpp.py modes [--target T.gguf] [--draft D.gguf] [--category C ...]
        [--prompts-per-category N] [--rounds R] [--threads 2] [--n-predict 128] [--json FILE]
        [--modes none,auto,ngram-simple,...]
    python scripts/compare_llama_cpp.py overhead [--rounds 3] [--threads 2] [--n-predict 128]

Builds nothing: run scripts/build_llama_tools.sh first (llama-bench and llama-speculative-simple from
the llama.cpp source inside the installed llama-cpp-python's sdist). The models default to the default
pair from the cache (scripts/fetch_test_models.py); for the heavy-target regime pass
``--target "$(python scripts/make_heavy_target.py)"``.

``modes``: on the prompts of ``edgespec bench`` (the same text: chat prompts rendered through the
target's template by edgespec, raw prompts as they are), greedy, each prompt in turn under

- edgespec ``--strategy none`` (the target alone: the baseline of every ratio) and ``auto``, in this
  process, as ``edgespec bench`` runs them;
- llama.cpp's native speculative modes through ``llama-speculative-simple --spec-type``: draft-simple
  with n_max 3/8/16 and p_min 0/0.75 (n_min 0), ngram-simple and ngram-mod (their defaults: ngram-simple
  matches the last 12 tokens and copies 12 to 48, ngram-mod matches 24 and copies 48 to 64 or nothing).

The order of the runs rotates by one on every prompt, so drift on a shared machine falls on all alike.
Speed is decode tokens per second: edgespec's ``decode_seconds``, and llama-speculative-simple's
"decoded" line; both time the generation loop after the prompt but its last token. Each ratio is a
run's tokens/s over edgespec ``none`` on the same prompt in the same round; per category the table
gives the median ratio over prompts and rounds, and its range. The native modes are measured against
edgespec's baseline, which carries Python's small overhead (see ``overhead``), so their ratios err in
their favour.

``overhead``: the cost of orchestrating in Python, alternating round by round llama-bench tg64 for the
target vs ``edgespec generate --strategy none``, and llama-speculative-simple with draft 3, p_min 0 vs
``edgespec generate --strategy draft --draft-max 3 --p-min 0``, on one prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from edgespec.bench import BenchPrompt, load_prompts
from edgespec.generate import Pair
from edgespec.registry import default_pair

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("LLAMA_TOOLS_DIR", Path.home() / ".cache" / "edgespec" / "llama-tools"))
PROMPT = "Write a Python function that checks whether a string is a palindrome, with a docstring and tests."
N_CTX = 4096

# name -> llama-speculative-simple arguments; "{draft}" stands for the draft model's path.
NATIVE_MODES: dict[str, list[str]] = {
    **{
        f"draft {n} p{p}": [
            *("--spec-type", "draft-simple", "-md", "{draft}", "--spec-draft-n-max", str(n)),
            *("--spec-draft-n-min", "0", "--spec-draft-p-min", p),
        ]
        for n in (3, 8, 16)
        for p in ("0", "0.75")
    },
    "ngram-simple": ["--spec-type", "ngram-simple"],
    "ngram-mod": ["--spec-type", "ngram-mod"],
}
EDGESPEC_MODES = ("none", "auto")


@dataclass
class Run:
    """One generation of one prompt in one mode."""

    round: int
    category: str
    prompt_id: str
    mode: str
    n_tokens: int
    decode_seconds: float
    drafted: int
    accepted: int

    @property
    def tps(self) -> float:
        return self.n_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


def native_run(
    mode: str, target: Path, draft: Path | None, text: str, threads: int, n_predict: int
) -> dict[str, float]:
    """One llama-speculative-simple run; its decoded tokens, seconds, drafted and accepted counts."""
    args = [a.replace("{draft}", str(draft)) for a in NATIVE_MODES[mode]]
    cmd = [
        str(TOOLS / "llama-speculative-simple"),
        *("-m", str(target), "-t", str(threads), "-tb", str(threads), "-td", str(threads)),
        *("-c", str(N_CTX), "-n", str(n_predict), "--temp", "0", "--top-k", "1", "--seed", "42"),
        *("--no-escape", "-p", text, *args),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = proc.stdout + proc.stderr
    decoded = re.search(r"decoded\s+(\d+) tokens in\s+([0-9.]+) seconds", log)
    if proc.returncode != 0 or decoded is None:
        sys.exit(f"llama-speculative-simple ({mode}) failed:\n{log[-3000:]}")

    def count(name: str) -> float:
        found = re.findall(rf"\b{name}\s*=\s*(\d+)", log)
        return float(found[-1]) if found else 0.0

    return {
        "n_tokens": float(decoded.group(1)),
        "decode_seconds": float(decoded.group(2)),
        "drafted": count("n_drafted"),
        "accepted": count("n_accept"),
    }


def edgespec_run(pair: Pair, strategy: str, prompt: BenchPrompt, n_predict: int) -> dict[str, float]:
    """One generation in this process, as ``edgespec bench`` runs it: copying from nothing but its
    own prompt and output (not from the runs before it, which answered the same prompt)."""
    pair.reset(forget_earlier=True)
    s = pair.generate(prompt.prompt, max_tokens=n_predict, temperature=0.0, strategy=strategy).stats
    return {
        "n_tokens": s.n_tokens,
        "decode_seconds": s.decode_seconds,
        "drafted": s.drafted,
        "accepted": s.accepted,
    }


def compare_modes(args: argparse.Namespace) -> int:
    """Every prompt under edgespec none and auto and each native mode, alternated; the tables."""
    if not (TOOLS / "llama-speculative-simple").exists():
        sys.exit(f"no llama-speculative-simple in {TOOLS}; run scripts/build_llama_tools.sh first")
    pair_spec = default_pair()
    target = args.target or pair_spec.target.mirror_path()
    draft = None if str(args.draft) == "none" else args.draft or pair_spec.draft.mirror_path()
    if draft is None and any(m.startswith("draft ") for m in args.modes or NATIVE_MODES):
        sys.exit("the draft-simple modes need a draft: pass --modes without them, or --draft")
    known = list(dict.fromkeys(p.category for p in load_prompts()))
    unknown = [c for c in args.category if c not in known]
    if unknown:
        sys.exit(f"no such category: {', '.join(unknown)}; use {', '.join(known)}")
    prompts = [p for c in args.category or known for p in load_prompts([c])[: args.prompts_per_category]]
    bad = [m for m in args.modes or [] if m not in (*EDGESPEC_MODES, *NATIVE_MODES)]
    if bad:
        sys.exit(f"no such mode: {', '.join(bad)}; use {', '.join([*EDGESPEC_MODES, *NATIVE_MODES])}")
    pair = Pair(target, draft, n_ctx=N_CTX, n_threads=args.threads)
    costs = pair.costs()  # measured (or read from the cache) before any run is timed
    curve = ", ".join(f"{n}: {c:g}" for n, c in costs.relative().items())
    draft_cost = costs.draft_s / costs.verify(1) if costs.draft_s else float("nan")
    named = draft.name if draft else "none"
    print(f"target {target.name}, draft {named}, {args.threads} threads, {args.n_predict} tokens, greedy")
    print(f"edgespec's measured costs (single steps): {curve}; draft {draft_cost:.2f} of a step", flush=True)
    texts = {
        p.id: p.text if p.raw else pair.prompter.render([{"role": "user", "content": p.text}])
        for p in prompts
    }
    modes = args.modes or [*EDGESPEC_MODES, *NATIVE_MODES]
    if "none" not in modes:
        modes.insert(0, "none")  # every ratio's baseline
    runs: list[Run] = []
    turn = 0
    for r in range(args.rounds):
        for prompt in prompts:
            order = modes[turn % len(modes) :] + modes[: turn % len(modes)]
            turn += 1
            for mode in order:
                if mode in NATIVE_MODES:
                    m = native_run(mode, target, draft, texts[prompt.id], args.threads, args.n_predict)
                else:
                    m = edgespec_run(pair, mode, prompt, args.n_predict)
                run = Run(
                    r + 1,
                    prompt.category,
                    prompt.id,
                    mode,
                    int(m["n_tokens"]),
                    m["decode_seconds"],
                    int(m["drafted"]),
                    int(m["accepted"]),
                )
                runs.append(run)
                print(
                    f"  round {r + 1} {prompt.id:<12} {mode:<14} {run.n_tokens:>4} tok {run.tps:7.2f} tok/s",
                    flush=True,
                )
    pair.close()
    if args.json:  # first: the runs are kept whatever the tables make of them
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print_tables(runs, modes)
    return 0


def print_tables(runs: list[Run], modes: list[str]) -> None:
    """Per mode and category: the median ratio over edgespec none and its range, as Markdown."""
    base = {(r.round, r.prompt_id): r.tps for r in runs if r.mode == "none"}
    ratios: dict[tuple[str, str], list[float]] = {}
    tps: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        for category in (r.category, "all"):
            ratios.setdefault((category, r.mode), []).append(r.tps / base[(r.round, r.prompt_id)])
            tps.setdefault((category, r.mode), []).append(r.tps)
    categories = [*dict.fromkeys(r.category for r in runs), "all"]
    med = {key: statistics.median(values) for key, values in ratios.items()}
    n_rounds = len({r.round for r in runs})
    print(
        f"\nspeed-up over edgespec --strategy none on the same prompt in the same round (rounds: {n_rounds}):"
        " median (min-max) over prompts and rounds; kept: share of guesses the target kept\n"
    )
    print("| mode | " + " | ".join(categories) + " | kept |")
    print("| --- |" + " --- |" * (len(categories) + 1))
    print(
        "| none (tok/s) | "
        + " | ".join(f"{statistics.median(tps[c, 'none']):.2f}" for c in categories)
        + " | |"
    )
    for mode in modes[1:]:
        cells = [
            f"{med[c, mode]:.2f}x ({min(ratios[c, mode]):.2f}-{max(ratios[c, mode]):.2f})" for c in categories
        ]
        rs = [r for r in runs if r.mode == mode]
        drafted, accepted = sum(r.drafted for r in rs), sum(r.accepted for r in rs)
        kept = f"{accepted / drafted:.0%}" if drafted else "-"
        print(f"| {mode} | " + " | ".join(cells) + f" | {kept} |")
    native = [m for m in modes if m in NATIVE_MODES]
    if not native or "auto" not in modes:
        return
    best = {c: max(native, key=lambda m, c=c: med[c, m]) for c in categories}
    print("| best native | " + " | ".join(best[c] for c in categories) + " | |")
    print(
        "| auto / best native | "
        + " | ".join(f"{med[c, 'auto'] / med[c, best[c]]:.2f}x" for c in categories)
        + " | |"
    )


def overhead_reference(
    target: Path, draft: Path, prompt_file: Path, threads: int, n_predict: int
) -> dict[str, float]:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "reference_llama_cpp.sh"), str(target), str(draft), str(prompt_file)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "THREADS": str(threads), "N_PREDICT": str(n_predict), "DRAFT_MAX": "3"},
    )
    return {k: float(v) for k, v in (line.split("=", 1) for line in proc.stdout.split()) if v}


def overhead_edgespec(
    target: Path, draft: Path, strategy: str, threads: int, n_predict: int
) -> dict[str, object]:
    cmd = [
        *(sys.executable, "-m", "edgespec", "generate", "--target", str(target), "--draft", str(draft)),
        *("--prompt", PROMPT, "--max-tokens", str(n_predict), "--temp", "0", "--threads", str(threads)),
        *("--strategy", strategy, "--draft-max", "3", "--p-min", "0", "--json"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def compare_overhead(args: argparse.Namespace) -> int:
    pair = default_pair()
    target, draft = pair.target.mirror_path(), pair.draft.mirror_path()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(PROMPT)
    tg_ratios, spec_ratios = [], []
    for i in range(args.rounds):
        ref = overhead_reference(target, draft, Path(f.name), args.threads, args.n_predict)
        none = overhead_edgespec(target, draft, "none", args.threads, args.n_predict)
        spec = overhead_edgespec(target, draft, "draft", args.threads, args.n_predict)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modes = sub.add_parser("modes", help="auto against llama.cpp's native speculative modes, per category")
    modes.add_argument("--target", type=Path, help="target GGUF (default: the default pair's)")
    modes.add_argument("--draft", type=Path, help="draft GGUF (default: the default pair's; none: no draft)")
    modes.add_argument("--category", action="append", default=[], help="only this category (repeatable)")
    modes.add_argument("--prompts-per-category", type=int, default=3)
    modes.add_argument("--json", type=Path, help="also write every run to this file")
    modes.add_argument(
        "--modes",
        type=lambda text: [m.strip() for m in str(text).split(",")],
        help=f"comma-separated modes to run (default: all): {', '.join([*EDGESPEC_MODES, *NATIVE_MODES])}",
    )
    overhead = sub.add_parser("overhead", help="edgespec none/draft 3 against llama-bench/speculative-simple")
    for p in (modes, overhead):
        p.add_argument("--rounds", type=int, default=3 if p is overhead else 1)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--n-predict", type=int, default=128)
    args = parser.parse_args()
    return compare_modes(args) if args.command == "modes" else compare_overhead(args)


if __name__ == "__main__":
    raise SystemExit(main())
