"""``liveseg gui`` without Qt, and Qt never imported by ``liveseg`` itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCK_QT = (
    "import sys\n"
    "for m in ('qtpy', 'PySide6', 'PyQt6', 'PyQt5', 'PySide2', 'pymmcore_widgets', 'superqt'):\n"
    "    sys.modules[m] = None\n"
)


def test_gui_without_qt_prints_install_hint() -> None:
    code = BLOCK_QT + "from liveseg.cli import main\nmain(['gui'])\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install -e '.[gui]'" in proc.stderr  # what works: no index carries liveseg
    assert "liveseg[gui]" not in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_and_gui_commands_do_not_import_qt() -> None:
    code = (
        "import sys, liveseg.cli, liveseg.gui, liveseg.gui.commands, liveseg.gui.feed\n"
        "bad = [m for m in ('qtpy', 'PySide6', 'PyQt6', 'napari') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert 'gui' in liveseg.cli.main.commands\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_gui_reaches_the_session_only_through_the_control_api() -> None:
    import re
    from pathlib import Path

    import liveseg.gui

    forbidden = re.compile(
        r"core\.mda|\.processor\b|events\.jsonl|session\.(queue|events|pipeline|host|_\w+)"
    )
    hits = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(Path(liveseg.gui.__file__).parent.glob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if forbidden.search(line)
    ]
    assert hits == []


def test_gui_without_a_display_says_so_instead_of_aborting() -> None:
    import os

    if not sys.platform.startswith("linux"):
        pytest.skip("only Linux can lack a display server")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    code = "from liveseg.cli import main\nmain(['gui', '--no-mda-widget'])\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 2, proc.stderr  # not 134 (Qt's abort)
    assert proc.stderr.startswith("error: no display")
    assert "Traceback" not in proc.stderr
