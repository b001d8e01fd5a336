"""Options shared by the commands that load a pair and generate (generate, chat, serve, bench)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from edgespec.exactness import no_speculation_note
from edgespec.generate import Pair
from edgespec.options import DRAFT_LIMIT, FLAGS, RULES, GenerationOptions, Rule

F = TypeVar("F", bound=Callable[..., Any])


def model_options(f: F) -> F:
    """--target --draft --pair --ctx-size --threads --n-gpu-layers --draft-max --p-min --exact."""
    for option in reversed(
        [
            click.option(
                "--target", metavar="PATH", help="Target GGUF model (the one whose output you get)."
            ),
            click.option(
                "--draft",
                metavar="PATH",
                help="Draft GGUF model with the same tokenizer, or a Gemma 4 assistant.",
            ),
            click.option("--pair", metavar="NAME", help="A curated pair by name (see `edgespec models`)."),
            click.option(
                "--ctx-size",
                type=click.IntRange(min=8),
                default=None,
                help="Context size in tokens [default: the model's, at most 4096].",
            ),
            click.option(
                "--threads",
                type=click.IntRange(min=1),
                default=None,
                help="CPU threads [default: all available].",
            ),
            click.option(
                "--n-gpu-layers",
                type=int,
                default=0,
                show_default=True,
                help="Layers to offload to the GPU (-1: all), if llama.cpp was built with one.",
            ),
            click.option(
                "--draft-max",
                type=click.IntRange(1, DRAFT_LIMIT),
                default=16,
                show_default=True,
                help="Most tokens guessed per step by the draft, mtp and lookup strategies.",
            ),
            click.option(
                "--p-min",
                type=click.FloatRange(0, 1),
                default=0.75,
                show_default=True,
                help="The draft (and mtp) stops guessing when its top probability falls below this.",
            ),
            click.option(
                "--exact",
                is_flag=True,
                help="Greedy output bit-identical to the target alone (--strategy none --exact), "
                "at a measured cost in speed. Without it greedy output is the target's argmax at every "
                "verified token, but batched verification rounds differently from single steps, so "
                "after a near-tie it can part from a run without speculation.",
            ),
        ]
    ):
        f = option(f)
    return f


def sampling_options(f: F) -> F:
    """The sampling flags (--temp --top-k --top-p --min-p --seed --max-tokens --strategy), each
    with the default, range and help of its :class:`GenerationOptions` field."""
    defaults = GenerationOptions()
    for flag, name in reversed(FLAGS.items()):
        rule, default = RULES[name], getattr(defaults, name)
        option = click.option(
            "--" + flag.replace("_", "-"),
            flag,
            type=_click_type(rule),
            default=default,
            show_default=default is not None,
            help=rule.help,
        )
        f = option(f)
    return f


def _click_type(rule: Rule) -> Any:
    # click checks the same range the option's Rule allows, so a bad flag is a usage error.
    if rule.choices:
        return click.Choice(rule.choices)
    if rule.kind is float:
        return click.FloatRange(rule.low, rule.high, min_open=rule.low_open)
    if rule.low is None and rule.high is None:
        return click.INT
    low, high = (None if b is None else int(b) for b in (rule.low, rule.high))
    return click.IntRange(low, high, min_open=rule.low_open)


def generation_options(values: dict[str, Any]) -> GenerationOptions:
    """The :class:`GenerationOptions` the sampling flags give, taken out of a command's ``values``."""
    return GenerationOptions(**{name: values.pop(flag) for flag, name in FLAGS.items()})


def load_pair(
    target: str | None,
    draft: str | None,
    pair: str | None,
    ctx_size: int | None,
    threads: int | None,
    n_gpu_layers: int,
    draft_max: int,
    p_min: float,
    exact: bool = False,
) -> Pair:
    """Load the pair the model options name (each a path, pair name, org/repo[:QUANT] or
    org/repo/file.gguf); with none, the default pair from the cache, pulled if missing."""
    import logging

    from edgespec.cli.progress import ProgressBars
    from edgespec.hub import resolve_pair

    logging.getLogger("edgespec.hub").setLevel(logging.INFO)  # say so when a download starts
    target_path, draft_path = resolve_pair(target, draft, pair, download=True)
    loaded = Pair(
        target_path,
        draft_path,
        n_ctx=ctx_size,
        n_threads=threads,
        n_gpu_layers=n_gpu_layers,
        max_draft=draft_max,
        p_min=p_min,
        exact=exact,
        progress=ProgressBars(),  # on a terminal: loading, the device's measurement, exact mode's check
    )
    if loaded.batch_cap is not None and (note := no_speculation_note(loaded.batch_cap, loaded.target_ctx)):
        click.echo(f"edgespec: note: {note}", err=True)
    return loaded
