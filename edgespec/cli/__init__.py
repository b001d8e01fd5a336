"""The ``edgespec`` command. Each subcommand lives in its own module and registers here."""

from __future__ import annotations

import logging
import sys

import click

from edgespec import __version__
from edgespec.errors import EdgespecError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgespec")
@click.option("-v", "--verbose", count=True, help="Log more (-vv adds llama.cpp's own log).")
def cli(verbose: int) -> None:
    """Speculative decoding for local GGUF models, planned for this device."""
    level = {0: logging.ERROR, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and a non-zero exit, never a traceback."""
    _register()
    try:
        cli.main(args=argv, prog_name="edgespec", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"edgespec: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except EdgespecError as exc:
        click.echo(f"edgespec: error: {exc}", err=True)
        sys.exit(1)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing more to say
        sys.exit(1)
    sys.exit(0)


# Each command lives in its own module, imported only when registered, so that one command's
# heavy imports (the server's, the chat's) never slow another down.
COMMANDS = {
    "generate": "edgespec.cli.generate",
    "chat": "edgespec.cli.chat",
    "serve": "edgespec.cli.serve",
    "pull": "edgespec.cli.pull",
    "models": "edgespec.cli.models",
    "doctor": "edgespec.cli.doctor",
    "bench": "edgespec.cli.bench",
}


def _register() -> None:
    import importlib

    for name, module in COMMANDS.items():
        cli.add_command(getattr(importlib.import_module(module), name), name)
