"""``edgespec serve``: an OpenAI-compatible HTTP server over one loaded pair, for desktop apps."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import click

from edgespec.cli.options import generation_options, load_pair, model_options, sampling_options


@click.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free one)."
)
@click.option(
    "--api-key",
    envvar="EDGESPEC_API_KEY",
    help="Require `Authorization: Bearer KEY` on /v1 requests [env: EDGESPEC_API_KEY].",
)
@click.option(
    "--cors", multiple=True, metavar="ORIGIN", help="Let browsers call from ORIGIN (repeatable; *: any)."
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Requests that may wait while one runs; more are answered 503.",
)
@click.option("--alias", metavar="NAME", help="The model id to serve [default: the pair or target name].")
@sampling_options
def serve(
    host: str,
    port: int,
    api_key: str | None,
    cors: tuple[str, ...],
    queue_size: int,
    alias: str | None,
    **options: Any,
) -> None:
    """Serve the pair over the OpenAI API (chat and text completions, streamed or whole).

    The sampling options set the defaults for requests that leave a field out.
    """
    try:
        from edgespec import server
    except ImportError as exc:
        raise click.ClickException(
            f"the server needs its extra dependencies ({exc.name} is missing): pip install 'edgespec[server]'"
        ) from exc
    defaults = generation_options(options)
    with _bind(server.bind, host, port) as sock, load_pair(**options) as pair:
        model_id = alias or options["pair"] or pair.target.path.stem
        pair.check_strategy(defaults.strategy)
        if defaults.strategy == "auto":
            pair.costs()  # measured now (or read from the cache) rather than on the first request
        pair.progress = None  # bars at startup only: later, the terminal is the server's log
        config = server.ServerConfig(model_id, api_key, cors, queue_size, defaults)
        app = server.create_app(pair, config)
        url = server.url_of(sock)
        click.echo(f"edgespec: serving {model_id!r} at {url}/v1 (OpenAI-compatible); Ctrl-C stops")
        verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
        server.run(app, sock, log_level="info" if verbose else "warning")


def _bind(bind: Callable[[str, int], socket.socket], host: str, port: int) -> socket.socket:
    try:
        return bind(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
