"""Fixtures for the live-window tests: offscreen Qt, demo hardware, small camera."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("qtpy")
pytest.importorskip("pymmcore_widgets")

from gui_helpers import gui_config

from liveseg.config import LivesegConfig


@pytest.fixture
def make_gui_session(liveseg_home) -> Iterator[Callable[..., Any]]:
    """Sessions on the demo hardware, each closed (core released) after the test."""
    from liveseg.session import Session

    sessions: list[Session] = []

    def make(config: LivesegConfig | None = None) -> Session:
        s = Session(config or gui_config(), home=liveseg_home)
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()


@pytest.fixture
def live_window(qtbot, make_gui_session, tmp_path) -> Iterator[Any]:
    """A LiveWindow without the MDA widget (it runs the config's sequence)."""
    from liveseg.gui.window import LiveWindow

    session = make_gui_session()
    window = LiveWindow(session, output=tmp_path / "run", mda_widget=False)
    qtbot.addWidget(window)
    window.show()
    yield window
    window.shutdown()
