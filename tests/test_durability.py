"""A live run never loses an image silently: the image writer, full disks, the frame index."""

from __future__ import annotations

import csv
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
from liveseg.testing import classical_config, run_liveseg
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
    ``acquired``), superseded by the segmentation row; the images read back exactly.

    While the run is written frames.csv is a log (the ``acquired`` rows are what a
    killed run leaves, see the SIGKILL test); once the store closes it holds one row per
    frame, as a pandas user expects."""
    cfg = classical_config(sequence={"time_plan": {"interval": 0, "loops": 4}})
    session = make_session(cfg)
    got: list[np.ndarray] = []
    session.core.mda.events.frameReady.connect(lambda img, *_: got.append(np.array(img)))
    summary = session.run(output=tmp_path / "run")
    assert summary["status"] == "finished" and summary["frames_written"] == 4
    with (tmp_path / "run" / "frames.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [(int(r["index"]), r["status"]) for r in table] == [(i, "ok") for i in range(4)]
    run = liveseg.open_run(tmp_path / "run")
    assert [r["status"] for r in run.frames()] == ["ok"] * 4
    for i, img in enumerate(got):
        np.testing.assert_array_equal(run.image(i), img)


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
        args = ["run", _demo_config(tmp_path), "-o", disk / "run", "--home", tmp_path / "home"]
        env = None
        if not mounted:  # inject the failure at the third-party sink, in the child
            env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "inject")}
            (tmp_path / "inject").mkdir()
            (tmp_path / "inject" / "sitecustomize.py").write_text(INJECT)
        done = run_liveseg(*args, env=env)
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


# -- kills and signals ------------------------------------------------------------------
FAST_CHAIN = [
    {"backend": "threshold", "params": {"sigma": 0, "split": False, "min_snr": 0}},
]


def _two_position_config(
    tmp_path: Path, loops: int = 100, index_interval_s: float | None = None
) -> Path:
    """200 frames: 2 positions × 100 time points of a small, fast demo camera."""
    import yaml

    data = {
        "name": "durability",
        "home": str(tmp_path / "home"),
        "hardware": {
            "mm_config": "demo",
            "exposure_ms": 1,
            "properties": [
                ["Camera", "OnCameraCCDXSize", "128"],
                ["Camera", "OnCameraCCDYSize", "128"],
                ["Camera", "Mode", "Noise"],
            ],
        },
        "sequence": {
            "axis_order": "tpcz",
            "stage_positions": [{"x": 0, "y": 0, "z": 0}, {"x": 200, "y": 0, "z": 0}],
            "time_plan": {"interval": 0.02, "loops": loops},
        },
        "pipeline": {"steps": FAST_CHAIN},
        "backlog": {"policy": "all", "queue_size": 4},
    }
    if index_interval_s is not None:
        data["storage"] = {"index_interval_s": index_interval_s}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class _Child:
    """``liveseg run`` in a subprocess, its stderr collected line by line."""

    def __init__(self, config: Path, run_dir: Path) -> None:
        import threading

        cmd = [sys.executable, "-m", "liveseg", "run", str(config), "-o", str(run_dir)]
        self.run_dir = run_dir
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, ""):
            self.err.append(line)

    def wait_for_frames(self, n: int, timeout: float = 120) -> None:
        import time

        deadline = time.monotonic() + timeout
        frames = self.run_dir / "frames.csv"
        while time.monotonic() < deadline:
            if frames.exists() and frames.read_text().count("\n") > n:
                return
            assert self.proc.poll() is None, "".join(self.err)
            time.sleep(0.05)
        pytest.fail("the run produced no frames in time")

    def wait_for_text(self, text: str, timeout: float = 60) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.err):
                return
            time.sleep(0.02)
        pytest.fail(f"{text!r} never printed: {''.join(self.err)}")

    def finish(self, timeout: float = 120) -> int:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return self.proc.returncode


def _assert_every_plane_reachable(run_dir: Path) -> int:
    """Every non-empty plane of images.ome.zarr is some frame's ``open_run(...).image(i)``;
    returns how many there are."""
    import zarr

    from liveseg.store import IMAGES, image_group

    run = liveseg.open_run(run_dir)
    rows = {}
    for r in run.frames():
        idx = json.loads(r["event_index"])
        rows[(r["position"], *(idx.get(d, 0) for d in ("t", "c", "z")))] = r
    planes = 0
    for p in (0, 1):
        arr = zarr.open_array(str(image_group(run_dir / IMAGES, p) / "0"), mode="r")
        dims = list(arr.metadata.dimension_names)
        data = arr[:]
        for key in np.ndindex(*data.shape[:-2]):
            plane = data[key]
            if not plane.any():
                continue
            planes += 1
            named = dict(zip(dims[:-2], key, strict=True))
            row = rows.get((p, *(named.get(d, 0) for d in ("t", "c", "z"))))
            assert row is not None, f"plane p={p} {named} is on disk but in no frame row"
            assert row["status"] != "write_failed"
            np.testing.assert_array_equal(run.image(row["index"]), plane)
    return planes


def _resegment_labels_everything(run_dir: Path) -> None:
    done = run_liveseg("resegment", run_dir)
    assert done.returncode == 0, done.stderr
    run = liveseg.open_run(run_dir)
    for row in run.frames():
        assert row["status"] == "ok", row
        assert run.labels(row["index"]) is not None
    assert not list((run_dir / ".spool").glob("*.npy"))  # spooled frames were consumed


POSIX_SIGNALS = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.mark.slow
@POSIX_SIGNALS
@pytest.mark.parametrize("index_interval_s", [None, 60.0], ids=["default", "index-held-back"])
def test_sigkill_at_a_random_moment_loses_no_image(tmp_path, index_interval_s):
    """With the index held back for the whole run, every image without a segmentation
    row must be found from the image store."""
    import random
    import signal
    import time

    moment = random.uniform(0.2, 3.0)
    config = _two_position_config(tmp_path, index_interval_s=index_interval_s)
    child = _Child(config, tmp_path / "run")
    try:
        child.wait_for_frames(1)
        time.sleep(moment)
    finally:
        child.proc.send_signal(signal.SIGKILL)
    child.finish()
    assert liveseg.open_run(tmp_path / "run").run_info["status"] == "interrupted"
    planes = _assert_every_plane_reachable(tmp_path / "run")
    assert planes > 0, f"killed {moment:.2f} s in"
    _resegment_labels_everything(tmp_path / "run")


@pytest.mark.hardware
def test_images_without_a_frame_row_are_recovered_from_the_store(tmp_path):
    """The state a kill inside the index's batching window leaves: planes on disk, no
    rows for them, run.json at ``running`` with nobody holding the lock."""

    run_dir = tmp_path / "run"
    config = _two_position_config(tmp_path, loops=8)
    done = run_liveseg("run", config, "-o", run_dir)
    assert done.returncode == 0, done.stderr
    frames = run_dir / "frames.csv"
    with frames.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16
    with frames.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:5])
    info = json.loads((run_dir / "run.json").read_text())
    info["status"] = "running"
    (run_dir / "run.json").write_text(json.dumps(info))

    run = liveseg.open_run(run_dir)
    assert run.status == "interrupted"
    assert len(run.frames()) == 16
    recovered = [r for r in run.frames() if r.get("recovered")]
    assert len(recovered) == 11 and {r["status"] for r in recovered} == {"acquired"}
    assert [r["index"] for r in recovered] == list(range(5, 16))
    assert _assert_every_plane_reachable(run_dir) == 16
    _resegment_labels_everything(run_dir)
    assert not [r for r in liveseg.open_run(run_dir).frames() if r.get("recovered")]


@pytest.mark.slow
@POSIX_SIGNALS
def test_sigterm_drains_and_ends_interrupted(tmp_path):
    import random
    import signal
    import time

    child = _Child(_two_position_config(tmp_path), tmp_path / "run")
    child.wait_for_frames(1)
    time.sleep(random.uniform(0.2, 2.0))
    child.proc.send_signal(signal.SIGTERM)
    code = child.finish()
    assert code != 0
    assert any("Ctrl-C again to stop now" in line for line in child.err), child.err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "interrupted"
    _assert_every_plane_reachable(tmp_path / "run")
    _resegment_labels_everything(tmp_path / "run")


@pytest.mark.slow
@POSIX_SIGNALS
def test_double_sigint_stops_draining_and_ends_interrupted(tmp_path):
    import random
    import signal
    import time

    child = _Child(_two_position_config(tmp_path), tmp_path / "run")
    child.wait_for_frames(1)
    time.sleep(random.uniform(0.2, 2.0))
    child.proc.send_signal(signal.SIGINT)
    child.wait_for_text("draining")
    child.proc.send_signal(signal.SIGINT)
    code = child.finish()
    assert code != 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "interrupted"
    _assert_every_plane_reachable(tmp_path / "run")
    _resegment_labels_everything(tmp_path / "run")


# -- output directories ----------------------------------------------------------------
RUN_FILES = ("run.json", "frames.csv", "objects.csv", "objects.parquet", "events.jsonl")


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {n: (run_dir / n).read_bytes() for n in RUN_FILES if (run_dir / n).exists()}


def _cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from liveseg.cli import main

    out = CliRunner().invoke(main, list(args))
    return out.exit_code, out.output


def test_segment_batch_resegment_never_destroy_an_existing_run(make_session, tmp_path):
    import tifffile

    from liveseg.testing import disk_image

    run_dir = tmp_path / "run"
    make_session(classical_config()).run(output=run_dir)
    before = _snapshot(run_dir)
    assert {"run.json", "frames.csv", "objects.csv", "objects.parquet"} <= set(before)
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "x.tif", disk_image()[0])
    home = str(tmp_path / "home")

    code, text = _cli("segment", str(src / "x.tif"), "-o", str(run_dir), "--home", home)
    assert code != 0 and "already holds another liveseg run" in text
    assert len(text.strip().splitlines()) == 1
    code, text = _cli("batch", str(src), "-o", str(run_dir), "--home", home)
    assert code != 0 and "already holds another liveseg run" in text
    code, text = _cli("resegment", str(run_dir), "--home", home)  # nothing left to do
    assert code == 0, text
    assert _snapshot(run_dir) == before
    assert not (run_dir / "x_labels.tif").exists()

    # segment's own output is a run too: batch refuses it, resegment says what it is
    seg = tmp_path / "seg"
    assert _cli("segment", str(src / "x.tif"), "-o", str(seg), "--home", home)[0] == 0
    seg_before = _snapshot(seg)
    code, text = _cli("batch", str(src), "-o", str(seg), "--home", home)
    assert code != 0 and "(segment)" in text
    code, text = _cli("resegment", str(seg), "--home", home)
    assert code != 0 and "output of 'liveseg segment'" in text
    assert _snapshot(seg) == seg_before

    # batch resumes its own output, and refuses another source's
    out = tmp_path / "batch"
    assert _cli("batch", str(src), "-o", str(out), "--home", home)[0] == 0
    code, text = _cli("batch", str(src), "-o", str(out), "--home", home, "--json")
    assert code == 0, text
    assert json.loads(text[text.index("{") :])["skipped_done"] == 1  # resumed, not redone
    other = tmp_path / "other"
    other.mkdir()
    tifffile.imwrite(other / "y.tif", disk_image(seed=1)[0])
    batch_before = _snapshot(out)
    code, text = _cli("batch", str(other), "-o", str(out), "--home", home)
    assert code != 0 and "(batch)" in text
    assert _snapshot(out) == batch_before


def test_same_named_inputs_keep_their_relative_paths(tmp_path):
    import tifffile

    from liveseg.testing import disk_image

    images = {}
    for i, sub in enumerate(("s1", "s2")):
        (tmp_path / sub).mkdir()
        images[sub], _ = disk_image(centers=[(30, 30)] * (i + 1) + [(90, 90)][:i], seed=i)
        tifffile.imwrite(tmp_path / sub / "x.tif", images[sub])
    out = tmp_path / "out"
    code, text = _cli(
        "segment",
        str(tmp_path / "s1" / "x.tif"),
        str(tmp_path / "s2" / "x.tif"),
        "-o",
        str(out),
        "--home",
        str(tmp_path / "home"),
    )
    assert code == 0 and "segmented 2 of 2" in text, text
    one = tifffile.imread(out / "s1" / "x_labels.tif")
    two = tifffile.imread(out / "s2" / "x_labels.tif")
    assert one.max() == 1 and two.max() == 2  # each its own image's labels
