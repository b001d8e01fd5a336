"""``edgespec bench``: strategies side by side on the shipped prompt set; a table, JSON or a plot."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from edgespec.bench import BenchReport, Run, acceptance_by_position, load_prompts, run_bench
from edgespec.cli.options import load_pair, model_options
from edgespec.errors import InvalidParameterError
from edgespec.generate import STRATEGIES, Pair


def _strategies(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[str]:
    if value is None:
        return []  # every one the pair can run
    names = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    if bad or not names:
        raise click.BadParameter(
            f"{', '.join(bad) or 'nothing'} is not a strategy; use {', '.join(STRATEGIES)}"
        )
    return names


def _runs(pair: Pair, strategy: str) -> bool:
    try:
        pair.check_strategy(strategy)
    except InvalidParameterError:
        return False
    return True


def _categories(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    names = [c.strip() for v in value for c in v.split(",") if c.strip()]
    known = list(dict.fromkeys(p.category for p in load_prompts()))
    bad = [c for c in names if c not in known]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: no such category; use {', '.join(known)}")
    return names


@click.command()
@model_options
@click.option(
    "--strategies",
    callback=_strategies,
    help="Comma-separated strategies to compare; none is always included "
    "[default: every one the pair can run: none, auto, draft, mtp, lookup].",
)
@click.option(
    "--category",
    "--categories",
    "categories",
    multiple=True,
    callback=_categories,
    help="Only these prompt categories (repeatable, or comma-separated).",
)
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs of the whole set; the strategy order rotates on every prompt.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG: speed-up by category, acceptance by draft position, the cost curve.",
)
def bench(
    strategies: list[str],
    categories: list[str],
    max_tokens: int,
    repeats: int,
    as_json: bool,
    plot: Path | None,
    **options: Any,
) -> None:
    """Measure each strategy against the target alone, greedy, on the built-in prompts."""
    prompts = load_prompts(categories)
    if not prompts:
        known = sorted({p.category for p in load_prompts()})
        raise click.BadParameter(f"no prompts in {', '.join(categories)}; categories: {', '.join(known)}")
    console = Console(stderr=True)

    def progress(run: Run) -> None:
        tps = run.n_tokens / run.decode_seconds if run.decode_seconds else 0.0
        console.print(
            f"  {run.prompt_id:<12} {run.strategy:<7} {run.n_tokens:>4} tokens {tps:7.2f} tok/s",
            highlight=False,
        )

    with load_pair(**options) as pair:
        strategies = strategies or [s for s in ("none", "auto", "draft", "mtp", "lookup") if _runs(pair, s)]
        report = run_bench(pair, prompts, strategies, max_tokens, repeats, progress)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report)))
    else:
        _print_table(report)
    if plot is not None:
        _plot(report, plot)


def _print_table(report: BenchReport) -> None:
    table = Table(title="edgespec bench (greedy; speed-up over the target alone in the same run)")
    for name in ("category", "strategy", "tokens", "tok/s", "speed-up", "accepted", "per step", "TTFT s"):
        table.add_column(name, justify="left" if name in ("category", "strategy") else "right")
    for s in report.summaries:
        table.add_row(
            s.category,
            s.strategy,
            str(s.n_tokens),
            f"{s.tokens_per_second:.2f}",
            f"{s.speedup:.2f}x",
            f"{s.acceptance:.0%}",
            f"{s.mean_accepted_per_step:.2f}",
            f"{s.ttft_seconds:.3f}",
        )
    console = Console()
    console.print(table)
    for s in report.summaries:
        if s.category == "all" and s.mask_us_per_row:
            console.print(
                f"constraint under {s.strategy}: {s.mask_us_per_row:g} us masking a verified row, "
                f"{s.grammar_us_per_step:g} us a step in all, {s.grammar_share:.2%} of the decode time",
                highlight=False,
            )
    curve = ", ".join(f"{n}: {c:g}" for n, c in report.cost_curve.items())
    console.print(f"verification cost (single steps) by batch size: {curve}", highlight=False)
    if report.draft_cost is not None:
        console.print(f"draft model cost per token: {report.draft_cost:g} of a target step", highlight=False)
    if report.mtp_cost is not None:
        console.print(f"MTP layers' cost per token: {report.mtp_cost:g} of a target step", highlight=False)
    mode = "exact mode" if report.exact else "default mode"
    console.print(
        f"greedy outputs identical to the target alone ({mode}): {report.n_identical} of {report.n_compared}",
        highlight=False,
    )
    for m in report.mismatches:
        console.print(
            f"  differs: {m.prompt_id} under {m.strategy} from token {m.first_difference}, "
            f"where the target's top two logits are {m.top_two_gap:g} apart",
            highlight=False,
        )
    if report.mismatches and report.exact:
        console.print("exact mode promises identical output: please report this as a bug", highlight=False)
    elif report.mismatches:
        console.print(
            "(batched verification rounds differently from single steps, so greedy outputs may part "
            "where the top two logits are close; --exact makes them identical)",
            highlight=False,
        )


def _plot(report: BenchReport, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise click.UsageError("--plot needs matplotlib: pip install 'edgespec[plot]'") from exc
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8))
    categories = list(dict.fromkeys(s.category for s in report.summaries))
    strategies = [s for s in dict.fromkeys(s.strategy for s in report.summaries) if s != "none"]
    width = 0.8 / max(len(strategies), 1)
    for i, strategy in enumerate(strategies):
        ys = [
            next(s.speedup for s in report.summaries if s.category == c and s.strategy == strategy)
            for c in categories
        ]
        ax1.bar([j + i * width for j in range(len(categories))], ys, width, label=strategy)
    ax1.axhline(1.0, color="black", linewidth=0.8)
    ax1.set_xticks([j + width * (len(strategies) - 1) / 2 for j in range(len(categories))])
    ax1.set_xticklabels(categories, rotation=20, ha="right")
    ax1.set_ylabel("speed-up over the target alone")
    ax1.legend()
    for strategy in strategies:
        rates = acceptance_by_position(report.runs, strategy)
        if rates:
            ax2.plot(range(1, len(rates) + 1), rates, marker=".", label=strategy)
    ax2.set_xlabel("draft position")
    ax2.set_ylabel("share of guesses kept")
    ax2.set_ylim(0, 1.05)
    ax2.legend()
    ns = list(report.cost_curve)
    ax3.plot(ns, [report.cost_curve[n] for n in ns], marker="o", label="measured")
    ax3.plot(ns, ns, linestyle="--", color="grey", label="n single steps")
    ax3.set_xlabel("tokens verified in one batch")
    ax3.set_ylabel("cost in single steps")
    ax3.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
