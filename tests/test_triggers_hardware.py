"""Smart microscopy on the demo hardware with a simulated sample (classical chain)."""

from __future__ import annotations

import numpy as np
import pytest

import liveseg
from liveseg.plugins import PluginHost
from liveseg.testing import classical_config

pytestmark = pytest.mark.hardware

SIZE = 256  # small demo camera: fast to render and segment
HALF = SIZE // 2
SMALL_CAMERA = [["Camera", "OnCameraCCDXSize", SIZE], ["Camera", "OnCameraCCDYSize", SIZE]]
# Off-centre objects around the base position (0, 0); stage moves land on the demo XY
# stage's 0.015 µm grid, well below a pixel.
OBJECTS = [(40.0, -30.0), (-55.0, 25.0), (20.0, 60.0)]
RADIUS = 6.0


def _config(triggers, *, sequence=None, objects=OBJECTS, selection=None, **extra):
    cfg = classical_config(
        hardware={
            "mm_config": "demo",
            "exposure_ms": 5,
            "properties": SMALL_CAMERA,
            "simulate": {
                "objects": [{"x": x, "y": y, "radius": RADIUS} for x, y in objects],
                "seed": 2,
            },
        },
        sequence=sequence or {"stage_positions": [{"x": 0, "y": 0, "z": 0}]},
        triggers=triggers,
        selection=selection or {},
        **extra,
    )
    return cfg


@pytest.fixture
def host():
    return PluginHost(entry_points=False)


def _base_planes(run_dir):
    """Image planes in images.ome.zarr (label arrays excluded)."""
    import json

    n = 0
    for meta in (run_dir / "images.ome.zarr").rglob("zarr.json"):
        info = json.loads(meta.read_text())
        if info.get("node_type") == "array" and "labels" not in meta.parts:
            n += int(np.prod(info["shape"][:-2]))
    return n


def _centroid(labels, image=None):
    """Centroid (row, col) of the object nearest the image centre."""
    from scipy import ndimage as ndi

    ids = np.unique(labels)
    ids = ids[ids != 0]
    cents = np.array(ndi.center_of_mass(labels > 0, labels, ids))
    d = np.hypot(cents[:, 0] - labels.shape[0] / 2, cents[:, 1] - labels.shape[1] / 2)
    return cents[int(np.argmin(d))]


def test_visit_objects_centres_every_target(make_session, host, tmp_path):
    cfg = _config(
        [
            {
                "trigger": "visit_objects",
                "params": {"filter": "area_um2 > 50", "z_range_um": 2, "z_step_um": 1},
            }
        ]
    )
    session = make_session(cfg, host=host)
    summary = session.run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    base = [r for r in run.frames() if r["series"] == "base"]
    assert len(base) == 1 and base[0]["count"] == len(OBJECTS)
    series = run.triggered()
    assert len(series) == len(OBJECTS) == summary["triggered_series"]
    truth = {(round(x), round(y)) for x, y in OBJECTS}
    seen = set()
    for s in series:
        assert s["frame"] == base[0]["index"] and s["label"] >= 1
        assert len(s["frames"]) == 3  # the z-stack
        seen.add((round(s["target_xy"][0]), round(s["target_xy"][1])))
        for index in s["frames"]:
            row = run.frame(index)
            assert row["trigger_frame"] == base[0]["index"]
            assert row["trigger_label"] == s["label"]
            img = run.image(index)
            labels = run.labels(index)
            assert img.shape == (SIZE, SIZE) and labels is not None
            r, c = _centroid(labels)
            assert abs(r - HALF) <= 2 and abs(c - HALF) <= 2, (index, r, c)
    assert seen == truth
    assert _base_planes(tmp_path / "run") == len(base)  # the base grid: base frames only
    assert len(run.events("triggered_started")) == len(OBJECTS)
