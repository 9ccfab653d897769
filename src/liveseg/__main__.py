"""``python -m liveseg``: the CLI."""

from liveseg.cli import main

main()
