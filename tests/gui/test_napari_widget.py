"""The napari dock widget, headless: napari's ViewerModel (no OpenGL canvas needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import liveseg.gui
from liveseg.gui.napari_widget import IMAGE_LAYER, LABELS_LAYER, LivesegWidget
from liveseg.types import Frame, FrameResult

napari = pytest.importorskip("napari")


def test_manifest_is_valid() -> None:
    from npe2 import PluginManifest

    path = Path(liveseg.gui.__file__).parent / "napari.yaml"
    manifest = PluginManifest.from_file(path)
    (widget,) = manifest.contributions.widgets
    command = next(c for c in manifest.contributions.commands if c.id == widget.command)
    assert command.python_name == "liveseg.gui.napari_widget:LivesegWidget"


@pytest.mark.hardware
def test_dock_buttons_run_flag_and_show_each_frame_with_its_own_image(
    qtbot, make_gui_session, liveseg_home, tmp_path
) -> None:
    from gui_helpers import click, gui_config
    from napari.components import ViewerModel
    from qtpy.QtCore import Qt

    from liveseg.control import RunState
    from liveseg.retrain.queue import RetrainQueue
    from liveseg.store import RunReader

    # napari's headless viewer model: napari.Viewer(show=False) needs OpenGL to add
    # layers, which Qt's offscreen platform does not provide.
    viewer = ViewerModel()
    session = make_gui_session(gui_config(output=str(tmp_path)))  # Start: a run under it
    widget = LivesegWidget(viewer, session=session)
    qtbot.addWidget(widget)
    widget.show()
    shown: list[tuple[int, int, int, int]] = []

    def capture() -> None:  # right after the widget's own refresh
        if LABELS_LAYER in viewer.layers and IMAGE_LAYER in viewer.layers:
            lab, img = viewer.layers[LABELS_LAYER], viewer.layers[IMAGE_LAYER]
            key = (
                lab.metadata["liveseg_frame"],
                lab.metadata["liveseg_position"],
                img.metadata["liveseg_frame"],
                img.metadata["liveseg_position"],
            )
            if not shown or shown[-1][:4] != key:
                shown.append((*key, lab.data.copy(), img.data.copy()))

    widget._timer.timeout.connect(capture)
    try:
        assert not widget.flag_btn.isEnabled() and not widget.stop_btn.isEnabled()
        click(qtbot, widget.start_btn)
        assert widget.control.state is RunState.RUNNING and not widget.start_btn.isEnabled()
        qtbot.waitUntil(lambda: widget.last_summary is not None, timeout=120_000)
        assert widget.wait(30)
        capture()
        summary = widget.last_summary
        assert "error" not in summary and summary["frames_segmented"] == 4
        run = RunReader(summary["run_dir"])
        assert run.path.parent == tmp_path
        rows = {r["index"]: r for r in run.frames()}
        assert sorted(rows) == [0, 1, 2, 3] and {r["status"] for r in rows.values()} == {"ok"}
        # every state of the layers: labels and image are one frame, its stored pixels
        assert shown and shown[-1][0] == 3
        for lab_i, lab_p, img_i, img_p, labels, image in shown:
            assert (lab_i, lab_p) == (img_i, img_p) == (lab_i, rows[lab_i]["position"])
            assert np.array_equal(labels, run.labels(lab_i))
            assert np.array_equal(image, run.image(lab_i))
        assert widget.plot.n_points() == 4
        assert "finished" in widget.status.text()

        # -- Flag button, then F: one queue item ---------------------------------------
        click(qtbot, widget.flag_btn)
        widget.activateWindow()
        widget.plot.setFocus()  # F works anywhere in the dock
        qtbot.keyClick(widget.plot, Qt.Key.Key_F)
        assert widget.last_flag is not None and not widget.last_flag.added
        assert "already flagged" in widget.status.text()
        items = RetrainQueue(liveseg_home).items()
        assert [(i.run, i.frame_index) for i in items] == [(str(run.path), 3)]
        assert [e["frame"] for e in run.events("flag")] == [3]
    finally:
        widget.shutdown()


def test_new_result_updates_the_same_layers(qtbot, make_gui_session) -> None:
    from napari.components import ViewerModel

    viewer = ViewerModel()
    session = make_gui_session()
    widget = LivesegWidget(viewer, session=session)
    qtbot.addWidget(widget)
    try:
        image = np.full((32, 32), 7, np.uint16)
        labels = np.zeros((32, 32), np.uint32)
        labels[2:6, 2:6] = 1
        frame = Frame(index=5, image=image, position=1)
        session.events.frame_segmented.emit(frame, FrameResult(labels=labels), {"label": [1]})
        widget.refresh()
        n_layers = len(viewer.layers)
        layer = viewer.layers[LABELS_LAYER]
        new = np.zeros((32, 32), np.uint32)
        new[10:20, 10:20] = 5
        frame = Frame(index=99, image=image + 1, position=0)
        session.events.frame_segmented.emit(frame, FrameResult(labels=new), {"label": [5]})
        widget.refresh()
        assert len(viewer.layers) == n_layers and viewer.layers[LABELS_LAYER] is layer
        assert np.array_equal(layer.data, new)
        assert layer.metadata == {"liveseg_frame": 99, "liveseg_position": 0}
        assert np.array_equal(viewer.layers[IMAGE_LAYER].data, image + 1)
        assert widget.shown == (99, 0)
        assert widget.plot.series()[0][-1][1:] == (1, 99)
    finally:
        widget.shutdown()
