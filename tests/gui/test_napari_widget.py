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
def test_layers_created_and_updated(qtbot, make_gui_session, tmp_path) -> None:
    from napari.components import ViewerModel

    viewer = ViewerModel()
    session = make_gui_session()
    widget = LivesegWidget(viewer, session=session)
    qtbot.addWidget(widget)
    try:
        widget.start(output=tmp_path / "run")
        qtbot.waitUntil(lambda: widget.last_summary is not None, timeout=120_000)
        assert widget.wait(30)
        assert widget.last_summary["frames_segmented"] == 4
        # layer created from the live results
        assert LABELS_LAYER in viewer.layers and IMAGE_LAYER in viewer.layers
        labels_layer = viewer.layers[LABELS_LAYER]
        assert labels_layer.metadata["liveseg_frame"] == 3
        assert labels_layer.data.shape == (256, 256) and labels_layer.data.max() > 0
        assert widget.plot.n_points() == 4
        # a new result updates the same layer (no new layers)
        n_layers = len(viewer.layers)
        new = np.zeros((256, 256), np.uint32)
        new[10:20, 10:20] = 5
        frame = Frame(index=99, image=np.zeros((256, 256), np.uint16), position=1)
        session.events.frame_segmented.emit(frame, FrameResult(labels=new), {"label": [5]})
        widget.refresh()
        assert len(viewer.layers) == n_layers
        assert viewer.layers[LABELS_LAYER] is labels_layer
        assert np.array_equal(labels_layer.data, new)
        assert labels_layer.metadata["liveseg_frame"] == 99
        assert widget.plot.series()[1][-1][1:] == (1, 99)
    finally:
        widget.shutdown()
