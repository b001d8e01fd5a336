"""``edgespec models``: the curated pairs, and which are present locally with their sizes."""

from __future__ import annotations

import json

import click

from edgespec.hub import LocalModel, list_models


def _size(n: int | None) -> str:
    return f"{n / 1e9:.2f} GB" if n is not None else "?"


def _file(m: LocalModel) -> str:
    where = f"present, {_size(m.size)}" if m.path is not None else f"absent, {_size(m.ref.size)}"
    return f"{m.ref}  ({where})"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of pairs.")
def models(as_json: bool) -> None:
    """List the curated pairs (the default first), what they are good for, and what is downloaded."""
    statuses = list_models()
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
        return
    for s in statuses:
        mark = "*" if s.is_default else " "
        state = f"present, {_size(s.size)}" if s.present else "not downloaded"
        click.echo(f"{mark} {s.pair.name}  [{state}]")
        click.echo(f"    {s.pair.description}")
        click.echo(f"    license: {s.pair.license}")
        click.echo(f"    target: {_file(s.target)}")
        mtp = "(none: the target drafts with its own MTP layers)"
        click.echo(f"    draft:  {_file(s.draft) if s.draft is not None else mtp}")
    click.echo("\n* default pair. Fetch one with `edgespec pull NAME`; use it with --pair NAME.")
