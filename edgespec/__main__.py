"""``python -m edgespec`` runs the CLI."""

from edgespec.cli import main

if __name__ == "__main__":  # not when a spawned worker process (doctor's exact check) imports this
    main()
