"""Pixel → stage: hand-computed values for scale, rotation, flips and transpose."""

from __future__ import annotations

import numpy as np
import pytest

from liveseg.coords import CameraGeometry, pixel_to_stage, stage_to_pixel
from liveseg.testing import run_liveseg


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


# -- physical units on the live path (demo hardware) ----------------------------------
def _scales(zarr_root):
    """(path, axes, scale) of every OME-NGFF multiscales dataset below ``zarr_root``."""
    import json

    out = []
    for meta in zarr_root.rglob("zarr.json"):
        attrs = json.loads(meta.read_text()).get("attributes", {})
        for ms in attrs.get("ome", {}).get("multiscales", []):
            axes = [a["name"] for a in ms["axes"]]
            for ds in ms["datasets"]:
                scale = next(t["scale"] for t in ds["coordinateTransformations"])
                out.append((meta.parent, axes, scale, ms["axes"]))
    return out


@pytest.mark.slow
@pytest.mark.hardware
def test_configured_pixel_size_reaches_objects_ome_zarr_and_run_json(tmp_path):
    """``liveseg run configs/demo.yaml --set hardware.pixel_size_um=0.65`` (the shipped
    default chain): area_um2 is 0.65² area_px, every image and label scale is 0.65 µm."""
    import json
    from pathlib import Path

    import pyarrow.parquet as pq

    repo = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "run"
    args = ["run", "configs/demo.yaml", "--set", "hardware.pixel_size_um=0.65"]
    done = run_liveseg(*args, "-o", run_dir, "--home", tmp_path / "home", cwd=repo, timeout=400)
    assert done.returncode == 0, done.stderr
    objects = pq.read_table(run_dir / "objects.parquet").to_pydict()
    ratio = np.asarray(objects["area_um2"]) / np.asarray(objects["area_px"])
    assert len(ratio) > 0 and float(np.median(ratio)) == pytest.approx(0.4225, rel=1e-5)
    scales = _scales(run_dir / "images.ome.zarr")
    assert any("labels" in p.parts for p, *_ in scales)  # labels are checked too
    assert len(scales) >= 8  # 4 positions × (image + labels)
    for path, axes, scale, _ in scales:
        assert scale[axes.index("x")] == pytest.approx(0.65), path
        assert scale[axes.index("y")] == pytest.approx(0.65), path
    info = json.loads((run_dir / "run.json").read_text())
    assert info["pixel_size_um"] == 0.65 and info["pixel_size_source"] == "config"


@pytest.mark.hardware
def test_triggered_stacks_carry_pixel_size_and_z_step(make_session, tmp_path):
    from liveseg.plugins import PluginHost
    from liveseg.testing import classical_config

    cfg = classical_config(
        hardware={
            "mm_config": "demo",
            "exposure_ms": 5,
            "pixel_size_um": 0.5,
            "properties": [
                ["Camera", "OnCameraCCDXSize", 256],
                ["Camera", "OnCameraCCDYSize", 256],
            ],
            "simulate": {"objects": [{"x": 20.0, "y": -15.0, "radius": 3.0}], "seed": 2},
        },
        sequence={"stage_positions": [{"x": 0, "y": 0, "z": 0}]},
        triggers=[
            {
                "trigger": "visit_objects",
                "params": {"filter": "area_um2 > 5", "z_range_um": 4, "z_step_um": 2},
            }
        ],
    )
    session = make_session(cfg, host=PluginHost(entry_points=False))
    summary = session.run(output=tmp_path / "run")
    assert summary["triggered_series"] == 1
    stacks = _scales(tmp_path / "run" / "triggered.ome.zarr")
    assert len(stacks) == 2  # the stack's image and its labels
    for path, axes, scale, axis_info in stacks:
        assert axes == ["c", "z", "y", "x"]
        assert scale == [1.0, 2.0, 0.5, 0.5], path
        assert all(a.get("unit") == "micrometer" for a in axis_info if a["type"] == "space")
    assert session.core.getPixelSizeUm() == 0.5  # every writer used the core's calibration


@pytest.mark.hardware
def test_an_uncalibrated_rig_says_its_um_columns_are_pixels(make_session, tmp_path):
    import liveseg
    from liveseg.testing import classical_config

    beads = [["Camera", "Mode", "Fluorescent Beads"]]  # the simulation needs a pixel size
    session = make_session(
        classical_config(hardware={"mm_config": "demo", "exposure_ms": 5, "properties": beads})
    )
    for name in list(session.core.getAvailablePixelSizeConfigs()):
        session.core.deletePixelSizeConfig(name)  # a rig nobody calibrated
    assert session.core.getPixelSizeUm() == 0
    session.run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    (event,) = run.events("pixel_size")
    assert "pixels" in event["message"] and event["pixel_size_um"] == 1.0
    assert run.run_info["pixel_size_source"] == "default"
    objects = run.objects()
    assert objects and all(o["area_um2"] == o["area_px"] for o in objects)
