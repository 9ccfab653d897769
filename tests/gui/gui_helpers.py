"""Helpers for the live-window tests (a module of its own: ``conftest`` is ambiguous
when the whole tree is collected)."""

from __future__ import annotations

from typing import Any

import numpy as np

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


def qimage_rgb(image: Any) -> np.ndarray:
    """An (H, W, 3) uint8 copy of a QImage (e.g. ``widget.grab().toImage()``)."""
    from qtpy.QtGui import QImage

    img = image.convertToFormat(QImage.Format.Format_RGB32)
    h, w, bpl = img.height(), img.width(), img.bytesPerLine()
    arr = np.frombuffer(img.constBits(), dtype=np.uint8, count=h * bpl)
    return arr.reshape(h, bpl // 4, 4)[:, :w, 2::-1].copy()  # BGRA (little endian) → RGB


def click(qtbot: Any, button: Any) -> None:
    """Click ``button`` with the mouse, as a person does (it must be enabled)."""
    from qtpy.QtCore import Qt

    assert button.isEnabled(), f"{button.text()!r} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def wait_finished(qtbot: Any, window: Any, timeout: int = 120_000) -> dict[str, Any]:
    """Wait until the window has reported the end of its run; its summary."""
    qtbot.waitUntil(lambda: window.last_summary is not None, timeout=timeout)
    assert window.wait(30)
    return dict(window.last_summary)
