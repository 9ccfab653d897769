"""The class-map overlay: a semantic chain's classes in their colours, with a legend."""

from __future__ import annotations

import numpy as np
import pytest
from gui_helpers import click, gui_config, wait_finished

from liveseg.builtins.classes import ClassTable
from liveseg.gui.canvas import ImageCanvas, class_overlay_rgba

NAMES = ["background", "nucleus"]
KMEANS = {
    "steps": [
        {"backend": "normalize"},
        {"backend": "kmeans", "params": {"class_names": NAMES}},
    ]
}


def test_class_overlay_uses_the_class_table_colours():
    classes = np.array([[0, 1], [2, 1]], np.uint8)
    table = ClassTable.default(["matrix", "pore", "crack"])
    rgba = class_overlay_rgba(classes, table.colors)
    assert rgba[0, 0, 3] == 0  # class 0 transparent
    assert tuple(rgba[0, 1]) == table.colors[1] and tuple(rgba[1, 0]) == table.colors[2]


def test_canvas_paints_classes_and_names_them_in_the_legend(qtbot):
    canvas = ImageCanvas()
    qtbot.addWidget(canvas)
    image = np.full((32, 32), 100, np.uint16)
    classes = np.zeros((32, 32), np.uint8)
    classes[8:16, 8:24] = 1  # 1/8 of the pixels
    canvas.set_image(0, image)
    canvas.set_opacity(1.0)
    canvas.set_overlay(0, np.zeros((32, 32), np.uint32), classes=classes, class_names=NAMES)
    rgb = canvas.render_native()
    colour = ClassTable.default(NAMES).colors[1][:3]
    assert tuple(rgb[10, 10]) == colour
    assert tuple(rgb[0, 0]) != colour  # background: the image shows through
    assert canvas.legend() == [("nucleus", ClassTable.default(NAMES).colors[1], 0.125)]
    canvas.clear_overlay()
    assert canvas.legend() == []


@pytest.mark.hardware
def test_live_window_shows_the_class_overlay_of_a_semantic_chain(
    qtbot, make_gui_session, tmp_path
):
    from liveseg.gui.window import LiveWindow

    session = make_gui_session(gui_config(pipeline=KMEANS))
    window = LiveWindow(session, output=tmp_path / "run", mda_widget=False)
    qtbot.addWidget(window)
    window.show()
    try:
        click(qtbot, window.start_btn)
        summary = wait_finished(qtbot, window)
        assert summary["frames_segmented"] == 4
        qtbot.waitUntil(lambda: window.canvas.legend() != [], timeout=10_000)
        canvas = window.canvas
        legend = canvas.legend()
        assert [name for name, _, _ in legend] == ["nucleus"]
        assert legend[0][2] == pytest.approx(float(np.mean(canvas.classes == 1)))
        canvas.set_opacity(1.0)
        rgb = canvas.render_native()
        r, c = np.argwhere(canvas.classes == 1)[0]
        assert tuple(rgb[r, c]) == ClassTable.default(NAMES).colors[1][:3]
    finally:
        window.shutdown()


@pytest.mark.hardware
def test_napari_dock_adds_a_classes_layer_with_names_and_colours(
    qtbot, make_gui_session, tmp_path
):
    from napari.components import ViewerModel

    from liveseg.gui.napari_widget import CLASSES_LAYER, LivesegWidget

    viewer = ViewerModel()
    session = make_gui_session(gui_config(pipeline=KMEANS, output=str(tmp_path)))
    widget = LivesegWidget(viewer, session=session)
    qtbot.addWidget(widget)
    widget.show()
    try:
        click(qtbot, widget.start_btn)
        qtbot.waitUntil(lambda: widget.last_summary is not None, timeout=120_000)
        assert widget.wait(30)
        qtbot.waitUntil(lambda: CLASSES_LAYER in viewer.layers, timeout=10_000)
        layer = viewer.layers[CLASSES_LAYER]
        assert type(layer).__name__ == "Labels"
        assert list(layer.features["class"]) == NAMES
        expected = np.array(ClassTable.default(NAMES).colors[1]) / 255
        assert np.allclose(layer.colormap.map([1])[0], expected)
        assert "classes: nucleus" in widget.status.text()
    finally:
        widget.shutdown()
