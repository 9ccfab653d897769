"""``liveseg gui``: the live window.

Imported by :mod:`liveseg.cli` at start-up, so it must not import Qt: the window module
is imported inside the command, after checking that a Qt binding is installed.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["commands", "gui", "missing_qt"]

INSTALL_HINT = (
    "The live window needs the GUI extra (Qt, pymmcore-widgets). liveseg is not on a"
    " package index: install the extra from your liveseg checkout with\n"
    "    pip install -e '.[gui]'\n"
    "(or run `make demo`, which installs everything into .venv)."
)


def missing_qt() -> str | None:
    """Why the GUI cannot start (a missing package), or None when it can."""
    for module in ("qtpy", "pymmcore_widgets", "superqt"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    if not any(
        importlib.util.find_spec(b) is not None for b in ("PySide6", "PyQt6", "PyQt5", "PySide2")
    ):
        return "no Qt binding (PySide6 or PyQt6) is installed"
    try:
        import qtpy  # noqa: F401  # raises when no binding can be imported
    except Exception as exc:
        return f"Qt could not be loaded: {exc}"
    return None


@click.command("gui")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key.")
@click.option("--home", type=click.Path(file_okay=False), help="liveseg data directory.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="First run's directory.")
@click.option("--no-mda-widget", is_flag=True, help="Run the config's sequence (no MDA widget).")
def gui(
    config: str | None,
    overrides: tuple[str, ...],
    home: Path | None,
    output: str | None,
    no_mda_widget: bool,
) -> None:
    """Open the live window: image + masks, counts, objects, flagging (F).

    CONFIG is a liveseg YAML config (default: the demo devices with the default chain).
    """
    problem = missing_qt()
    if problem is not None:
        click.echo(f"error: {problem}.\n{INSTALL_HINT}", err=True)
        raise SystemExit(2)

    from liveseg.config import load_config, parse_config

    cfg = (
        load_config(config, list(overrides))
        if config
        else parse_config(_overridden({}, overrides))
    )
    from liveseg.gui.app import run_app

    raise SystemExit(run_app(cfg, home=home, output=output, mda_widget=not no_mda_widget))


def _overridden(data: dict[str, object], overrides: tuple[str, ...]) -> dict[str, object]:
    from liveseg.config import apply_overrides

    return apply_overrides(data, list(overrides)) if overrides else data


commands: list[click.Command] = [gui]
