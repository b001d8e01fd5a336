"""Options shared by the commands that load a pair and generate (generate, chat, serve, bench)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from edgespec.generate import STRATEGIES, Pair

F = TypeVar("F", bound=Callable[..., Any])


def model_options(f: F) -> F:
    """--target --draft --ctx-size --threads --n-gpu-layers --draft-max --p-min."""
    for option in reversed(
        [
            click.option(
                "--target", metavar="PATH", help="Target GGUF model (the one whose output you get)."
            ),
            click.option("--draft", metavar="PATH", help="Draft GGUF model with the same tokenizer."),
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
                type=click.IntRange(1, 63),
                default=16,
                show_default=True,
                help="Most tokens guessed per step by the draft and lookup strategies.",
            ),
            click.option(
                "--p-min",
                type=click.FloatRange(0, 1),
                default=0.75,
                show_default=True,
                help="The draft stops guessing when its top probability falls below this.",
            ),
        ]
    ):
        f = option(f)
    return f


def sampling_options(f: F) -> F:
    """--max-tokens --temp --top-k --top-p --min-p --seed --strategy."""
    for option in reversed(
        [
            click.option(
                "--max-tokens",
                type=click.IntRange(min=1),
                default=512,
                show_default=True,
                help="Most tokens to generate.",
            ),
            click.option(
                "--temp",
                type=click.FloatRange(min=0),
                default=0.8,
                show_default=True,
                help="Temperature; 0 is greedy (deterministic).",
            ),
            click.option(
                "--top-k",
                type=click.IntRange(min=0),
                default=40,
                show_default=True,
                help="Keep the k most likely tokens (0: all).",
            ),
            click.option(
                "--top-p",
                type=click.FloatRange(0, 1, min_open=True),
                default=0.95,
                show_default=True,
                help="Nucleus sampling: keep this much probability mass.",
            ),
            click.option(
                "--min-p",
                type=click.FloatRange(0, 1),
                default=0.05,
                show_default=True,
                help="Drop tokens below this fraction of the top token's probability.",
            ),
            click.option("--seed", type=int, default=None, help="Random seed for sampling."),
            click.option(
                "--strategy",
                type=click.Choice(STRATEGIES),
                default="auto",
                show_default=True,
                help="auto: plan each step by measured cost; draft/lookup: always that "
                "proposer; none: the target alone.",
            ),
        ]
    ):
        f = option(f)
    return f


def load_pair(
    target: str | None,
    draft: str | None,
    pair: str | None,
    ctx_size: int | None,
    threads: int | None,
    n_gpu_layers: int,
    draft_max: int,
    p_min: float,
) -> Pair:
    """Load the pair the model options name (each a path, pair name, org/repo[:QUANT] or
    org/repo/file.gguf); with none, the default pair from the cache, pulled if missing."""
    import logging

    from edgespec.hub import resolve_pair

    logging.getLogger("edgespec.hub").setLevel(logging.INFO)  # say so when a download starts
    target_path, draft_path = resolve_pair(target, draft, pair, download=True)
    return Pair(
        target_path,
        draft_path,
        n_ctx=ctx_size,
        n_threads=threads,
        n_gpu_layers=n_gpu_layers,
        max_draft=draft_max,
        p_min=p_min,
    )


def sampling_kwargs(
    temp: float, top_k: int, top_p: float, min_p: float, seed: int | None, strategy: str, max_tokens: int
) -> dict[str, Any]:
    """The generation keyword arguments of :meth:`Pair.stream` from the sampling options."""
    return {
        "temperature": temp,
        "top_k": top_k,
        "top_p": top_p,
        "min_p": min_p,
        "seed": seed,
        "strategy": strategy,
        "max_tokens": max_tokens,
    }
