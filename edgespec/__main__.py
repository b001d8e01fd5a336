"""``python -m edgespec`` runs the CLI."""

from edgespec.cli import main

main()
