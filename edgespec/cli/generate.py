"""``edgespec generate``: one prompt in, streamed text (or one JSON line) out. Scripts rely on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from edgespec.cli.options import generation_options, load_pair, model_options, sampling_options
from edgespec.constraint import Constraint
from edgespec.errors import ConstraintError


@click.command()
@model_options
@click.option("--prompt", help="The prompt text.")
@click.option(
    "--prompt-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the prompt from this file.",
)
@click.option("--raw", is_flag=True, help="Send the prompt as is, without the chat template.")
@click.option("--system", help="A system message (chat mode only).")
@click.option("--stop", multiple=True, help="Stop when this text appears (repeatable).")
@click.option(
    "--json-schema",
    "json_schema",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The output is JSON valid under the JSON schema in this file.",
)
@click.option(
    "--grammar",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The output follows the grammar in this file (GBNF, as llama.cpp's, or Lark).",
)
@sampling_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object on the last line instead of text."
)
def generate(
    prompt: str | None,
    prompt_file: Path | None,
    raw: bool,
    system: str | None,
    stop: tuple[str, ...],
    json_schema: Path | None,
    grammar: Path | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Generate a reply to one prompt, speculatively, and stream it to stdout."""
    if (prompt is None) == (prompt_file is None):
        raise click.UsageError("give exactly one of --prompt TEXT or --prompt-file FILE")
    if prompt_file is not None:
        try:
            prompt = prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.UsageError(f"cannot read prompt file {prompt_file}: {exc}") from exc
    assert prompt is not None
    if raw and system:
        raise click.UsageError("--system needs the chat template; it cannot go with --raw")
    generation = generation_options(options).replace(stop=stop, constraint=_constraint(json_schema, grammar))
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    with load_pair(**options) as pair:
        gen = pair.stream(prompt if raw else messages, generation)
        for event in gen:
            if not as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
    result = gen.result
    if as_json:
        stats = result.stats
        print(
            json.dumps(
                {
                    "text": result.text,
                    "token_ids": result.token_ids,
                    "n_tokens": len(result.token_ids),
                    "finish_reason": result.finish_reason,
                    "prompt_tokens": stats.prompt_tokens,
                    "prompt_seconds": round(stats.prompt_seconds, 6),
                    "decode_seconds": round(stats.decode_seconds, 6),
                    "tokens_per_second": round(stats.tokens_per_second, 3),
                    "strategy": result.strategy,
                    "stats": stats.to_dict(),
                },
                ensure_ascii=False,
            )
        )
    elif not result.text.endswith("\n"):
        sys.stdout.write("\n")


def _constraint(json_schema: Path | None, grammar: Path | None) -> Constraint | None:
    """The constraint the files give (one at most); checked before any model is loaded."""
    if json_schema is not None and grammar is not None:
        raise click.UsageError("give --json-schema or --grammar, not both")
    path = json_schema or grammar
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"cannot read {path}: {exc}") from exc
    try:
        return Constraint.json_schema(text) if json_schema else Constraint.grammar(text)
    except ConstraintError as exc:
        raise ConstraintError(f"{path}: {exc}") from None
