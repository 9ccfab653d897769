"""Fixtures for the live-window tests: offscreen Qt, demo hardware, small camera."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("qtpy")
pytest.importorskip("pymmcore_widgets")

from liveseg.config import LivesegConfig, parse_config
from liveseg.defaults import CLASSICAL_STEPS

#: A 256 x 256 camera keeps the classical chain fast on a shared 2-core machine.
SMALL_CAMERA = [["Camera", "OnCameraCCDXSize", 256], ["Camera", "OnCameraCCDYSize", 256]]


def gui_config(**overrides: Any) -> LivesegConfig:
    """Demo hardware + simulated sample, small camera, classical chain, 2 positions x 2 t."""
    data: dict[str, Any] = {
        "name": "guitest",
        "hardware": {
            "mm_config": "demo",
            "exposure_ms": 5,
            "properties": SMALL_CAMERA,
            "simulate": {"n_objects": 300, "extent_um": 900, "radius_um": [5, 8], "seed": 3},
        },
        "sequence": {
            "stage_positions": [{"x": 0, "y": 0, "z": 0}, {"x": 150, "y": -100, "z": 0}],
            "time_plan": {"interval": 0, "loops": 2},
            "axis_order": "tpcz",
        },
        "pipeline": {"steps": [s.model_dump() for s in CLASSICAL_STEPS]},
        # The GUI tests use the builtin classical chain only; model plugins under
        # development elsewhere in the tree must not be able to break them.
        "plugins": {"deny": ["torch", "cellpose"]},
    }
    data.update(overrides)
    return parse_config(data)


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
