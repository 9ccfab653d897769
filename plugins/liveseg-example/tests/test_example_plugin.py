"""liveseg-example's own tests, written against the real contract with liveseg.testing.

The fixtures ``liveseg_host`` (a fresh host, entry-point discovery off) and
``disk_frame`` (synthetic frames with known labels) come from the ``liveseg.testing``
pytest plugin, active as soon as liveseg is installed; nothing here mocks liveseg.
"""

import json

import numpy as np
import pytest
import useq

from liveseg.config import StepConfig
from liveseg.errors import ConfigError
from liveseg.metrics import average_precision
from liveseg.pipeline import Pipeline, validate_params
from liveseg.plugin_api import (
    Frame,
    FrameResult,
    FrameStatus,
    Proposal,
    Sink,
    StepContext,
    Trigger,
    TriggerContext,
    TriggerState,
)
from liveseg.testing import (
    classical_config,
    contract_frames,
    disk_image,
    register_fake_backend,
    register_plugin,
    run_liveseg,
)
from liveseg_example import plugin


@pytest.fixture
def host(liveseg_host):
    assert register_plugin(liveseg_host, plugin, name="example") == []
    return liveseg_host


def _build(host, kind, name, params, tmp_path):
    factory = getattr(host, kind)()[name]
    return factory(validate_params(name, name, factory, params), StepContext(home=tmp_path))


def test_registers_one_of_each(host):
    info = {p.name: p for p in host.plugins()}["example"]
    assert info.provides["backends"] == ["spots"]
    assert info.provides["sinks"] == ["jsonl"]
    assert info.provides["triggers"] == ["visit_brightest"]
    assert "measure_frame" in info.hooks


def test_spots_backend_finds_the_disks(host, tmp_path):
    centers = [(20, 20), (20, 90), (70, 50), (100, 100)]
    image, truth = disk_image((128, 128), centers, radius=7, noise=20, seed=3)
    chain = Pipeline.build(
        [StepConfig(backend="spots", params={"sigma": 1.0, "min_area": 10})],
        host.backends(),
        StepContext(home=tmp_path),
    )
    result = chain.run(Frame(index=0, image=image))
    assert result.status is FrameStatus.OK and result.labels.dtype == np.uint32
    ap = average_precision(truth, result.labels)
    assert ap.n_pred == len(centers)
    assert ap.ap[0.5] == 1.0
    assert ap.mean_matched_iou > 0.8


def test_spots_drops_objects_below_min_area_and_renumbers(host, tmp_path):
    image, _ = disk_image((96, 96), [(20, 20), (60, 60)], radius=2, noise=0)
    image[50:70, 10:30] = image.max()  # one large square, 400 px
    backend = _build(host, "backends", "spots", {"sigma": 0, "min_area": 50}, tmp_path)
    labels = backend.segment(Frame(0, image), None).labels
    assert sorted(np.unique(labels)) == [0, 1]
    assert int((labels == 1).sum()) == 400


def test_spots_on_a_flat_frame_finds_nothing(host, tmp_path):
    backend = _build(host, "backends", "spots", {}, tmp_path)
    result = backend.segment(Frame(0, np.full((32, 32), 7, np.uint16)), None)
    assert result.count == 0


def test_a_typo_in_the_params_is_a_config_error_naming_the_field(host):
    factory = host.backends()["spots"]
    expected = r"(?s)sigmaa: Extra inputs.*valid fields: min_area, sigma"
    with pytest.raises(ConfigError, match=expected):
        validate_params("0:spots", "spots", factory, {"sigmaa": 2})


def test_measure_frame_adds_each_objects_peak(host, tmp_path):
    image, truth = disk_image((64, 64), [(16, 16), (40, 44)], radius=5, seed=1)
    image[truth == 2] += 300
    fake = register_fake_backend(host, labels=truth)
    chain = Pipeline.build([StepConfig(backend="fake")], host.backends(), StepContext(tmp_path))
    frame = Frame(index=4, image=image)
    result = chain.run(frame)
    cols = host.measure_frame(frame, result)
    expected = [image[truth == i].max() for i in (1, 2)]
    np.testing.assert_array_equal(cols["example_peak"], expected)
    assert fake.calls == [4]
    failed = result.replace(status=FrameStatus.FAILED)
    assert "example_peak" not in host.measure_frame(frame, failed)


def test_jsonl_sink_records_every_frame_whatever_its_status(host, tmp_path):
    sink = _build(host, "sinks", "jsonl", {"filename": "frames.jsonl"}, tmp_path)
    assert isinstance(sink, Sink)
    sink.setup({"run_dir": str(tmp_path), "config": {}, "chain": ["spots"], "entry_point": "run"})
    frames = contract_frames()
    for frame, result, objects in frames:
        sink.frame(frame, result, objects)
    sink.finish({"frames_acquired": 3, "status": "finished"})
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert lines[0]["setup"] == {"entry_point": "run", "chain": ["spots"]}
    body = lines[1:-1]
    assert [r["frame"] for r in body] == [f.index for f, _, _ in frames]
    assert [r["status"] for r in body] == ["ok", "skipped", "failed"]
    assert body[0]["count"] == len(frames[0][2]["label"]) and body[1]["count"] == 0
    assert body[2]["error"] == frames[2][1].error
    assert lines[-1]["finish"] == {"frames": 3, "frames_acquired": 3, "status": "finished"}


def test_jsonl_sink_refuses_a_path_as_filename(host, tmp_path):
    factory = host.sinks()["jsonl"]
    with pytest.raises(ConfigError, match="filename"):
        validate_params("jsonl", "jsonl", factory, {"filename": "../elsewhere.jsonl"})


def _live_frame(image, index=0):
    event = useq.MDAEvent(
        index={"p": 0, "t": 0}, x_pos=0.0, y_pos=0.0, z_pos=5.0, channel="DAPI", exposure=10
    )
    return Frame(index=index, image=image, event=event, stage_xy=(0.0, 0.0), stage_z=5.0)


def test_visit_brightest_proposes_the_brightest_object(host):
    factory = host.triggers()["visit_brightest"]
    params = validate_params("visit_brightest", "visit_brightest", factory, {"min_peak": 100})
    trigger = factory(params, TriggerContext(name="visit_brightest"))
    assert isinstance(trigger, Trigger)
    image, truth = disk_image((64, 64), [(16, 16), (40, 44)], radius=5, seed=1)
    frame = _live_frame(image)
    objects = {
        "label": np.array([1, 2]),
        "centroid_x_um": np.array([-16.0, 12.0]),
        "centroid_y_um": np.array([-16.0, 8.0]),
        "example_peak": np.array([900.0, 1500.0]),
    }
    result = FrameResult(labels=truth)
    (prop,) = trigger.propose(frame, result, objects, TriggerState())
    assert isinstance(prop, Proposal)
    assert prop.label == 2 and prop.target_xy == (12.0, 8.0)
    assert (prop.event.x_pos, prop.event.y_pos, prop.event.z_pos) == (12.0, 8.0, 5.0)
    assert prop.event.channel.config == "DAPI" and prop.event.exposure == 10
    dim = {**objects, "example_peak": np.array([50.0, 60.0])}
    assert trigger.propose(frame, result, dim, TriggerState()) is None
    skipped = result.replace(status=FrameStatus.SKIPPED)
    assert trigger.propose(frame, skipped, objects, TriggerState()) is None


def _liveseg_run(tmp_path, data):
    """``liveseg run c.yaml --output r`` in a subprocess, as a user runs it (private home)."""
    data["home"] = str(tmp_path / "home")
    (tmp_path / "c.yaml").write_text(json.dumps(data))
    out = run_liveseg("run", tmp_path / "c.yaml", "--output", tmp_path / "r")
    assert out.returncode == 0, out.stderr


@pytest.mark.hardware
@pytest.mark.slow
def test_live_run_on_demo_hardware_feeds_the_sink_once_per_frame(tmp_path):
    data = classical_config(
        pipeline={"steps": [{"backend": "spots"}]},
        sinks=[{"sink": "jsonl"}],
        plugins={"allow": ["example", "normalize", "threshold", "size_filter"]},
    ).model_dump(mode="json")
    _liveseg_run(tmp_path, data)
    lines = [
        json.loads(x) for x in (tmp_path / "r" / "example_frames.jsonl").read_text().splitlines()
    ]
    body = [r for r in lines if "frame" in r]
    import liveseg

    frames = liveseg.open_run(tmp_path / "r").frames()  # one per frame (frames.csv is a log)
    assert sorted(r["frame"] for r in body) == [r["index"] for r in frames]
    assert "setup" in lines[0] and "finish" in lines[-1]


@pytest.mark.hardware
@pytest.mark.slow
def test_visit_brightest_images_the_brightest_object_on_demo_hardware(tmp_path):
    """A live run: spots segments the simulated sample, the trigger's image is centred."""
    import liveseg

    objects = [(40.0, -30.0, 1.0), (-55.0, 25.0, 3.0), (20.0, 60.0, 1.0)]
    data = classical_config(
        hardware={
            "mm_config": "demo",
            "exposure_ms": 5,
            "properties": [
                ["Camera", "OnCameraCCDXSize", 256],
                ["Camera", "OnCameraCCDYSize", 256],
            ],
            "simulate": {
                "objects": [
                    {"x": x, "y": y, "radius": 6.0, "intensity": i} for x, y, i in objects
                ],
                "seed": 2,
            },
        },
        sequence={"stage_positions": [{"x": 0, "y": 0, "z": 0}]},
        pipeline={"steps": [{"backend": "spots", "params": {"min_area": 20}}]},
        triggers=[{"trigger": "visit_brightest"}],
        plugins={"allow": ["example"]},
    ).model_dump(mode="json")
    _liveseg_run(tmp_path, data)
    run = liveseg.open_run(tmp_path / "r")
    base = [r for r in run.frames() if r["series"] == "base"]
    assert len(base) == 1 and base[0]["count"] == len(objects)
    (series,) = run.triggered()
    x, y = series["target_xy"]
    assert abs(x - -55.0) <= 2 and abs(y - 25.0) <= 2  # the brightest one
    (index,) = series["frames"]
    labels = run.labels(index)
    rows, cols = np.nonzero(labels == labels[128, 128])
    assert labels[128, 128] != 0 and abs(rows.mean() - 128) <= 2 and abs(cols.mean() - 128) <= 2
