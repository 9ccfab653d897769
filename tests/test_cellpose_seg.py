"""``_seg.npy`` for the Cellpose GUI: its outlines, its keys, its own loaders (headless)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile

from liveseg.retrain.annotate import read_seg_npy, seg_outlines, write_seg_npy
from liveseg.testing import disk_image

pytest.importorskip("cellpose", reason="liveseg-cellpose (and cellpose) not installed")
pytestmark = pytest.mark.slow  # importing cellpose imports torch


def _tricky_masks() -> np.ndarray:
    """Objects on the image edge and corner, one with a hole, one thin, two touching."""
    _, masks = disk_image((96, 96), [(0, 40), (48, 48), (95, 95), (20, 80)], radius=9)
    masks = masks.astype(np.uint16)
    masks[46:51, 46:51] = 0  # a hole in object 2
    masks[70:72, 5:40] = 5  # a 2-pixel-wide bar
    masks[72:80, 5:40] = 6  # touching the bar
    masks[60, 60] = 7  # a single pixel
    return masks


def test_outlines_are_cellposes_with_or_without_it(monkeypatch):
    from cellpose.utils import masks_to_outlines

    masks = _tricky_masks()
    expected = np.where(masks_to_outlines(masks), masks, 0)
    np.testing.assert_array_equal(seg_outlines(masks), expected)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(  # a machine without cellpose: the numpy path must agree
        importlib.util, "find_spec", lambda n, *a: None if n == "cellpose" else real(n, *a)
    )
    np.testing.assert_array_equal(seg_outlines(masks), expected)


def test_the_cellpose_gui_opens_the_file_headless(tmp_path, qtbot):
    pytest.importorskip("pyqtgraph", reason="the Cellpose GUI needs pyqtgraph")
    from cellpose.gui import gui
    from cellpose.gui import io as gui_io
    from cellpose.utils import masks_to_outlines

    image = disk_image((96, 96), [(0, 40), (48, 48), (95, 95), (20, 80)], radius=9)[0]
    masks = _tricky_masks()
    seg = tmp_path / "cells_seg.npy"
    write_seg_npy(seg, image, masks, "cells.tif")

    dat = read_seg_npy(seg)  # liveseg's safe reader still reads it
    np.testing.assert_array_equal(dat["masks"], masks)
    np.testing.assert_array_equal(dat["outlines"], masks * masks_to_outlines(masks))
    assert dat["colors"].shape == (7, 3) and dat["ismanual"].shape == (7,)
    assert dat["flows"][0].shape == (1, 96, 96, 3) and dat["flows"][4].shape == (3, 96, 96)

    win = gui.MainW(logger=logging.getLogger("cellpose.gui"))
    qtbot.addWidget(win)
    tifffile.imwrite(tmp_path / "cells.tif", image)  # beside it, as `annotate export` writes
    for source in ("the image file", "the file's own img"):
        gui_io._load_seg(win, filename=str(seg))  # what File ▸ Load _seg.npy runs
        assert win.loaded, source
        assert int(win.ncells.get()) == 7
        np.testing.assert_array_equal(win.cellpix.squeeze(), masks)
        np.testing.assert_array_equal(win.outpix.squeeze() > 0, masks_to_outlines(masks))
        assert win.recompute_masks  # the flows were taken: the GUI can recompute masks
        assert win.stack.shape[1:3] == (96, 96)
        (tmp_path / "cells.tif").unlink(missing_ok=True)
