"""The ``liveseg`` command line.

Feature areas add their own command modules (listed in :data:`COMMAND_MODULES`); each
exposes ``commands: list[click.Command]``. Heavy imports happen inside commands only.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from liveseg.errors import LivesegError

__all__ = ["COMMAND_MODULES", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "liveseg.commands.core",
    "liveseg.commands.try_models",
    "liveseg.retrain.commands",
    "liveseg.gui.commands",
)


class _Group(click.Group):
    """Turns liveseg's own errors into one clear line and exit status 2, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LivesegError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="liveseg")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Live segmentation for Micro-Manager acquisitions."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("liveseg")
    logger.addHandler(handler)
    logger.setLevel(level)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _name:
            raise
        continue
    for _cmd in getattr(_module, "commands", []):
        main.add_command(_cmd)


if __name__ == "__main__":
    main()
