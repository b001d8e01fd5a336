"""Side-by-side measurements: the same prompts under each strategy, alternated, in one run.

Returns data only; printing and plotting live in the CLI. Speed-ups are ratios of tokens per
second measured in the same run against ``none`` (the target alone through the same code path),
with the order of strategies rotated on every prompt so that drift on a shared machine falls on
all of them alike.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from edgespec.constraint import Constraint
from edgespec.generate import Pair, Prompt

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


# Batched and single-token logits of a quantized model differ by a few hundredths; two greedy runs
# may part only where the target's top two logits are closer than this.
NEAR_TIE = 0.1


@dataclass(frozen=True)
class BenchPrompt:
    """One prompt of the benchmark set."""

    category: str
    id: str
    text: str
    raw: bool = False
    """The text is the prompt as it is (a completion), not a user message under the chat template."""
    schema: str | None = None
    """A JSON schema the reply is generated under (structured extraction), or None."""

    @property
    def constraint(self) -> Constraint | None:
        """The constraint of every run of this prompt."""
        return None if self.schema is None else Constraint.json_schema(self.schema)

    @property
    def prompt(self) -> Prompt:
        """What :meth:`Pair.generate` takes: the raw text, or one user message."""
        return self.text if self.raw else [{"role": "user", "content": self.text}]


@dataclass
class Run:
    """One generation of one prompt under one strategy."""

    category: str
    prompt_id: str
    strategy: str
    token_ids: list[int]
    n_tokens: int
    decode_seconds: float
    ttft_seconds: float
    steps: int
    drafted: int
    accepted: int
    drafted_by_position: list[int]
    accepted_by_position: list[int]
    steps_by_source: dict[str, int]
    mask_seconds: float = 0.0
    """Under a constraint: seconds masking the verified rows."""
    masked_rows: int = 0
    grammar_seconds: float = 0.0
    """Under a constraint: seconds following it and looking ahead for proposers."""


@dataclass
class Summary:
    """One strategy over one category (or over everything)."""

    category: str
    strategy: str
    n_tokens: int
    decode_seconds: float
    tokens_per_second: float
    speedup: float
    """Tokens per second over those of ``none`` in the same category."""
    acceptance: float
    mean_accepted_per_step: float
    ttft_seconds: float
    """Mean time to first token."""
    mask_us_per_row: float = 0.0
    """Under a constraint: microseconds masking one verified row."""
    grammar_us_per_step: float = 0.0
    """Under a constraint: microseconds it costs a step (masks, following it, looking ahead)."""
    grammar_share: float = 0.0
    """Under a constraint: the share of decode time spent on it (masks, following, looking ahead)."""


@dataclass
class Mismatch:
    """A greedy output that differs from the target alone's."""

    prompt_id: str
    strategy: str
    first_difference: int
    top_two_gap: float
    """The target's top-1 minus top-2 logit where the outputs part: small means a near-tie."""


@dataclass
class BenchReport:
    """Everything one benchmark run measured."""

    runs: list[Run] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    exact: bool = False
    """Whether the pair was loaded in exact mode (greedy output promised bit-identical)."""
    n_compared: int = 0
    """Greedy outputs compared with the target alone's (every run of a strategy other than none)."""
    n_identical: int = 0
    """Of those, how many were token for token identical."""
    mismatches: list[Mismatch] = field(default_factory=list)
    cost_curve: dict[int, float] = field(default_factory=dict)
    """Verification cost by batch size, in single-step units."""
    draft_cost: float | None = None
    """The draft's cost per token, in target single-step units."""
    mtp_cost: float | None = None
    """A step of the target's own MTP layers, in target single-step units; None without them."""


def load_prompts(categories: Sequence[str] = ()) -> list[BenchPrompt]:
    """The shipped prompt set, optionally only some categories."""
    text = resources.files("edgespec").joinpath("prompts/bench.toml").read_text("utf-8")
    prompts = [
        BenchPrompt(p["category"], p["id"], p["text"], p.get("raw", False), p.get("schema"))
        for p in tomllib.loads(text)["prompt"]
    ]
    return [p for p in prompts if not categories or p.category in categories]


def run_bench(
    pair: Pair,
    prompts: Sequence[BenchPrompt],
    strategies: Sequence[str] = ("none", "auto", "draft", "lookup"),
    max_tokens: int = 128,
    repeats: int = 1,
    progress: Callable[[Run], None] | None = None,
) -> BenchReport:
    """Run every prompt under every strategy, greedy, alternating the order; summarise."""
    if "none" not in strategies:
        strategies = ["none", *strategies]
    costs = pair.costs()
    report = BenchReport(cost_curve=costs.relative(), exact=pair.exact)
    if costs.draft_s is not None:
        report.draft_cost = round(costs.draft_s / costs.verify(1), 3)
    if (mtp := costs.drafting("mtp")) is not None:
        report.mtp_cost = round(mtp.step_s / costs.verify(1), 3)
    order = list(strategies)
    for _ in range(repeats):
        for prompt in prompts:
            for strategy in order:
                # Every run reads its prompt afresh, so time to first token compares, and copies
                # nothing from earlier runs: another strategy's answer to the same prompt would
                # otherwise be in the lookup's memory of earlier requests.
                pair.reset(forget_earlier=True)
                result = pair.generate(
                    prompt.prompt,
                    max_tokens=max_tokens,
                    temperature=0.0,
                    strategy=strategy,
                    constraint=prompt.constraint,
                )
                s = result.stats
                run = Run(
                    prompt.category,
                    prompt.id,
                    strategy,
                    result.token_ids,
                    s.n_tokens,
                    s.decode_seconds,
                    s.ttft_seconds,
                    s.steps,
                    s.drafted,
                    s.accepted,
                    list(s.drafted_by_position),
                    list(s.accepted_by_position),
                    dict(s.steps_by_source),
                    s.mask_seconds,
                    s.masked_rows,
                    s.grammar_seconds,
                )
                report.runs.append(run)
                if progress:
                    progress(run)
            order = order[1:] + order[:1]  # rotate: each strategy takes every slot in turn
    report.mismatches = _mismatches(pair, {p.id: p for p in prompts}, report.runs)
    report.n_compared = sum(r.strategy != "none" for r in report.runs)
    report.n_identical = report.n_compared - len(report.mismatches)
    report.summaries = summarise(report.runs)
    return report


def _mismatches(pair: Pair, prompts: dict[str, BenchPrompt], runs: Sequence[Run]) -> list[Mismatch]:
    reference = {r.prompt_id: r.token_ids for r in runs if r.strategy == "none"}
    out = []
    for r in runs:
        want = reference[r.prompt_id]
        if r.strategy != "none" and r.token_ids != want:
            first = next(
                (i for i, (a, b) in enumerate(zip(r.token_ids, want, strict=False)) if a != b),
                min(len(r.token_ids), len(want)),
            )
            prompt = pair.prompter.tokenize(prompts[r.prompt_id].prompt)
            gap = top_two_gap(pair, prompt + want[:first])
            out.append(Mismatch(r.prompt_id, r.strategy, first, round(gap, 4)))
    return out


def top_two_gap(pair: Pair, tokens: Sequence[int]) -> float:
    """The target's top-1 minus top-2 logit for the token after ``tokens``, from a fresh cache.

    Batched verification and single-token decoding may round differently in the last bits;
    where two greedy runs part, a small gap here says it was a near-tie, not a bug.
    """
    pair.reset()
    logits = pair.target_ctx.decode(list(tokens), 0, 1)[0]
    pair.reset()
    top = np.sort(logits)[-2:]
    return float(top[1] - top[0])


def summarise(runs: Sequence[Run]) -> list[Summary]:
    """Per category and strategy, then ``all`` categories together."""
    categories = list(dict.fromkeys(r.category for r in runs))
    strategies = list(dict.fromkeys(r.strategy for r in runs))
    out = []
    for category in [*categories, "all"]:
        chosen = [r for r in runs if category in ("all", r.category)]
        base = _tps([r for r in chosen if r.strategy == "none"])
        for strategy in strategies:
            rs = [r for r in chosen if r.strategy == strategy]
            tps = _tps(rs)
            drafted, accepted, steps = (
                sum(getattr(r, a) for r in rs) for a in ("drafted", "accepted", "steps")
            )
            out.append(
                Summary(
                    category,
                    strategy,
                    sum(r.n_tokens for r in rs),
                    round(sum(r.decode_seconds for r in rs), 3),
                    round(tps, 2),
                    round(tps / base, 3) if base else 0.0,
                    round(accepted / drafted, 3) if drafted else 0.0,
                    round(accepted / steps, 3) if steps else 0.0,
                    round(sum(r.ttft_seconds for r in rs) / len(rs), 4) if rs else 0.0,
                    *_grammar_costs(rs),
                )
            )
    return out


def _grammar_costs(runs: Sequence[Run]) -> tuple[float, float, float]:
    """Microseconds a masked row and a step, and the constraint's share of the decode time."""
    rows, steps = sum(r.masked_rows for r in runs), sum(r.steps for r in runs)
    seconds = sum(r.decode_seconds for r in runs)
    spent = sum(r.mask_seconds + r.grammar_seconds for r in runs)
    if not rows:
        return 0.0, 0.0, 0.0
    per_row = sum(r.mask_seconds for r in runs) / rows * 1e6
    return round(per_row, 1), round(spent / steps * 1e6, 1), round(spent / seconds, 4)


def _tps(runs: Sequence[Run]) -> float:
    seconds = sum(r.decode_seconds for r in runs)
    return sum(r.n_tokens for r in runs) / seconds if seconds > 0 else 0.0


def acceptance_by_position(runs: Sequence[Run], strategy: str) -> list[float]:
    """The share of guesses kept at each draft position, over all runs of a strategy."""
    drafted: list[int] = []
    accepted: list[int] = []
    for r in runs:
        if r.strategy != strategy:
            continue
        for i, (d, a) in enumerate(zip(r.drafted_by_position, r.accepted_by_position, strict=True)):
            if i >= len(drafted):
                drafted.append(0)
                accepted.append(0)
            drafted[i] += d
            accepted[i] += a
    while drafted and drafted[-1] == 0:  # positions no run reached
        drafted.pop()
        accepted.pop()
    return [a / d if d else 0.0 for a, d in zip(accepted, drafted, strict=True)]
