"""Pixel → stage: hand-computed values for scale, rotation, flips and transpose."""

from __future__ import annotations

import numpy as np
import pytest

from liveseg.coords import CameraGeometry, pixel_to_stage, stage_to_pixel


def _xy(row, col, **kw):
    g = CameraGeometry(**{"width": 100, "height": 80, "stage_xy": (10.0, 20.0), **kw})
    x, y = pixel_to_stage(row, col, g)
    return float(x), float(y)


def test_centre_pixel_is_the_stage_position():
    assert _xy(40, 50) == (10.0, 20.0)
    assert _xy(40, 50, pixel_size_um=0.5, mirror_x=True, mirror_y=True) == (9.5, 19.5)


def test_scale_without_affine():
    # (col - W/2, row - H/2) = (-50, -40) px at 0.5 µm/px
    assert _xy(0, 0, pixel_size_um=0.5) == (-15.0, 0.0)
    # an identity affine means "not calibrated": pixel size × I
    assert _xy(0, 0, pixel_size_um=0.5, affine=(1, 0, 0, 0, 1, 0)) == (-15.0, 0.0)


def test_rotation_by_affine():
    # 90°: x = -dr, y = dc (Micro-Manager affine a0 a1 a2 / a3 a4 a5)
    # row 50, col 60 -> dc = 10, dr = 10
    assert _xy(50, 60, affine=(0, -1, 0, 1, 0, 0)) == (0.0, 30.0)
    # 30° rotation with 2 µm/px: x = 2(cos·dc − sin·dr), y = 2(sin·dc + cos·dr)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    x, y = _xy(50, 60, affine=(2 * c, -2 * s, 0, 2 * s, 2 * c, 0))
    assert x == pytest.approx(10 + 2 * (c * 10 - s * 10))
    assert y == pytest.approx(20 + 2 * (s * 10 + c * 10))


def test_mirrors():
    # mirror x: col 10 came from sensor col 89 -> dc = 39
    assert _xy(40, 10, mirror_x=True) == (49.0, 20.0)
    # mirror y: row 5 came from sensor row 74 -> dr = 34
    assert _xy(5, 50, mirror_y=True) == (10.0, 54.0)


def test_transpose():
    # transposed image is 100 wide, 80 high; the sensor is 80 wide, 100 high.
    # pixel (row 10, col 30) is sensor (row 30, col 10): dc = 10 - 40, dr = 30 - 50
    assert _xy(10, 30, transpose_xy=True) == (-20.0, 0.0)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("mx", [False, True])
@pytest.mark.parametrize("my", [False, True])
def test_round_trip(transpose, mx, my):
    g = CameraGeometry(
        width=64,
        height=48,
        stage_xy=(-3.0, 7.5),
        affine=(0.3, -0.1, 0, 0.12, 0.28, 0),
        transpose_xy=transpose,
        mirror_x=mx,
        mirror_y=my,
    )
    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(0, 47, 20), rng.uniform(0, 63, 20)
    x, y = pixel_to_stage(rows, cols, g)
    r2, c2 = stage_to_pixel(x, y, g)
    np.testing.assert_allclose(r2, rows, atol=1e-9)
    np.testing.assert_allclose(c2, cols, atol=1e-9)
