"""Overlay rendering, pixel by pixel (no hardware)."""

from __future__ import annotations

import numpy as np
import pytest

from liveseg.gui.canvas import ImageCanvas, label_colors, outline_mask, overlay_rgba


def _labels() -> np.ndarray:
    lab = np.zeros((64, 80), dtype=np.uint32)
    lab[10:20, 10:25] = 1
    lab[30:50, 40:60] = 7
    lab[30:50, 60:70] = 3  # touches object 7
    return lab


def test_overlay_filled_covers_labels_only() -> None:
    lab = _labels()
    rgba = overlay_rgba(lab, "filled")
    assert np.array_equal(rgba[..., 3] > 0, lab > 0)
    # per-object colours: each object one colour, different objects different colours
    colours = {int(i): rgba[lab == i][:, :3] for i in (1, 3, 7)}
    for c in colours.values():
        assert (c == c[0]).all()
    assert len({tuple(c[0]) for c in colours.values()}) == 3


def test_overlay_outline_is_the_object_boundary() -> None:
    lab = _labels()
    rgba = overlay_rgba(lab, "outline")
    drawn = rgba[..., 3] > 0
    assert not drawn[lab == 0].any()
    assert np.array_equal(drawn, outline_mask(lab))
    assert drawn[10, 15] and not drawn[15, 17]  # edge drawn, interior not
    assert drawn[40, 59] and drawn[40, 60]  # the shared border of touching objects


def test_label_colors_are_stable_and_saturated() -> None:
    a = label_colors(np.array([1, 2, 3, 1000]))
    assert np.array_equal(a, label_colors(np.array([1, 2, 3, 1000])))
    assert (a.max(axis=1).astype(int) - a.min(axis=1) > 100).all()


@pytest.mark.parametrize("mode", ["filled", "outline"])
def test_painted_overlay_pixels_match_labels(qtbot, mode) -> None:
    canvas = ImageCanvas()
    qtbot.addWidget(canvas)
    rng = np.random.default_rng(0)
    image = rng.integers(100, 200, size=(64, 80)).astype(np.uint16)
    lab = _labels()
    canvas.set_image(5, image)
    canvas.set_mode(mode)
    canvas.set_overlay(5, lab, {"label": np.array([1, 3, 7])})
    with_overlay = canvas.render_native(overlay=True).astype(int)
    without = canvas.render_native(overlay=False).astype(int)
    changed = np.abs(with_overlay - without).sum(axis=-1) > 0
    expected = lab > 0 if mode == "filled" else outline_mask(lab)
    assert np.array_equal(changed, expected)


def test_lag_marker_and_hover(qtbot) -> None:
    canvas = ImageCanvas()
    qtbot.addWidget(canvas)
    canvas.set_image(9, np.zeros((64, 80), np.uint16), position=2)
    assert canvas.banner_text() == "frame 9 · position 2 · no masks for it yet"
    cols = {
        "label": np.array([1, 3, 7]),
        "area_px": np.array([150.0, 200.0, 400.0]),
        "mean_intensity": np.array([10.0, 20.0, 30.0]),
    }
    canvas.set_overlay(6, _labels(), cols, position=2)
    assert canvas.lag == 3
    assert canvas.banner_text() == "frame 9 · position 2 · ⚠ masks from frame 6, 3 frames older"
    assert canvas.describe_pixel(40, 45) == "object 7  area_px=400  mean_intensity=30"
    assert canvas.describe_pixel(0, 0) == ""
    canvas.set_image(6, np.zeros((64, 80), np.uint16), position=2)
    assert canvas.lag == 0 and canvas.banner_text() == "frame 6 · position 2 · masks of this frame"
    canvas.clear_overlay()
    assert canvas.labels is None and canvas.describe_pixel(40, 45) == ""
    assert "no masks" in canvas.banner_text()


def test_manual_contrast(qtbot) -> None:
    canvas = ImageCanvas()
    qtbot.addWidget(canvas)
    image = np.array([[0, 50], [100, 200]], dtype=np.uint16)
    canvas.set_image(0, image)
    canvas.set_limits(0, 100)
    assert not canvas.auto_contrast
    out = canvas.render_native()[..., 0]
    assert out[0, 0] == 0 and out[1, 0] == 255 and out[1, 1] == 255
    assert 120 <= out[0, 1] <= 135
