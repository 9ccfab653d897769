"""The one frame path: plugin sinks see every frame once, a hung backend times out.

The plugin is a file in a ``--plugins-dir`` (or the config's ``plugins.dir``), enabled
with ``sinks:``, as a third party would ship it; runs go through the CLI.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import textwrap
import threading

import pytest
import tifffile
from click.testing import CliRunner

import liveseg
from liveseg.cli import main
from liveseg.hookspecs import hookimpl
from liveseg.testing import disk_image, run_liveseg

PLUGIN = textwrap.dedent(
    '''
    """A test plugin: a slow backend that can fail or hang, and a sink that tallies."""
    import json
    import threading
    import time

    from liveseg.hookspecs import hookimpl
    from liveseg.types import FrameResult, empty_labels


    class Flaky:
        def __init__(self, params, ctx):
            self.params = dict(params)
            self.calls = 0

        def segment(self, frame, upstream):
            self.calls += 1
            if self.params.get("hang"):
                threading.Event().wait()  # a native call that never returns
            if self.params.get("fail_first") and self.calls == 1:
                raise RuntimeError("flaky fails its first frame")
            time.sleep(float(self.params.get("delay", 0.0)))
            labels = empty_labels(frame.shape)
            labels[10:20, 10:20] = 1
            return FrameResult(labels=labels)

        def close(self):
            pass


    class Tally:
        def __init__(self, params, ctx):
            self.path = params["path"]

        def _write(self, **rec):
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\\n")

        def setup(self, run):
            self._write(call="setup", entry_point=run["entry_point"], chain=run["chain"])

        def frame(self, frame, result, objects):
            self._write(
                call="frame",
                index=frame.index,
                name=frame.name,
                status=result.status.value,
                objects=len(objects.get("label", ())),
            )

        def finish(self, summary):
            self._write(call="finish")


    @hookimpl
    def register_backends(register):
        register("flaky", Flaky)


    @hookimpl
    def register_sinks(register):
        register("tally", Tally)
    '''
)


@pytest.fixture
def plugins_dir(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "flakyplugin.py").write_text(PLUGIN)
    return d


def _config(tmp_path, name, tally, *, steps_params, **extra):
    data = {
        "name": "sinks",
        "hardware": {"mm_config": "demo", "exposure_ms": 5},
        "sequence": {"time_plan": {"interval": 0, "loops": 20}},
        "pipeline": {"steps": [{"backend": "flaky", "params": steps_params}]},
        "sinks": [{"sink": "tally", "params": {"path": str(tally)}}],
        **extra,
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _calls(tally):
    return [json.loads(line) for line in tally.read_text().splitlines()]


def _lifecycle(calls):
    return [(c["call"], c.get("entry_point")) for c in calls if c["call"] != "frame"]


def _frames(calls):
    return [c for c in calls if c["call"] == "frame"]


@pytest.mark.hardware
@pytest.mark.slow
def test_sink_sees_every_live_frame_once_then_every_resegmented_one(
    tmp_path, plugins_dir, liveseg_home
):
    tally = tmp_path / "live.jsonl"
    cfg = _config(
        tmp_path,
        "live.yaml",
        tally,
        steps_params={"delay": 0.1, "fail_first": True},
        backlog={"policy": "latest"},
    )
    run_dir = tmp_path / "run"
    runner = CliRunner()
    args = ["run", str(cfg), "-o", str(run_dir), "--plugins-dir", str(plugins_dir), "--json"]
    out = runner.invoke(main, args)
    assert out.exit_code == 0, out.output
    calls = _calls(tally)
    assert _lifecycle(calls) == [("setup", "run"), ("finish", None)]
    frames = _frames(calls)
    run = liveseg.open_run(run_dir)
    acquired = run.run_info["summary"]["frames_acquired"]
    assert sorted(f["index"] for f in frames) == list(range(acquired))
    statuses = collections.Counter(f["status"] for f in frames)
    assert statuses["failed"] == 1 and statuses["skipped"] > 0 and statuses["ok"] > 0
    by_row = {r["index"]: r["status"] for r in run.frames()}
    assert {f["index"]: f["status"] for f in frames} == by_row

    # resegment: the skipped and the failed frames, each once, now segmented
    tally2 = tmp_path / "reseg.jsonl"
    cfg2 = _config(
        tmp_path,
        "reseg.yaml",
        tally2,
        steps_params={},
        plugins={"dir": str(plugins_dir)},
    )
    out = runner.invoke(main, ["resegment", str(run_dir), "--config", str(cfg2)])
    assert out.exit_code == 0, out.output
    calls2 = _calls(tally2)
    assert _lifecycle(calls2) == [("setup", "resegment"), ("finish", None)]
    todo = sorted(i for i, s in by_row.items() if s != "ok")
    assert sorted(f["index"] for f in _frames(calls2)) == todo
    assert {f["status"] for f in _frames(calls2)} == {"ok"}


def _images(tmp_path, n=3, broken=False):
    """``n`` small images in tmp/in (and, with ``broken``, a .tif that is not an image)."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(n):
        tifffile.imwrite(src / f"img{i}.tif", disk_image((64, 64), [(32, 32)], seed=i)[0])
    if broken:
        (src / f"img{n}.tif").write_text("not a TIFF")
    return src


def test_sink_sees_every_segment_image_once(tmp_path, plugins_dir, liveseg_home):
    src = _images(tmp_path, broken=True)
    tally = tmp_path / "segment.jsonl"
    cfg = _config(
        tmp_path,
        "seg.yaml",
        tally,
        steps_params={"fail_first": True},
        plugins={"dir": str(plugins_dir)},
    )
    images = sorted(str(p) for p in src.iterdir())
    out = CliRunner().invoke(
        main, ["segment", *images, "-o", str(tmp_path / "out"), "--config", str(cfg)]
    )
    assert out.exit_code == 1  # the first image failed, the last is broken: it says so
    calls = _calls(tally)
    assert _lifecycle(calls) == [("setup", "segment"), ("finish", None)]
    frames = _frames(calls)
    assert [(f["name"], f["status"]) for f in frames] == [
        ("img0", "failed"),
        ("img1", "ok"),
        ("img2", "ok"),
        ("img3", "failed"),  # unreadable: still one frame() call
    ]
    assert [f["objects"] for f in frames] == [0, 1, 1, 0]


def _batch_with_tally(tmp_path, plugins_dir, home, n, **kwargs):
    """``run_batch`` of ``n`` images with the tally sink enabled; (summary, sink calls)."""
    from liveseg.batch import run_batch
    from liveseg.config import StepConfig, parse_config

    src = _images(tmp_path, n, broken=True)
    tally = tmp_path / "batch.jsonl"
    cfg = parse_config(
        {
            "plugins": {"dir": str(plugins_dir)},
            "sinks": [{"sink": "tally", "params": {"path": str(tally)}}],
        }
    )
    steps = [StepConfig(backend="flaky")]
    summary = run_batch(
        src, tmp_path / "out", steps=steps, home=home, config=cfg, progress=False, **kwargs
    )
    return summary, _calls(tally)


def test_sink_sees_every_batch_image_once(tmp_path, plugins_dir, liveseg_home):
    summary, calls = _batch_with_tally(tmp_path, plugins_dir, liveseg_home, 4)
    assert summary["ok"] == 4 and summary["failed"] == 1  # img4 is not an image
    assert _lifecycle(calls) == [("setup", "batch"), ("finish", None)]
    frames = sorted((f["name"], f["status"]) for f in _frames(calls))
    assert frames == [*((f"img{i}", "ok") for i in range(4)), ("img4", "failed")]


HANG_CONFIG = {
    "name": "hang",
    "hardware": {"mm_config": "demo", "exposure_ms": 5},
    "sequence": {"time_plan": {"interval": 0, "loops": 6}},
    "pipeline": {"steps": [{"backend": "flaky", "params": {"hang": True}}], "step_timeout_s": 1},
}


@pytest.mark.hardware
@pytest.mark.slow
def test_backend_that_hangs_fails_its_frames_and_the_run_finishes(
    tmp_path, plugins_dir, liveseg_home
):
    cfg = tmp_path / "hang.yaml"
    cfg.write_text(json.dumps(HANG_CONFIG))
    run_dir = tmp_path / "run"
    proc = run_liveseg(
        "run",
        cfg,
        "-o",
        run_dir,
        "--plugins-dir",
        plugins_dir,
        "--home",
        liveseg_home,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    run = liveseg.open_run(run_dir)
    assert run.run_info["status"] == "finished"
    rows = run.frames()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"failed"}
    errors = run.events("plugin_error")
    assert len(errors) == 6 and all(e["plugin"] == "flakyplugin" for e in errors)
    assert "took longer than pipeline.step_timeout_s = 1 s" in errors[0]["error"]
    assert all("has not returned from frame 0" in e["error"] for e in errors[1:])
    assert run.run_info["summary"]["step_timeouts"] == 1
    assert (run_dir / "objects.parquet").is_file()  # the store was closed


def test_offline_entry_points_do_not_import_the_hardware_session():
    code = (
        "import sys, liveseg.offline, liveseg.batch, liveseg.retrain.validate\n"
        "assert 'liveseg.session' not in sys.modules, 'offline imports the session'\n"
        "assert 'pymmcore_plus' not in sys.modules, 'offline imports pymmcore_plus'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class _Hooks:
    """Plugin hooks a session calls: a sink that raises, propose_events, notifications."""

    def __init__(self):
        self.proposed = []
        self.processed = []
        self.started = []

    @staticmethod
    def _factory(params, ctx):
        from liveseg.processing import BaseConsumer

        class Raising(BaseConsumer):
            def frame(self, frame, result, objects):
                if frame.index == 1:
                    raise OSError("sink lost its connection")

        return Raising()

    @hookimpl
    def register_sinks(self, register):
        register("raising", self._factory)

    @hookimpl
    def propose_events(self, frame, result, history):
        self.proposed.append(frame.index)
        return []

    @hookimpl
    def frame_processed(self, frame, result):
        self.processed.append((frame.index, result.status.value))

    @hookimpl
    def sequence_started(self, run_dir, config):
        self.started.append(run_dir)


@pytest.mark.hardware
def test_raising_sink_is_recorded_and_every_event_is_signalled(make_session, tmp_path):
    from liveseg.plugins import PluginHost
    from liveseg.testing import classical_config, register_fake_backend

    host = PluginHost(entry_points=False)
    register_fake_backend(host, fail_on={2})
    hooks = _Hooks()
    host.register(hooks, name="hooks")
    cfg = classical_config(
        pipeline={"steps": [{"backend": "fake"}]},
        sequence={"time_plan": {"interval": 0, "loops": 4}},
        sinks=[{"sink": "raising"}],
    )
    session = make_session(cfg, host=host)
    signalled = []
    session.events.event_recorded.connect(signalled.append)
    summary = session.run(output=tmp_path / "run")
    assert summary["frames_acquired"] == 4 and summary["frames_failed"] == 1
    run = liveseg.open_run(tmp_path / "run")
    assert run.run_info["status"] == "finished"  # a sink is not critical
    [err] = run.events("consumer_error")
    assert (err["consumer"], err["plugin"], err["frame"]) == ("raising", "hooks", 1)
    assert "sink lost its connection" in err["error"]
    assert summary["consumer_errors"]["raising"]["errors"] == 1
    # propose_events runs without any `triggers:` in the config, on every ok base frame
    assert sorted(hooks.proposed) == [0, 1, 3]
    assert sorted(hooks.processed) == [(0, "ok"), (1, "ok"), (2, "failed"), (3, "ok")]
    assert hooks.started == [str(tmp_path / "run")]
    on_disk = [(e["kind"], e.get("frame")) for e in run.events()]
    assert [(e["kind"], e.get("frame")) for e in signalled] == on_disk
    assert ("plugin_error", 2) in on_disk


@pytest.mark.hardware
def test_request_stop_ends_the_run_cleanly(make_session, tmp_path):
    from liveseg.testing import classical_config

    cfg = classical_config(sequence={"time_plan": {"interval": 0.05, "loops": 200}})
    session = make_session(cfg)

    def stop_after_three(frame, result, objects):
        if frame.index == 2:
            threading.Thread(target=session.request_stop).start()  # as a GUI button would

    session.events.frame_segmented.connect(stop_after_three)
    summary = session.run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    assert run.run_info["status"] == "interrupted"
    assert 3 <= summary["frames_acquired"] < 200
    assert len(run.frames()) == summary["frames_acquired"]
    assert summary["frames_segmented"] == summary["frames_acquired"]


BROKEN_REGISTRATION = textwrap.dedent(
    """
    from liveseg.hookspecs import hookimpl

    def _broken(name):
        def boom(register):
            raise RuntimeError("broken registration")

        return hookimpl(boom, specname=name)

    for _name in HOOKS:
        globals()[_name] = _broken(_name)
    """
)


@pytest.mark.hardware
def test_run_completes_when_a_plugin_raises_in_every_register_hook(tmp_path, liveseg_home):
    from liveseg import hookspecs

    hooks = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "brokenreg.py").write_text(f"HOOKS = {hooks!r}\n" + BROKEN_REGISTRATION)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        json.dumps(
            {
                "hardware": {"mm_config": "demo", "exposure_ms": 5},
                "sequence": {"time_plan": {"interval": 0, "loops": 2}},
                "pipeline": {"steps": [{"backend": "threshold"}]},
            }
        )
    )
    run_dir = tmp_path / "run"
    args = ["run", str(cfg), "-o", str(run_dir), "--plugins-dir", str(plugins)]
    out = CliRunner().invoke(main, [*args, "--home", str(liveseg_home)])
    assert out.exit_code == 0, out.output
    run = liveseg.open_run(run_dir)
    assert run.run_info["summary"]["frames_segmented"] == 2
    errors = [e for e in run.events("plugin_error") if e["plugin"] == "brokenreg"]
    assert sorted(e["hook"] for e in errors) == hooks
    assert all("broken registration" in e["error"] for e in errors)


@pytest.mark.slow
def test_sink_sees_every_image_once_on_dask(tmp_path, plugins_dir, liveseg_home):
    summary, calls = _batch_with_tally(tmp_path, plugins_dir, liveseg_home, 6, workers=2)
    assert summary["ok"] == 6 and summary["failed"] == 1
    assert sorted(f["name"] for f in _frames(calls)) == [f"img{i}" for i in range(7)]
    lifecycle = _lifecycle(calls)  # one setup and one finish per Dask task (chunk)
    assert lifecycle.count(("setup", "batch")) == lifecycle.count(("finish", None)) >= 1
