"""The chain in a worker process: same labels, a killed worker restarted, no segment left.

The live runs go through the CLI in a subprocess, as an operator starts them; the worker
is killed with a real SIGKILL (``Process.kill`` where there is no SIGKILL), and
``/dev/shm`` is listed before and after, where it exists.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest

import liveseg
from liveseg.assembly import assemble
from liveseg.config import WorkersConfig, load_config, parse_config
from liveseg.errors import ConfigError, LivesegError
from liveseg.processing import LabelsCollector
from liveseg.processing.processor import ConsumerSpec
from liveseg.processing.worker_process import SEGMENT_PREFIX
from liveseg.testing import classical_config, disk_image, register_fake_backend, run_liveseg
from liveseg.types import Frame

SHM = Path("/dev/shm")
REPO = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent(
    '''
    """A test plugin: a backend that hangs on one chosen frame."""
    import threading

    from liveseg.hookspecs import hookimpl
    from liveseg.types import FrameResult, empty_labels


    class HangOn:
        def __init__(self, params, ctx):
            self.frame = int(params.get("frame", -1))

        def segment(self, frame, upstream):
            if frame.index == self.frame:
                threading.Event().wait()  # a native call that never returns
            labels = empty_labels(frame.shape)
            labels[10:20, 10:20] = 1
            return FrameResult(labels=labels)

        def close(self):
            pass


    @hookimpl
    def register_backends(register):
        register("hang_on", HangOn)
    '''
)


def _segments(pid: int) -> set[str]:
    """The shared-memory segments process ``pid`` made that exist now (``/dev/shm``).

    By pid, because other test sessions on the machine may hold segments of their own.
    """
    if not SHM.is_dir():
        return set()
    return {p.name for p in SHM.iterdir() if p.name.startswith(f"{SEGMENT_PREFIX}{pid}_")}


def _write_config(path: Path, **sections: object) -> Path:
    data = {
        "name": "worker",
        "hardware": {
            "mm_config": "demo",
            "exposure_ms": 5,
            "simulate": {"n_objects": 300, "extent_um": 700, "radius_um": [5, 9], "seed": 1},
        },
        "sequence": {"time_plan": {"interval": 0, "loops": 40}},
        "pipeline": {"steps": [s.model_dump() for s in classical_config().pipeline.steps]},
        "backlog": {"policy": "all", "queue_size": 64, "workers": {"kind": "process"}},
        **sections,
    }
    path.write_text(json.dumps(data))
    return path


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the last line, still being written
            break
    return out


def _ok_rows(run_dir: Path) -> int:
    path = run_dir / "frames.csv"
    if not path.exists():
        return 0
    with path.open(newline="") as fh:
        return sum(1 for r in csv.DictReader(fh) if r["status"] == "ok")


def _kill(pid: int) -> None:
    if hasattr(signal, "SIGKILL"):
        os.kill(pid, signal.SIGKILL)
    else:  # Windows: TerminateProcess, what Process.kill does there
        os.kill(pid, signal.SIGTERM)


def _wait_for(predicate, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"the run ended first (rc {proc.returncode}):\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.05)


def test_old_worker_counts_stay_valid_and_kinds_are_checked(tmp_path):
    assert parse_config({"backlog": {"workers": 2}}).backlog.workers == WorkersConfig(count=2)
    cfg = parse_config({"backlog": {"workers": {"kind": "process", "count": 2}}})
    assert cfg.backlog.workers == WorkersConfig(kind="process", count=2)
    with pytest.raises(ConfigError, match=r"backlog\.workers\.kind: Input should be 'thread'"):
        parse_config({"backlog": {"workers": {"kind": "fork"}}})
    with pytest.raises(ConfigError, match=r"backlog\.workers\.count"):
        parse_config({"backlog": {"workers": 0}})
    demo = load_config(REPO / "configs" / "demo.yaml", ["backlog.workers.kind=process"])
    assert demo.backlog.workers == WorkersConfig(kind="process", count=1)
    old = tmp_path / "old.yaml"
    old.write_text("backlog: {workers: 2}\n")
    assert load_config(old).backlog.workers == WorkersConfig(kind="thread", count=2)
    with pytest.raises(ConfigError, match=r"backlog\.workers is 2, not a mapping"):
        load_config(old, ["backlog.workers.kind=process"])


@pytest.mark.slow
@pytest.mark.parametrize("chain", ["classical", "default"])
def test_worker_process_labels_equal_the_in_process_chain(tmp_path, liveseg_home, chain):
    """The same frames through the same chain (the classical one; the default one, the
    shipped model where liveseg-torch is installed), in this process and in a worker
    process (pixels and labels through shared memory): identical labels. The worker stays
    warm for the assembly's next run; closing the assembly leaves nothing in /dev/shm."""
    me = os.getpid()
    cfg = classical_config() if chain == "classical" else parse_config({})
    frames = [Frame(i, disk_image(shape=(96, 128), seed=i)[0]) for i in range(4)]
    frames.append(Frame(4, disk_image(shape=(160, 120), seed=9)[0]))  # a larger slot
    got, started = [], []
    names: set[str] = set()
    parts = assemble(cfg, home=liveseg_home)
    try:
        for kind in ("thread", "process", "process"):
            collect = LabelsCollector()
            proc = parts.processor(
                [ConsumerSpec("labels", collect)],
                workers=WorkersConfig(kind=kind),
                frame_shape=(96, 128),
                record=lambda kind, **fields: started.append((kind, fields.get("pid"))),
            )
            proc.setup(parts.run_info("test", tmp_path))
            for frame in frames:
                proc.process(frame)
            if kind == "process":
                names.update(proc.runner.segment_names)
                assert len(names) == 2 and (_segments(me) == names or not SHM.is_dir())
            proc.finish({})
            assert not collect.errors
            got.append(collect.labels)
    finally:
        parts.close()
    assert not _segments(me)
    for name in names:  # where there is no /dev/shm too: the names no longer open
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)
    thread, *process = got
    assert sorted(thread) == [str(i) for i in range(5)]
    for labels in process:
        assert sorted(labels) == sorted(thread)
        for key, expected in thread.items():
            assert expected.max() > 0
            np.testing.assert_array_equal(labels[key], expected)
    (kind1, pid1), (kind2, pid2) = started
    assert (kind1, kind2) == ("worker_started", "worker_reused") and pid1 == pid2


@pytest.mark.hardware
@pytest.mark.slow
def test_killed_worker_process_fails_its_frame_and_the_run_completes(tmp_path, liveseg_home):
    """A live run on the demo hardware; its worker process gets SIGKILL mid-run. The run
    finishes, the frame the worker held is ``failed`` with the reason, every other frame
    is ``ok`` with labels on disk, and no segment of the run is left in /dev/shm."""
    cfg = _write_config(tmp_path / "run.yaml")
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "liveseg", "run", str(cfg), "-o", str(run_dir)]
    cmd += ["--home", str(liveseg_home)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(e["kind"] == "worker_started" for e in _events(run_dir)), proc)
        pid = next(e["pid"] for e in _events(run_dir) if e["kind"] == "worker_started")
        _wait_for(lambda: _ok_rows(run_dir) >= 3, proc)
        in_use = _segments(proc.pid)  # listed before the kill (empty without /dev/shm)
        _kill(pid)
        _out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    run = liveseg.open_run(run_dir)
    assert run.run_info["status"] == "finished"
    rows = run.frames()
    assert len(rows) == 40
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1, [r["status"] for r in rows]
    index = int(failed[0]["index"])
    exit_code = "-9" if hasattr(signal, "SIGKILL") else r"-?\d+"
    errors = [e for e in run.events("plugin_error") if e["frame"] == index]
    assert len(errors) == 1
    assert re.fullmatch(
        rf"worker process died \(exit {exit_code}\), restarted", errors[0]["error"]
    )
    started = run.events("worker_started")
    assert len(started) == 2 and started[0]["pid"] == pid != started[1]["pid"]
    assert [e["frame"] for e in run.events("worker_restarted")] == [index]
    for row in rows:
        if row["status"] == "ok":
            assert run.labels(int(row["index"])) is not None
    assert sum(run.labels(int(r["index"])).max() > 0 for r in rows if r["status"] == "ok") > 30
    assert run.run_info["summary"]["worker_restarts"] == 1
    assert len(in_use) == 2 or not SHM.is_dir()
    assert not _segments(proc.pid)


@pytest.mark.hardware
@pytest.mark.slow
def test_hung_worker_process_is_replaced_after_the_step_timeout(tmp_path, liveseg_home):
    """A step that never returns fails its frame after ``step_timeout_s``; its worker is
    killed and replaced, so the next frames are segmented again (a thread could not)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hangplugin.py").write_text(PLUGIN)
    cfg = _write_config(
        tmp_path / "hang.yaml",
        sequence={"time_plan": {"interval": 0, "loops": 6}},
        pipeline={
            "steps": [{"backend": "hang_on", "params": {"frame": 2}}],
            "step_timeout_s": 2,
        },
    )
    run_dir = tmp_path / "run"
    done = run_liveseg(
        "run", cfg, "-o", run_dir, "--plugins-dir", plugins, "--home", liveseg_home, timeout=180
    )
    assert done.returncode == 0, done.stderr
    run = liveseg.open_run(run_dir)
    assert [r["status"] for r in run.frames()] == ["ok", "ok", "failed", "ok", "ok", "ok"]
    (error,) = run.events("plugin_error")
    assert error["frame"] == 2 and error["plugin"] == "hangplugin"
    assert error["error"].startswith(
        "step '0:hang_on' took longer than pipeline.step_timeout_s = 2 s; worker process"
    )
    assert error["error"].endswith("killed, restarted")
    assert run.run_info["summary"]["step_timeouts"] == 1


def test_worker_process_that_cannot_build_the_chain_is_a_clear_error(
    make_session, tmp_path, liveseg_host
):
    """A plugin registered in this process only (not installed, not in a plugins dir)
    cannot load in a worker process: the run stops before its first frame, says why, and
    leaves run.json ``aborted`` and no segment behind."""
    register_fake_backend(liveseg_host, "fake")
    cfg = classical_config(
        pipeline={"steps": [{"backend": "fake"}]},
        backlog={"workers": {"kind": "process"}},
    )
    session = make_session(cfg, host=liveseg_host)
    with pytest.raises(LivesegError, match=r"could not build the chain: .*unknown backend 'fake'"):
        session.run(output=tmp_path / "run")
    assert liveseg.open_run(tmp_path / "run").run_info["status"] == "aborted"
    assert not _segments(os.getpid())
