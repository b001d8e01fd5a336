"""Tune the planner without a quiet machine: record traces once, replay planners against a curve.

    python scripts/planner_trace.py record --target T.gguf --draft D.gguf --out traces.json
    python scripts/planner_trace.py replay traces.json --curve q4     # heavy, or a bench --json report
    python scripts/planner_trace.py ceiling traces.json [--trees]     # what an oracle reaches

``record`` runs the target greedily on the benchmark prompts and, for every position of its
output, the draft model's greedy guess, second choice and top probability given the true text
before it (one batched pass: while the draft's guesses are kept, its context is the true text).
``replay`` runs the real AutoPlanner over those traces, with a stand-in draft model that answers
from the record, and charges each step what the cost curve says (single-step units). It prints the
expected speed-up over the target alone per category: a deterministic figure, free of the noise
of a loaded machine. The stand-in draft's batches (catching up after a copy) are charged on
``DRAFT_CURVE``.

``ceiling`` is the bound any planner of single-chain guesses has on the traces: an oracle that
knows, at each position, how far the draft's guesses and the best copy will be kept (and a copy
the draft continues), and chooses the fastest sequence of steps by dynamic programming. It is
generous to the draft: its catching up is charged as two tokens a step, the prompt's prefill not
at all (``--charge-prompt`` charges the prompt, the oracle choosing whether the draft is worth
it). With ``--trees`` it may also verify a second branch where the draft is first rejected
(the draft's second choice there, then its guesses), the rows of both branches on the curve: the
bound for two-branch token trees.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgespec.costs import CostModel
from edgespec.lookup import PromptLookup
from edgespec.planner import AutoPlanner, FixedPlanner
from edgespec.proposers import Plan, Proposal
from edgespec.sampling import GREEDY

# Measured on the AMD EPYC VM, 2 threads (DESIGN.md, issue 9), in single-step units.
CURVES = {
    "q4": ({1: 1.0, 2: 1.74, 4: 2.9, 8: 6.7, 12: 8.3, 16: 7.8, 24: 13.5, 32: 13.3, 64: 23.6}, 0.6),
    "heavy": ({1: 1.0, 2: 1.31, 4: 1.54, 8: 2.23, 16: 3.34, 32: 6.0, 64: 11.6}, 0.2),
}
# The Q4 0.5B draft on the same CPU is compute-bound like the Q4 target: small batches cost like the
# Q4 target's; long ones (catching up on a prompt) were measured at 128: 34, 256: 50 single steps.
DRAFT_CURVE = {**CURVES["q4"][0], 128: 34.0, 256: 50.0}
RNG = np.random.default_rng(0)


def draft_batches(draft_s: float) -> CostModel:
    """The stand-in draft's seconds by batch size (single target steps), on ``DRAFT_CURVE``."""
    return CostModel({n: s * draft_s for n, s in DRAFT_CURVE.items()})


def load_curve(name: str) -> tuple[dict[int, float], float]:
    """A named curve, or the one an ``edgespec bench --json`` report measured (``cost_curve`` in
    single steps, ``draft_cost``)."""
    if name in CURVES:
        return CURVES[name]
    report = json.loads(Path(name).read_text())
    return {int(n): float(c) for n, c in report["cost_curve"].items()}, float(report["draft_cost"])


PLANNER_TIME = [0.0, 0]  # seconds spent in propose and observe, steps


def record(args: argparse.Namespace) -> None:
    from edgespec import Pair

    prompts = tomllib.loads(Path(args.prompts).read_text())["prompt"]
    if args.ids:
        prompts = sorted((p for p in prompts if p["id"] in args.ids), key=lambda p: args.ids.index(p["id"]))
    pair = Pair(args.target, args.draft, n_ctx=4096, n_threads=args.threads)
    assert pair.draft_model is not None
    draft = pair.draft_model.ctx
    traces = []
    for p in prompts:
        if args.categories and p["category"] not in args.categories:
            continue
        text = p["text"] if p.get("raw") else [{"role": "user", "content": p["text"]}]
        prompt = pair.prompter.tokenize(text)
        t0 = time.perf_counter()
        out = pair.generate(prompt, max_tokens=args.max_tokens, temperature=0, strategy="lookup").token_ids
        seq = [*prompt, *out]
        draft.clear()
        draft.decode(seq[: len(prompt) - 1], 0, 0)
        guess, top, second = [], [], []
        pos = len(prompt) - 1
        while pos < len(seq):
            chunk = seq[pos : pos + 256]
            logits = draft.decode(chunk, pos, len(chunk))
            for row in logits:
                two = np.argpartition(row, -2)[-2:]
                g, h = (int(i) for i in two[np.argsort(-row[two])])
                guess.append(g)
                second.append(h)
                top.append(float(1.0 / np.exp(row - row[g]).sum()))
            pos += len(chunk)
        draft.clear()
        pair.reset()
        traces.append(
            {
                "category": p["category"],
                "id": p["id"],
                "prompt": prompt,
                "output": out,
                "guess": guess,
                "top": top,
                "second": second,
            }
        )
        print(f"{p['id']}: {len(out)} tokens in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        Path(args.out).write_text(json.dumps(traces))  # after each prompt: a long run can be stopped


class TraceDraft:
    """Answers like DraftModel from a trace: the guess and top probability at each position."""

    name = "draft"
    continues_copies = True

    def __init__(self, n_prompt: int, guess: Sequence[int], top: Sequence[float], costs: CostModel) -> None:
        self.n_prompt, self.guess, self.top = n_prompt, guess, top
        self.cached: list[int] = []
        self.seconds = 0.0
        assert costs.draft_s is not None
        self.draft_curve = draft_batches(costs.draft_s)

    def lag(self, history: Sequence[int]) -> int:
        from edgespec.proposers import common_prefix

        return len(history) - min(common_prefix(self.cached, history), len(history) - 1)

    def _at(self, n: int) -> tuple[int, float]:
        i = min(n - self.n_prompt, len(self.guess) - 1)
        return self.guess[i], self.top[i]

    def propose(
        self,
        history: Sequence[int],
        k: int,
        params: object,
        rng: object,
        plan: Plan | None = None,
        verified: int | None = None,
    ) -> Proposal:
        lag = self.lag(history)
        self.seconds += self.draft_curve.verify(lag)
        self.cached = list(history)
        tokens: list[int] = []
        confidence: list[float] = []
        if plan is None:
            plan = lambda i, top: k if top >= 0.75 else i  # noqa: E731 - --strategy draft's p_min rule
        while len(tokens) < k:
            token, top = self._at(len(history) + len(tokens))
            n = plan(len(tokens), top)
            if n <= len(tokens):
                break
            tokens.append(token)
            confidence.append(top)
            if len(tokens) >= min(k, n):
                break
            self.seconds += self.draft_curve.verify(1)
            self.cached.append(token)
        return Proposal(tokens, "draft", None, confidence, [0] * len(tokens))

    def reset(self) -> None:
        self.cached = []


def replay_one(
    trace: dict, costs: CostModel, planner: AutoPlanner | FixedPlanner, draft: TraceDraft | None
) -> tuple[float, int, dict]:
    """Seconds (in single steps) the planner spends on the trace, the tokens, and steps by source."""
    debug = bool(os.environ.get("TRACE_DEBUG"))
    prompt, out = trace["prompt"], trace["output"]
    history = list(prompt)
    planner.begin()
    seconds, t = 0.0, 0
    sources: dict[str, int] = defaultdict(int)
    while t < len(out):
        max_k = min(len(out) - t - 1, 63)
        drafting = draft.seconds if draft is not None else 0.0
        t0 = time.perf_counter()
        proposal = planner.propose(history, max_k, GREEDY, RNG)
        PLANNER_TIME[0] += time.perf_counter() - t0
        drafting = (draft.seconds if draft is not None else 0.0) - drafting
        n = 0
        while n < len(proposal.tokens) and proposal.tokens[n] == out[t + n]:
            n += 1
        step = costs.verify(len(proposal.tokens) + 1)
        seconds += step
        if debug and isinstance(planner, AutoPlanner):
            pooled = planner.drafters[0].pooled() if planner.drafters else 0.0
            print(
                f"    t={t} {proposal.source} k={len(proposal.tokens)} kept={n} rate={planner.rate:.2f} "
                f"step_rate={planner._rate:.2f} pooled={pooled:.2f} drafting={drafting:.2f}"
            )
        t0 = time.perf_counter()
        planner.observe(proposal, n, drafting, step)
        PLANNER_TIME[0] += time.perf_counter() - t0
        PLANNER_TIME[1] += 1
        sources[proposal.source] += 1
        history.extend(out[t : t + n + 1])
        t += n + 1
    if draft is not None:
        seconds += draft.seconds
    return seconds, len(out), sources


def replay(args: argparse.Namespace) -> None:
    traces = json.loads(Path(args.traces).read_text())
    curve, draft_s = load_curve(args.curve)
    by_cat: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    t_planner = 0.0
    lookup = PromptLookup()
    state = None
    for trace in traces:
        costs = CostModel(dict(curve), draft_s)
        draft = (
            None if args.no_draft else TraceDraft(len(trace["prompt"]), trace["guess"], trace["top"], costs)
        )
        planner: AutoPlanner | FixedPlanner
        if args.policy == "auto":
            planner = AutoPlanner(costs, lookup, [draft] if draft else [], max_draft=args.max_draft)
        else:
            kind, k = args.policy.split(":")
            planner = FixedPlanner(draft if kind == "draft" else lookup, int(k))  # type: ignore[arg-type]
        if state is not None and args.carry and isinstance(planner, AutoPlanner):
            # Every part of the planner that reads the calibrations gets the carried ones.
            confidence, copies = state
            for drafter in planner.drafters:
                drafter.confidence = confidence
            for part in (planner, planner.joins, planner.explorer):
                part.copies = copies
        t0 = time.perf_counter()
        seconds, n, sources = replay_one(trace, costs, planner, draft)
        t_planner += time.perf_counter() - t0
        if isinstance(planner, AutoPlanner):
            state = (planner.drafters[0].confidence if planner.drafters else None, planner.copies)
        cat = by_cat[trace["category"]]
        cat[0] += n
        cat[1] += seconds
        print(f"  {trace['id']:<14} {n / seconds:5.2f}x  {dict(sources)}")
    total_tokens = sum(c[0] for c in by_cat.values())
    for name, (n, seconds) in by_cat.items():
        print(f"{name:<22} {n / seconds:5.2f}x")
    print(
        f"replay {1e3 * t_planner / total_tokens:.3f} ms per token; planner (propose + observe, with the"
        f" stand-in draft's bookkeeping): {1e3 * PLANNER_TIME[0] / PLANNER_TIME[1]:.3f} ms per step"
    )


def _kept_run(guesses: Sequence[int], out: Sequence[int], t: int) -> int:
    n = 0
    while n < len(guesses) and t + n < len(out) and guesses[n] == out[t + n]:
        n += 1
    return n


def ceiling(args: argparse.Namespace) -> None:
    traces = json.loads(Path(args.traces).read_text())
    for name in args.curve or sorted(CURVES):
        curve, draft_s = load_curve(name)
        costs = CostModel(dict(curve), draft_s)
        by_cat: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        prefill = draft_batches(draft_s)
        for trace in traces:
            seconds = _oracle_seconds(trace, costs, draft_s, args.trees, args.branch_max)
            if args.charge_prompt:  # the draft decodes the prompt once, if it is used at all
                seconds = min(
                    seconds + prefill.verify(len(trace["prompt"])),
                    _oracle_seconds(trace, costs, float("inf"), trees=False),
                )
            by_cat[trace["category"]][0] += len(trace["output"])
            by_cat[trace["category"]][1] += seconds
        print(f"{name}: " + ", ".join(f"{c} {n / s:.2f}x" for c, (n, s) in by_cat.items()))


def _oracle_seconds(
    trace: dict, costs: CostModel, draft_s: float, trees: bool, branch_max: int = 63
) -> float:
    """Least seconds (single steps) to produce the trace's output, by dynamic programming over steps:
    a copy, a draft, a copy the draft continues, each as far as it is kept; with ``trees``, also a
    draft with a second branch where it is first rejected (the draft's second choice there, then
    its guesses after it, at most ``branch_max`` of them)."""
    prompt, out, guess = trace["prompt"], trace["output"], trace["guess"]
    lookup = PromptLookup()
    n_out = len(out)
    # best[t]: least seconds to produce out[t:] once out[:t] is verified.
    best = [0.0] * (n_out + 1)
    for t in range(n_out - 1, -1, -1):
        room = min(n_out - t - 1, 63)
        copy = _kept_run(lookup.propose([*prompt, *out[:t]], room, GREEDY, RNG).tokens, out, t)
        drafted = _kept_run(guess[t : t + room], out, t)
        options = [costs.verify(1) + best[t + 1]]
        options += [costs.verify(n + 1) + best[t + n + 1] for n in range(1, copy + 1)]
        options += [costs.verify(n + 1) + draft_s * (n + 1) + best[t + n + 1] for n in range(1, drafted + 1)]
        r = t + copy  # the copy continued by the draft where it is first rejected
        if copy and r < n_out - 1:
            more = _kept_run(guess[r : t + room], out, r)
            options += [
                costs.verify(copy + m + 1) + draft_s * (m + 1) + best[r + m + 1] for m in range(1, more + 1)
            ]
        r = t + drafted  # a branch where the draft is first rejected: its second choice, then on
        if trees and r < n_out - 1 and drafted < room and trace["second"][r] == out[r]:
            more = min(_kept_run(guess[r + 1 : t + room], out, r + 1), branch_max)
            options += [
                costs.verify(drafted + b + 3) + draft_s * (drafted + b + 2) + best[r + b + 2]
                for b in range(0, more + 1)
            ]
        best[t] = min(options)
    return best[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record")
    r.add_argument("--target", required=True)
    r.add_argument("--draft", required=True)
    r.add_argument("--prompts", default=str(Path(__file__).parent.parent / "edgespec/prompts/bench.toml"))
    r.add_argument("--categories", nargs="*", default=[])
    r.add_argument("--ids", nargs="*", default=[], help="only these prompts, in this order")
    r.add_argument("--max-tokens", type=int, default=128)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out", required=True)
    p = sub.add_parser("replay")
    p.add_argument("traces")
    p.add_argument("--curve", default="q4", help=f"{' or '.join(CURVES)}, or a bench --json report")
    p.add_argument("--max-draft", type=int, default=16)
    p.add_argument("--no-draft", action="store_true")
    p.add_argument("--policy", default="auto", help="auto, or a fixed one: draft:K (p_min 0.75) or lookup:K")
    p.add_argument("--carry", action="store_true", help="keep what the planner learned across prompts")
    c = sub.add_parser("ceiling")
    c.add_argument("traces")
    c.add_argument("--curve", action="append", help="as replay's (repeatable); default: each named one")
    c.add_argument("--trees", action="store_true", help="also allow a second branch (traces with 'second')")
    c.add_argument("--branch-max", type=int, default=63, help="--trees: most guesses after the second choice")
    c.add_argument(
        "--charge-prompt", action="store_true", help="charge the draft's catching up on the prompt"
    )
    args = parser.parse_args()
    {"record": record, "replay": replay, "ceiling": ceiling}[args.command](args)


if __name__ == "__main__":
    main()
