"""RunControl on the real demo hardware, without any GUI."""

from __future__ import annotations

import json
from typing import Any

import pytest

from liveseg.config import parse_config
from liveseg.control import ControlError, RunControl, RunState
from liveseg.defaults import CLASSICAL_STEPS
from liveseg.retrain.queue import RetrainQueue
from liveseg.store import RunReader

pytestmark = pytest.mark.hardware


def _config(tmp_path, **extra: Any):
    return parse_config(
        {
            "name": "control",
            "hardware": {
                "mm_config": "demo",
                "exposure_ms": 5,
                "properties": [
                    ["Camera", "OnCameraCCDXSize", 128],
                    ["Camera", "OnCameraCCDYSize", 128],
                ],
                "simulate": {"n_objects": 200, "extent_um": 600, "radius_um": [5, 8], "seed": 2},
            },
            "sequence": {
                "stage_positions": [{"x": 0, "y": 0, "z": 0}, {"x": 100, "y": -80, "z": 0}],
                "time_plan": {"interval": 0, "loops": 2},
                "axis_order": "tpcz",
            },
            "pipeline": {"steps": [s.model_dump() for s in CLASSICAL_STEPS]},
            "plugins": {"deny": ["torch", "cellpose"]},
            "output": str(tmp_path / "runs"),
            **extra,
        }
    )


class Recorder:
    """Every emission of a RunControl's signal group, by signal name."""

    def __init__(self, control: RunControl) -> None:
        self.seen: dict[str, list[tuple[Any, ...]]] = {}
        for name in ("started", "acquired", "segmented", "flagged", "triggered", "error"):
            getattr(control.signals, name).connect(self._slot(name))
        control.signals.finished.connect(self._slot("finished"))
        control.signals.state_changed.connect(self._slot("state_changed"))

    def _slot(self, name: str):
        def slot(*args: Any) -> None:
            self.seen.setdefault(name, []).append(args)

        return slot

    def __getitem__(self, name: str) -> list[tuple[Any, ...]]:
        return self.seen.get(name, [])


def test_start_runs_in_the_background_and_the_signals_tell_the_run(make_session, tmp_path) -> None:
    session = make_session(_config(tmp_path))
    control = RunControl(session)
    seen = Recorder(control)
    assert control.state is RunState.IDLE and control.stats().state is RunState.IDLE
    control.start(output=tmp_path / "run")
    assert control.state is RunState.RUNNING  # at once: start() does not block
    with pytest.raises(ControlError, match="already running"):
        control.start()
    summary = control.wait(120)
    assert summary is not None and "error" not in summary
    assert control.state is RunState.FINISHED
    assert [s for (s,) in seen["state_changed"]] == [RunState.RUNNING, RunState.FINISHED]
    assert seen["started"] == [(str(tmp_path / "run"),)]
    assert seen["finished"] == [(summary,)]

    reader = RunReader(tmp_path / "run")
    rows = reader.frames()
    assert [f.index for (f,) in seen["acquired"]] == [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [f.position for (f,) in seen["acquired"]] == [r["position"] for r in rows]
    segmented = sorted((f.index, f.position, len(obj["label"])) for f, _, obj in seen["segmented"])
    assert segmented == [(r["index"], r["position"], r["count"]) for r in rows]
    stats = control.stats()
    assert (stats.acquired, stats.segmented, stats.skipped, stats.failed) == (4, 4, 0, 0)
    assert stats.backlog == 0 and stats.flagged == 0
    assert stats.last_acquired == (3, 1) and stats.last_segmented is not None
    assert stats.run_dir == str(tmp_path / "run") and stats.error is None
    assert stats.segment_ms_mean is not None and stats.latency_ms_p50 is not None
    # a second run after the first: counts start again
    control.start(output=tmp_path / "run2")
    assert control.wait(120) is not None
    assert control.stats().acquired == 4 and control.run_dir == tmp_path / "run2"
    control.close()
    assert [s for (s,) in seen["state_changed"]][-2:] == [RunState.RUNNING, RunState.FINISHED]


def test_a_frame_flagged_twice_is_one_queue_item(make_session, tmp_path, liveseg_home) -> None:
    session = make_session(_config(tmp_path))
    control = RunControl(session)
    seen = Recorder(control)
    control.start(output=tmp_path / "run")
    control.wait(120)
    first = control.flag(3, "missed a dim cell")
    assert first.added and first.flag is not None and first.flag.frame_index == 3
    again = control.flag(3, "pressed F too")
    assert not again.added and again.flag is None
    assert again.message == "frame 3 is already flagged: not added again"
    items = RetrainQueue(liveseg_home).items()
    assert [(i.frame_index, i.reason) for i in items] == [(3, "missed a dim cell")]
    assert [e["frame"] for e in RunReader(tmp_path / "run").events("flag")] == [3]
    assert len(seen["flagged"]) == 1 and control.stats().flagged == 1
    assert control.is_flagged(3) and not control.is_flagged(2)
    assert control.flag(2).added  # another frame still goes in
    control.close()


def test_a_trigger_record_reaches_the_triggered_signal(make_session, tmp_path) -> None:
    config = _config(
        tmp_path,
        sequence={"time_plan": {"interval": 0, "loops": 50}},
        triggers=[{"trigger": "stop_when", "params": {"condition": "frames >= 2"}}],
    )
    control = RunControl(make_session(config))
    seen = Recorder(control)
    control.start(output=tmp_path / "run")
    summary = control.wait(120)
    assert summary is not None and "error" not in summary
    kinds = [rec["kind"] for (rec,) in seen["triggered"]]
    assert "stop_requested" in kinds
    stop = next(rec for (rec,) in seen["triggered"] if rec["kind"] == "stop_requested")
    on_disk = [e for e in RunReader(tmp_path / "run").events() if e["kind"] == "stop_requested"]
    assert [stop["frame"]] == [e["frame"] for e in on_disk]
    assert summary["frames_acquired"] < 50
    control.close()


def test_a_run_that_cannot_start_fails_cleanly(make_session, tmp_path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("someone's data")
    control = RunControl(make_session(_config(tmp_path)))
    seen = Recorder(control)
    control.start(output=out)
    summary = control.wait(60)
    assert summary is not None and "exists and is not empty" in summary["error"]
    assert control.state is RunState.FAILED
    stats = control.stats()
    assert stats.state is RunState.FAILED and "not empty" in (stats.error or "")
    assert [rec["kind"] for (rec,) in seen["error"]] == ["run_failed"]
    assert json.loads(json.dumps(seen["finished"][0][0])) == summary
    assert (out / "keep.txt").read_text() == "someone's data"
    # a failed run leaves the control ready for the next one
    control.start(output=tmp_path / "ok")
    summary = control.wait(120)
    assert summary is not None and "error" not in summary
    assert control.state is RunState.FINISHED
    control.close()


def test_latest_policy_every_frame_is_counted_once(make_session, tmp_path) -> None:
    config = _config(
        tmp_path,
        sequence={"time_plan": {"interval": 0, "loops": 12}},
        backlog={"policy": "latest", "queue_size": 1, "workers": 1},
    )
    control = RunControl(make_session(config))
    control.start(output=tmp_path / "run")
    summary = control.wait(120)
    assert summary is not None and "error" not in summary
    rows = RunReader(tmp_path / "run").frames()
    stats = control.stats()
    assert stats.acquired == len(rows) == 12
    assert stats.segmented == sum(r["status"] == "ok" for r in rows)
    assert stats.skipped == sum(r["status"] == "skipped" for r in rows)
    assert stats.segmented + stats.skipped + stats.failed == stats.acquired
    assert stats.backlog == 0
    control.close()


# A run that segments no frame: the session's summary takes the mean/percentile of
# nothing (numpy warns; reported to the frame-path owner). The run itself is fine.
def test_stop_and_pause_right_after_start_are_not_lost(make_session, tmp_path) -> None:
    # The runner ignores cancel/pause until it runs; the session prepares first.
    config = _config(tmp_path, sequence={"time_plan": {"interval": 0.05, "loops": 400}})
    control = RunControl(make_session(config))
    control.start(output=tmp_path / "run")
    control.pause()
    assert control.state is RunState.PAUSED
    control.stop()
    assert control.state is RunState.STOPPING
    summary = control.wait(120)
    assert summary is not None and "error" not in summary
    assert summary["frames_acquired"] < 10  # not the 400 of the plan
    assert control.state is RunState.FINISHED
    control.close()
