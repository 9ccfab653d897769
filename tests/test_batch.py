"""Offline batch: outputs, per-file errors, resume after SIGKILL, OME-Zarr, Dask."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from liveseg.batch import discover_inputs, run_batch
from liveseg.config import StepConfig
from liveseg.synthetic import generate

STEPS = [
    StepConfig(backend="threshold"),
    StepConfig(backend="size_filter", params={"min_area": 8}),
]


def _folder(tmp_path: Path, n: int, shape=(96, 96)) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for k in range(n):
        img, _ = generate(k, shape, "sparse")
        tifffile.imwrite(src / f"img{k:03d}.tif", img)
    return src


def _objects(out: Path) -> list[dict[str, str]]:
    with open(out / "objects.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_batch_outputs_and_per_file_errors(tmp_path):
    src = _folder(tmp_path, 4)
    (src / "broken.tif").write_bytes(b"not a tiff at all")
    tifffile.imwrite(src / "rgb.tif", np.zeros((3, 20, 20, 3), np.uint8))
    # Label/valid files beside images are not inputs.
    tifffile.imwrite(src / "img000_labels.tif", np.zeros((96, 96), np.uint32))
    out = tmp_path / "out"
    summary = run_batch(src, out, steps=STEPS, home=tmp_path / "home", progress=False)
    assert summary["total"] == 6 and summary["ok"] == 4 and summary["failed"] == 2
    assert "broken" in summary["errors"] and "cannot read image" in summary["errors"]["broken"]
    assert "RGB image" in summary["errors"]["rgb"]
    for k in range(4):
        labels = tifffile.imread(out / f"img{k:03d}_labels.tif")
        assert labels.dtype == np.uint32 and labels.shape == (96, 96)
        rows = [r for r in _objects(out) if r["image"] == f"img{k:03d}"]
        assert len(rows) == len(np.unique(labels)) - 1
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["chain"][0]["backend"] == "threshold"
    # A re-run skips finished images and retries the failed ones.
    again = run_batch(src, out, steps=STEPS, home=tmp_path / "home", progress=False)
    assert again["skipped_done"] == 4 and again["ok"] == 0 and again["failed"] == 2


_SLOW_PLUGIN = textwrap.dedent(
    """
    import time
    from liveseg import hookimpl
    from liveseg.types import FrameResult
    from liveseg.builtins.threshold import threshold_segment, ThresholdParams

    class Slow:
        def __init__(self, params, context):
            pass
        def segment(self, frame, upstream):
            time.sleep(0.15)
            return FrameResult(labels=threshold_segment(frame.image, ThresholdParams()))
        def close(self):
            pass

    @hookimpl
    def register_backends(register):
        register("slow", Slow)
    """
)


@pytest.mark.slow
def test_batch_resume_after_sigkill(tmp_path):
    src = _folder(tmp_path, 24, shape=(64, 64))
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slowplug.py").write_text(_SLOW_PLUGIN)
    cfg = tmp_path / "chain.yaml"
    cfg.write_text("pipeline:\n  steps:\n    - backend: slow\n")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-c",
        "from liveseg.cli import main; main()",
        "batch",
        str(src),
        "-o",
        str(out),
        "--config",
        str(cfg),
        "--plugins-dir",
        str(plugins),
        "--home",
        str(tmp_path / "h"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*_labels.tif"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = {p.name for p in out.glob("*_labels.tif")}
    assert 5 <= len(done_at_kill) < 24, "the kill must land mid-batch"
    first_attempts = [json.loads(x) for x in (out / "batch.jsonl").read_text().splitlines()]

    rerun = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["total"] == 24 and summary["failed"] == 0
    assert summary["skipped_done"] == len(done_at_kill)
    assert summary["ok"] + summary["skipped_done"] == 24
    # Every image exactly once in the outputs; finished ones were not processed again.
    names = [f"img{k:03d}" for k in range(24)]
    rows = _objects(out)
    for name in names:
        labels = tifffile.imread(out / f"{name}_labels.tif")
        mine = [r for r in rows if r["image"] == name]
        assert len(mine) == len(np.unique(labels)) - 1
        assert sorted(int(r["label"]) for r in mine) == list(range(1, len(mine) + 1))
    attempts = [json.loads(x) for x in (out / "batch.jsonl").read_text().splitlines()]
    second = attempts[len(first_attempts) :]
    assert not {a["name"] + "_labels.tif" for a in second} & done_at_kill


def test_ome_zarr_input(tmp_path):
    import zarr

    store = tmp_path / "plate.ome.zarr"
    root = zarr.open_group(str(store), mode="w")
    data = np.stack([generate(k, (64, 64), "sparse")[0].astype(np.uint16) for k in range(3)])
    root.create_array("0", data=data[:, None])  # (t, c, y, x)
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": "t"}, {"name": "c"}, {"name": "y"}, {"name": "x"}],
                "datasets": [{"path": "0"}],
            }
        ],
    }
    inputs = discover_inputs(store)
    assert [i.name for i in inputs] == ["plate_0_t0_c0", "plate_0_t1_c0", "plate_0_t2_c0"]
    np.testing.assert_array_equal(inputs[1].read(), data[1])
    out = tmp_path / "out"
    summary = run_batch(store, out, steps=STEPS, home=tmp_path / "home", progress=False)
    assert summary["ok"] == 3
    assert (out / "plate_0_t2_c0_labels.tif").is_file()


@pytest.mark.slow
def test_dask_local_cluster_matches_local(tmp_path):
    src = _folder(tmp_path, 6, shape=(64, 64))
    local = run_batch(src, tmp_path / "a", steps=STEPS, home=tmp_path / "h", progress=False)
    dask = run_batch(
        src, tmp_path / "b", steps=STEPS, home=tmp_path / "h", progress=False, workers=2
    )
    assert local["ok"] == dask["ok"] == 6
    for k in range(6):
        a = tifffile.imread(tmp_path / "a" / f"img{k:03d}_labels.tif")
        b = tifffile.imread(tmp_path / "b" / f"img{k:03d}_labels.tif")
        np.testing.assert_array_equal(a, b)
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["dask"]["workers"] == 2
