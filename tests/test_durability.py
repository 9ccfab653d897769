"""A live run never loses an image silently: the image writer, full disks, the frame index."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import useq

import liveseg
from liveseg.image_writer import ImageWriter
from liveseg.store import RunStore, TriggeredStore
from liveseg.testing import classical_config
from liveseg.types import Frame

REPO = Path(__file__).resolve().parents[1]


def _events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def test_triggered_images_are_on_disk_when_frame_ready_returns(tmp_path):
    """The runner thread stores triggered images itself, with their frame-index rows: a run
    killed while the worker still holds the frame keeps the image; a failing write is
    recorded as ``write_failed``, not raised."""
    import zarr

    store = RunStore(tmp_path / "run")
    triggered = TriggeredStore(store.path)
    writer = ImageWriter(store, useq.MDASequence(), triggered=triggered, pixel_size_um=0.5)
    triggered.declare("visit_0", {"c": 1, "z": 2}, {"trigger": "visit_objects"})
    rng = np.random.default_rng(0)
    planes = [rng.integers(0, 4000, (32, 48), dtype=np.uint16) for _ in range(2)]
    md = {"series": "visit_0", "trigger": "visit_objects"}
    for z, img in enumerate(planes):
        event = useq.MDAEvent(index={"z": z}, z_pos=10.0 + 2.0 * z)
        frame = Frame(index=z, image=img, event=event, stage_z=event.z_pos, metadata=md)
        writer.frame(frame)  # no worker has seen these frames
    group = zarr.open_group(str(triggered.path), mode="r")["visit_0"]
    stored = group["0"][:]
    assert stored.shape == (1, 2, 32, 48)
    np.testing.assert_array_equal(stored[0], np.stack(planes))
    scale = group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert scale[0]["scale"] == [1.0, 2.0, 0.5, 0.5]  # the 2 µm z-step of the stack
    assert not (store.images_path / "zarr.json").exists()  # nothing went to the base grid

    bad = Frame(index=2, image=np.zeros((16, 16), np.uint16), metadata=md)  # wrong plane
    writer.frame(bad)
    store.close()
    errors = _events(store.path, "write_failed")
    assert len(errors) == 1 and errors[0]["frame"] == 2
    run = liveseg.open_run(store.path)
    assert [r["status"] for r in run.frames()] == ["acquired", "acquired", "write_failed"]
    np.testing.assert_array_equal(run.image(1), planes[1])


def test_pymmcore_plus_without_the_sink_is_a_clear_error(tmp_path, monkeypatch):
    from liveseg.errors import LivesegError

    monkeypatch.setitem(sys.modules, "pymmcore_plus.mda._sink", None)  # as in 0.18.0
    store = RunStore(tmp_path / "run")
    try:
        with pytest.raises(LivesegError, match=r"pip install 'pymmcore-plus==0\.18\.1'"):
            ImageWriter(store, useq.MDASequence())
    finally:
        store.close()


def test_every_written_image_is_in_the_frame_index_before_segmentation(make_session, tmp_path):
    """Without triggers the same writer runs: each image's row is in frames.csv (status
    ``acquired``), superseded by the segmentation row; the images read back exactly."""
    cfg = classical_config(sequence={"time_plan": {"interval": 0, "loops": 4}})
    session = make_session(cfg)
    got: list[np.ndarray] = []
    session.core.mda.events.frameReady.connect(lambda img, *_: got.append(np.array(img)))
    summary = session.run(output=tmp_path / "run")
    assert summary["status"] == "finished" and summary["frames_written"] == 4
    rows = (tmp_path / "run" / "frames.csv").read_text().splitlines()[1:]
    statuses = [r.split(",")[FRAME_STATUS] for r in rows]
    assert statuses.count("acquired") == 4 and statuses.count("ok") == 4
    run = liveseg.open_run(tmp_path / "run")
    assert [r["status"] for r in run.frames()] == ["ok"] * 4
    for i, img in enumerate(got):
        np.testing.assert_array_equal(run.image(i), img)


FRAME_STATUS = 12  # the column of ``status`` in frames.csv (see store.FRAME_COLUMNS)


def _mount_small_disk(path: Path) -> bool:
    path.mkdir()
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.mark.slow
def test_a_full_disk_fails_the_run_loudly(tmp_path, monkeypatch):
    """A live demo run into a 4 MB filesystem (or, when tmpfs cannot be mounted, with the
    OME-Zarr sink's writes failing): non-zero exit, status not finished, events.jsonl
    says which frames were not written, and none of those frames reads as ok."""
    disk = tmp_path / "disk"
    mounted = _mount_small_disk(disk)
    try:
        cmd = [
            sys.executable,
            "-m",
            "liveseg",
            "run",
            str(_demo_config(tmp_path)),
            "-o",
            str(disk / "run"),
            "--home",
            str(tmp_path / "home"),
        ]
        env = None
        if not mounted:  # inject the failure at the third-party sink, in the child
            env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "inject")}
            (tmp_path / "inject").mkdir()
            (tmp_path / "inject" / "sitecustomize.py").write_text(INJECT)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        run_dir = disk / "run"
        assert done.returncode != 0, done.stdout + done.stderr
        assert "write_failed" in done.stderr
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] != "finished"
        failed = _events(run_dir, "write_failed")
        assert failed, "no events.jsonl line says what failed"
        failed_frames = {e["frame"] for e in failed if e["frame"] is not None}
        run = liveseg.open_run(run_dir)
        for row in run.frames():
            if row["index"] in failed_frames:
                assert row["status"] == "write_failed"
            if row["status"] == "ok":  # an ok frame's image really is on disk
                assert run.image(row["index"]).any()
        assert _events(run_dir, "acquisition_stopped")  # 3 in a row: it stopped imaging
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)


INJECT = """
from pymmcore_plus.mda import _sink
_orig = _sink.OmeWritersSink.append
_n = [0]
def append(self, img, event, meta):
    _n[0] += 1
    if _n[0] > 5:
        raise OSError(28, "No space left on device")
    return _orig(self, img, event, meta)
_sink.OmeWritersSink.append = append
"""


def _demo_config(tmp_path: Path, loops: int = 8) -> Path:
    """configs/demo.yaml (4 positions, 512² frames) with the fast classical chain."""
    import yaml

    from liveseg.defaults import CLASSICAL_STEPS

    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["sequence"] = yaml.safe_load((REPO / "configs" / "sequences" / "demo.yaml").read_text())
    data["sequence"]["time_plan"] = {"interval": 0, "loops": loops}
    data["pipeline"] = {"steps": [s.model_dump(mode="json") for s in CLASSICAL_STEPS]}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
