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


def test_visit_objects_dedupe_and_stage_limits(make_session, host, tmp_path):
    cfg = _config(
        [{"trigger": "visit_objects", "params": {"filter": "area_um2 > 50"}}],
        sequence={
            "stage_positions": [{"x": 0, "y": 0, "z": 0}],
            "time_plan": {"interval": 0.3, "loops": 2},
        },
        selection={"dedupe_radius_um": 8, "stage_limits": {"x": [-100, 30]}},
    )
    summary = make_session(cfg, host=host).run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    props = run.events("proposal")
    accepted = [p for p in props if p["accepted"]]
    rejected = [p for p in props if not p["accepted"]]
    assert {round(p["target_xy"][0]) for p in accepted} == {-55, 20}  # x=40 is outside
    assert summary["proposals_accepted"] == 2 and len(run.triggered()) == 2
    reasons = sorted(p["reason"].split(":")[0] for p in rejected)
    # time point 0: one outside; time point 1: one outside, two already visited
    assert reasons == ["duplicate", "duplicate", "outside stage limits", "outside stage limits"]
    assert all(p["frame"] is not None and p["label"] >= 1 for p in props)


def test_skip_if_empty_skips_the_rest_of_the_position(make_session, host, tmp_path):
    cfg = _config(
        [
            {
                "trigger": "skip_if_empty",
                "params": {"min_count": 1, "filter": "mean_intensity > 20"},
            }
        ],
        sequence={
            "axis_order": "tpgcz",
            "stage_positions": [{"x": 0, "y": 0, "z": 0}, {"x": 900, "y": 900, "z": 0}],
            "z_plan": {"range": 2, "step": 1},
            "time_plan": {"interval": 0, "loops": 2},
        },
    )
    summary = make_session(cfg, host=host).run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    frames = run.frames()
    by_pos = {p: [r for r in frames if r["position"] == p] for p in (0, 1)}
    assert len(by_pos[0]) == 6  # 2 time points x 3 planes
    assert [(r["t"], r["z"]) for r in by_pos[1]] == [(0, 0), (1, 0)]  # probes only
    assert summary["base_events_skipped"] == 4 == summary["frames_acquired"] - 8 + 4
    skipped = run.events("events_skipped")
    assert [(e["p"], e["t"], e["n"]) for e in skipped] == [(1, 0, 2), (1, 1, 2)]
    assert len(run.events("skip_requested")) == 2
    # the base grid stays aligned: every acquired plane reads back as acquired
    for r in frames:
        img = run.image(r["index"])
        assert img.any()


def test_adaptive_interval_switches_and_switches_back(make_session, host, tmp_path):
    cfg = _config(
        [
            {
                "trigger": "adaptive_interval",
                "params": {
                    "condition": "count >= 1 and t >= 1 and t <= 2",
                    "fast_interval_s": 0.15,
                    "release_frames": 1,
                },
            }
        ],
        sequence={
            "stage_positions": [{"x": 0, "y": 0, "z": 0}],
            "time_plan": {"interval": 0.6, "loops": 6},
        },
    )
    make_session(cfg, host=host).run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    starts = [e["started_s"] for e in run.events("timepoint")]
    assert len(starts) == 6
    gaps = np.diff(starts)
    # slow (0.6) -> fast after t=1 and t=2 -> slow again after t=3 fails the condition
    assert gaps[0] > 0.45
    assert gaps[1] < 0.35 and gaps[2] < 0.35
    assert gaps[3] > 0.45 and gaps[4] > 0.45
    changes = [e["interval_s"] for e in run.events("interval_changed")]
    assert changes == [0.15, None]


def test_stop_when_finishes_cleanly(make_session, host, tmp_path):
    cfg = _config(
        [{"trigger": "stop_when", "params": {"condition": "objects_total >= 6"}}],
        sequence={
            "stage_positions": [{"x": 0, "y": 0, "z": 0}],
            "time_plan": {"interval": 0.25, "loops": 20},
        },
    )
    summary = make_session(cfg, host=host).run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    assert run.run_info["status"] == "finished"
    assert summary["stopped"] and "objects_total >= 6" in summary["stopped"]
    frames = run.frames()
    assert 2 <= len(frames) < 20
    assert len(frames) == summary["frames_acquired"]  # every acquired frame is in the tables
    assert all(r["status"] == "ok" for r in frames)
    assert len(run.events("stop_requested")) == 1
    for r in frames:
        assert run.image(r["index"]).any() and run.labels(r["index"]) is not None


def test_a_raising_trigger_does_not_stop_the_run(make_session, tmp_path):
    from types import SimpleNamespace

    host = PluginHost(entry_points=False)

    class Boom:
        def __init__(self, params, context):
            pass

        def propose(self, frame, result, objects, state):
            raise RuntimeError("kaboom")

    @liveseg.hookimpl
    def register_triggers(register):
        register("boom", Boom)

    @liveseg.hookimpl
    def propose_events(frame, result, history):
        raise ValueError("hook kaboom")

    host.register(
        SimpleNamespace(register_triggers=register_triggers, propose_events=propose_events),
        name="boomer",
    )
    cfg = _config(
        [{"trigger": "boom"}, {"trigger": "visit_objects", "params": {"max_objects": 1}}],
        sequence={"time_plan": {"interval": 0, "loops": 2}},
    )
    summary = make_session(cfg, host=host).run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    assert run.run_info["status"] == "finished"
    assert len([r for r in run.frames() if r["series"] == "base"]) == 2
    errors = run.events("plugin_error")
    trig = [e for e in errors if e.get("plugin") == "boom"]
    hook = [e for e in errors if e.get("plugin") == "boomer" and e.get("hook") == "propose_events"]
    assert [e["frame"] for e in trig] == [0, 1] and "kaboom" in trig[0]["error"]
    assert len(hook) == 2
    assert summary["trigger_errors"] == 2
    assert summary["triggered_series"] >= 1  # the other trigger still worked


class _OneObject:
    """Labels one off-centre square on full base frames; nothing on smaller (ROI) frames."""

    def __init__(self, params, context):
        pass

    def segment(self, frame, upstream):
        from liveseg.types import FrameResult

        labels = np.zeros(frame.shape, np.uint32)
        if frame.shape == (SIZE, SIZE):
            labels[30:42, 180:192] = 1
        return FrameResult(labels=labels)

    def close(self):
        pass


def test_visit_objects_with_camera_roi(make_session, host, tmp_path):
    from types import SimpleNamespace

    from liveseg.hookspecs import hookimpl

    @hookimpl
    def register_backends(register):
        register("one_object", _OneObject)

    host.register(SimpleNamespace(register_backends=register_backends), name="one-object")
    cfg = classical_config(
        hardware={"mm_config": "demo", "exposure_ms": 5, "properties": SMALL_CAMERA},
        sequence={
            "stage_positions": [{"x": 0, "y": 0, "z": 0}],
            "time_plan": {"interval": 0.2, "loops": 2},
        },
        pipeline={"steps": [{"backend": "one_object"}]},
        triggers=[{"trigger": "visit_objects", "params": {"roi": [64, 47]}}],
        selection={"dedupe_radius_um": 5},
    )
    session = make_session(cfg, host=host)
    session.run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    series = run.triggered()
    assert len(series) == 1  # the second time point's object is deduped
    (index,) = series[0]["frames"]
    assert run.image(index).shape == (46, 64)  # ROI height rounded down to even
    # the object sits at pixel (35.5, 185.5): the stage went there
    x, y = series[0]["target_xy"]
    assert x == pytest.approx(185.5 - HALF) and y == pytest.approx(35.5 - HALF)
    base = [r for r in run.frames() if r["series"] == "base"]
    assert len(base) == 2 and all(run.image(r["index"]).shape == (SIZE, SIZE) for r in base)
    assert session.core.getImageWidth() == SIZE  # the ROI is cleared after the run


def test_visit_objects_roi_sets_the_camera_roi_then_the_full_sensor(make_session, host, tmp_path):
    cfg = _config(
        [{"trigger": "visit_objects", "params": {"filter": "area_um2 > 50", "roi": [64, 48]}}],
        sequence={
            "stage_positions": [{"x": 0, "y": 0, "z": 0}],
            "time_plan": {"interval": 0.3, "loops": 2},
        },
        selection={"dedupe_radius_um": 8},
    )
    session = make_session(cfg, host=host)
    seen = []  # (series, camera ROI) when each frame was taken (the simulated sample
    # draws full-sensor images whatever the ROI, so the ROI itself is what we check)

    def on_frame(img, event, meta):
        series = (event.metadata.get("liveseg") or {}).get("series", "base")
        seen.append((series, tuple(session.core.getROI())))

    session.core.mda.events.frameReady.connect(on_frame)
    session.run(output=tmp_path / "run")
    base = [roi for series, roi in seen if series == "base"]
    triggered = [roi for series, roi in seen if series != "base"]
    assert base == [(0, 0, SIZE, SIZE)] * 2  # also the time point after the ROI events
    assert len(triggered) == len(OBJECTS)
    assert set(triggered) == {((SIZE - 64) // 2, (SIZE - 48) // 2, 64, 48)}
    assert tuple(session.core.getROI()) == (0, 0, SIZE, SIZE)  # restored after the run
