"""What a rejected guess costs on a recurrent or hybrid model, against a plain KV cache's nothing.

    python scripts/bench_rewind.py MODEL.gguf [MODEL.gguf ...] [--threads 2] [--reps 5] [--json FILE]

For each model (random-weight files at real shapes from scripts/make_random_model.py serve: the
weights do not matter to the costs), two contexts on the same weights: one with llama.cpp's native
rollback (``n_rs_seq`` 16, where the architecture allows it) and one that always goes back to saved
states (checkpoints). It prints, by verification batch size n:

- the verification curve (n tokens with logits on every row, in single steps) of each context;
- a batch with no recurrent-state snapshots (the checkpoint context's decode less its save): what
  the model's batch costs with nothing kept for a rewind, the stand-in for a plain cache's;
- what rejecting the guesses after the first half costs, in single steps, over that: with native
  rollback, the snapshots its batch writes plus the cut itself; with checkpoints, the save, the
  restore and the kept guesses read again in the next batch (edgespec's way), or in a decode of their
  own (llama.cpp's way in ``llama-speculative-simple``).

A plain KV cache pays nothing beyond the batch for a rejection (a ``llama_memory_seq_rm``), so these
shares are the extra over a plain attention model. Each figure is the fastest of ``--reps`` rounds,
sizes taken round-robin (a shared machine only adds time); run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgespec.costs import CostModel
from edgespec.llama import Context, Model

SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24)
SHOWN = (2, 4, 8, 16)
PREFIX = 64


def timed(fn: Callable[..., object], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(contexts: list[Context], reps: int) -> list[dict[str, dict[int, float]]]:
    """For each context, seconds by batch size n: the decode, a cut of its second half, and
    (under key 0) a save and a restore; all from the same prefix. The contexts and the sizes take
    turns within each of ``reps`` rounds, so that drift falls on all alike; the fastest is kept."""
    tokens = [(7 * i + 3) % contexts[0].n_vocab for i in range(PREFIX + 64)]
    inf = float("inf")
    out = [{"decode": dict.fromkeys(SIZES, inf), "cut": dict.fromkeys(SIZES, inf)} for _ in contexts]
    for o in out:
        o["save"], o["restore"] = {0: inf}, {0: inf}
    for ctx in contexts:
        ctx.clear()
        ctx.decode(tokens[:PREFIX], 0, 0)
        ctx.snapshot()
    for _ in range(reps):
        for n in SIZES:
            keep = PREFIX + 1 + (n - 1) // 2  # the pending token and the first half of the guesses
            for ctx, o in zip(contexts, out, strict=True):
                o["decode"][n] = min(
                    o["decode"][n], timed(ctx.decode, tokens[PREFIX : PREFIX + n], PREFIX, n)
                )
                o["cut"][n] = min(o["cut"][n], timed(ctx.truncate, keep))
                ctx.truncate(PREFIX)  # back to the snapshot for the next size
        for ctx, o in zip(contexts, out, strict=True):
            o["save"][0] = min(o["save"][0], timed(ctx.checkpoint))
            ctx.decode(tokens[PREFIX : PREFIX + 1], PREFIX, 1)  # one token: only a restore undoes it
            o["restore"][0] = min(o["restore"][0], timed(ctx.truncate, PREFIX))
    for ctx in contexts:
        ctx.clear()
    return out


def report(path: Path, threads: int, reps: int) -> dict[str, object]:
    model = Model(path)
    rows: dict[str, object] = {"model": path.name, "architecture": model.arch}
    native = Context(model, n_ctx=512, n_batch=512, n_threads=threads)
    saved = Context(model, n_ctx=512, n_batch=512, n_threads=threads, rollback=0)
    print(f"\n{path.name} ({model.arch}): native rewind '{native.rewind}', the other '{saved.rewind}'")
    a, b = measure([native, saved], reps)
    save, restore = b["save"][0], b["restore"][0]
    plain = CostModel({n: b["decode"][n] - (save if n > 1 else 0.0) for n in SIZES}).verify
    step = plain(1)
    table = []
    print(f"one step {step * 1000:.1f} ms; save {save * 1000:.2f} ms, restore {restore * 1000:.2f} ms")
    columns = ["plain", "rollback", "checkpoint", "reject_rollback", "reject_checkpoint_next"]
    columns.append("reject_checkpoint_decode")
    print("in single steps; reject_*: the extra cost of rejecting the second half of the guesses")
    print(" n" + "".join(f"{c:>25}" for c in columns))
    for n in SHOWN:
        kept = 1 + (n - 1) // 2  # read again after a restore: the pending token and the kept guesses
        row = {
            "n": n,
            "plain": plain(n) / step,
            "rollback": a["decode"][n] / step,
            "checkpoint": b["decode"][n] / step,
            "reject_rollback": (a["decode"][n] - plain(n) + a["cut"][n]) / step,
            # edgespec reads them with the next batch; llama-speculative-simple in a step of their own
            "reject_checkpoint_next": (save + restore + plain(n + kept) - plain(n)) / step,
            "reject_checkpoint_decode": (save + restore + plain(kept + 1)) / step,
        }
        if native.rewind != "rollback":
            del row["rollback"], row["reject_rollback"]
        table.append(row)
        print(f"{n:2d}" + "".join(f"{row[c]:25.3f}" if c in row else f"{'-':>25}" for c in columns))
    rows.update(step_s=step, save_s=save, restore_s=restore, native=native.rewind, table=table)
    native.close()
    saved.close()
    model.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [report(p, args.threads, args.reps) for p in args.models]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
