"""Frames segmented together: a live backlog and resegment give the labels of one by one."""

from __future__ import annotations

import json

import numpy as np
import pytest

import liveseg
from liveseg.config import StepConfig
from liveseg.pipeline import Pipeline, StepContext
from liveseg.plugins import PluginHost
from liveseg.processing import FrameProcessor
from liveseg.synthetic import generate
from liveseg.testing import classical_config, register_fake_backend
from liveseg.types import Frame, FrameStatus


@pytest.fixture
def unet():
    """The unet step needs the liveseg-torch plugin (installed in development)."""
    pytest.importorskip("liveseg_torch")


def _chain(host, home, *steps):
    ctx = StepContext(home=home, threads=1)
    return Pipeline.build([StepConfig(**s) for s in steps], host.backends(), ctx)


def test_run_batch_equals_run_and_fails_only_the_bad_frames(tmp_path, unet):
    """A unet step gets the frames at once; a step without segment_batch, one by one."""
    host = PluginHost()
    fake = register_fake_backend(host, fail_on={2})
    frames = [Frame(i, generate(61_000 + i, (96, 128), "train")[0]) for i in range(6)]
    frames[4] = Frame(4, np.zeros((0, 8), np.uint16))  # the unet raises on an empty frame
    frames[5] = Frame(5, np.zeros((4, 8, 8), np.uint16))  # not 2-D: fails before any step
    pipe = _chain(host, tmp_path, {"backend": "unet"}, {"backend": "fake"})
    fake_only = _chain(host, tmp_path, {"backend": "fake"})
    # A live worker takes several waiting frames only for a chain that batches.
    assert FrameProcessor(pipe, host).can_batch
    assert not FrameProcessor(fake_only, host).can_batch
    one_by_one = [pipe.run(f) for f in frames]
    fake.calls.clear()
    together = pipe.run_batch(frames)
    pipe.close()
    assert [r.status for r in together] == [r.status for r in one_by_one]
    assert [r.status for r in together].count(FrameStatus.OK) == 3
    for a, b in zip(one_by_one, together, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.scores == b.scores and a.error == b.error
    assert "fake failure on frame 2" in str(together[2].error)
    assert together[4].extra["failed_step"] == "0:unet" and "IndexError" in str(together[4].error)
    assert together[5].extra["failed_step"] == "chain"
    assert sorted(fake.calls) == [0, 1, 2, 3]  # after the unet; the 3-D frame reached none
    assert set(together[0].timings_ms) == {"0:unet", "1:fake"}


def _unet_config(batch, loops, workers=1):
    return classical_config(
        pipeline={"steps": [{"backend": "unet"}]},
        backlog={"policy": "all", "queue_size": 64, "batch": batch, "workers": workers},
        hardware={"mm_config": "demo", "exposure_ms": 1},
        sequence={"time_plan": {"interval": 0, "loops": loops}},
    )


def _pixels(rows):
    skip = {"centroid_x_um", "centroid_y_um"}
    return json.dumps([{k: v for k, v in r.items() if k not in skip} for r in rows])


@pytest.mark.slow
@pytest.mark.parametrize(("batch", "workers"), [(4, 1), (1, 2)])
def test_live_backlog_in_batches_gives_the_labels_of_resegmenting_one_by_one(
    make_session, tmp_path, batch, workers, unet
):
    """The camera outruns the unet, so frames wait and are segmented four at a time.

    Or two at once, one per worker (two frames in flight, one unet shared by both).
    """
    from liveseg.offline import resegment_run

    run_dir = tmp_path / "run"
    make_session(_unet_config(batch, 12, workers)).run(output=run_dir)
    run = liveseg.open_run(run_dir)
    rows = run.frames()
    assert [r["status"] for r in rows] == ["ok"] * 12
    live = {r["index"]: run.labels(r["index"]) for r in rows}
    objects = {r["index"]: run.objects(frame=r["index"]) for r in rows}
    if batch > 1:  # frames of one batch share its chain time: some went together
        seg_ms = [round(float(r["segment_ms"]), 6) for r in rows]
        assert len(set(seg_ms)) < len(seg_ms)
    assert any(int(r["count"]) > 0 for r in rows)
    done = resegment_run(run_dir, config=_unet_config(1, 12), all_frames=True, progress=False)
    assert done == {"ok": 12, "failed": 0}
    again = liveseg.open_run(run_dir)
    for i, labels in live.items():
        np.testing.assert_array_equal(again.labels(i), labels)
        # resegment appends its rows: the frame's rows twice, equal. Stage µm columns
        # left out: resegment does not recover the demo stage's position (NaN there).
        rows_i = again.objects(frame=i)
        assert len(rows_i) == 2 * len(objects[i])
        assert _pixels(rows_i[len(objects[i]) :]) == _pixels(objects[i])


def test_segment_files_in_batches_equals_one_by_one_with_a_broken_file(
    tmp_path, liveseg_home, unet
):
    """``liveseg segment`` on TIFFs: batches of 4 give the files' labels of batch 1."""
    import tifffile

    from liveseg.offline import segment_files

    paths = []
    for i in range(7):
        path = tmp_path / "in" / f"img{i}.tif"
        path.parent.mkdir(exist_ok=True)
        if i == 3:
            path.write_bytes(b"not a tiff")  # unreadable, between two batches' frames
        else:
            tifffile.imwrite(path, generate(62_000 + i, (96, 96), "train")[0])
        paths.append(path)
    outs = {}
    for batch in (1, 4):
        cfg = _unet_config(batch, 1)
        out = tmp_path / f"out{batch}"
        res = segment_files(paths, out, cfg, home=liveseg_home, progress=False)
        assert res["ok"] == 6 and list(res["errors"]) == [str(paths[3])]
        outs[batch] = out
        run = liveseg.open_run(out)
        assert [r["status"] for r in run.frames()] == ["ok"] * 3 + ["failed"] + ["ok"] * 3
    for i in (0, 1, 2, 4, 5, 6):
        a = tifffile.imread(outs[1] / f"img{i}_labels.tif")
        b = tifffile.imread(outs[4] / f"img{i}_labels.tif")
        assert a.max() > 0
        np.testing.assert_array_equal(a, b)


def test_a_batch_over_the_step_timeout_fails_every_frame_and_the_run_goes_on(tmp_path):
    """``step_timeout_s`` holds per frame of a batch; a hung lane fails the next at once."""
    from liveseg.processing.chain_runner import ChainRunner

    host = PluginHost(entry_points=False)
    register_fake_backend(host, delay_s=0.4)
    pipe = _chain(host, tmp_path, {"backend": "fake"})
    runner = ChainRunner(pipe, timeout_s=0.1)
    frames = [Frame(i, np.zeros((8, 8), np.uint16)) for i in range(3)]
    first = runner.run_batch(frames)
    assert [r.status for r in first] == [FrameStatus.FAILED] * 3
    assert all("per frame on a batch of 3 frames" in str(r.error) for r in first)
    assert all(r.extra["timed_out"] for r in first)
    second = runner.run_batch(frames)  # the fake is still sleeping through the first batch
    assert all("has not returned" in str(r.error) for r in second)
    runner.close()
