"""``liveseg gui``: the live window.

Imported by :mod:`liveseg.cli` at start-up, so it must not import Qt: the window module
is imported inside the command, after checking that a Qt binding is installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["commands", "gui", "missing_display", "missing_qt"]

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


_PROBE = "from qtpy.QtWidgets import QApplication\nQApplication([])\n"


def missing_display() -> str | None:
    """Why Qt cannot open a window here (no display, broken platform plugin), or None.

    Qt aborts the whole process (status 134) when its platform plugin cannot start, so
    on Linux the check runs Qt once in a child process first. Windows and macOS always
    have their platform, and an explicit ``QT_QPA_PLATFORM`` is the user's choice.
    """
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Qt could not be started to check the display: {exc}"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    hint = next((ln for ln in lines if "qt.qpa" in ln), lines[0] if lines else "")
    return f"Qt cannot open a window on this display ({hint})"


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
    problem = missing_display()
    if problem is not None:
        click.echo(
            f"error: {problem}. Run `liveseg gui` in a desktop session (or over X11/Wayland"
            " forwarding).",
            err=True,
        )
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
