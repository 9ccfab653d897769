"""Triggers without hardware: conditions, selection, built-ins, the queue's ordering."""

from __future__ import annotations

import numpy as np
import pytest
import useq

from liveseg.builtins.triggers import AdaptiveInterval, SkipIfEmpty, StopWhen, VisitObjects
from liveseg.config import SelectionConfig
from liveseg.errors import ConfigError
from liveseg.triggers import (
    SetInterval,
    SkipRest,
    StopRun,
    TriggerContext,
    TriggerQueue,
    TriggerState,
    compile_condition,
    frame_namespace,
    select,
)
from liveseg.triggers.scheduler import _Unit
from liveseg.types import Frame, FrameResult, Proposal


def test_condition_is_vectorised_and_safe():
    cond = compile_condition("area_um2 > 80 and mean_intensity > 1.5 * frame_median")
    ns = {
        "area_um2": np.array([50.0, 100.0, 120.0]),
        "mean_intensity": np.array([9.0, 9.0, 2.0]),
        "frame_median": 2.0,
    }
    assert cond(ns).tolist() == [False, True, False]
    assert compile_condition("not (count < 3) or max(area_um2) > 1e3")(
        {"count": 3, "area_um2": []}
    )
    assert bool(compile_condition("1 < t <= 3")({"t": 3}))
    for bad in (
        "__import__('os')",
        "x.__class__ > 1",
        "max(x).y > 1",
        "'a' == 'a'",
        "[1][0]",
        "lambda: 1",
        "x if y else z",
    ):
        with pytest.raises(ConfigError):
            compile_condition(bad)
    with pytest.raises(NameError, match="unknown name"):
        compile_condition("aera > 1")({"area": 1})
    # Dotted names are keys of the namespace (class_fraction.<class>), not attributes.
    dotted = compile_condition("class_fraction.pore > 0.1 and count > 0")
    assert dotted.names == {"class_fraction.pore", "count"}
    assert bool(dotted({"class_fraction.pore": 0.2, "count": 1}))
    assert not bool(dotted({"class_fraction.pore": 0.05, "count": 1}))
    with pytest.raises(NameError, match=r"class_fraction\.pore"):
        dotted({"count": 1})


def _prop(x, y, frame=0, label=1, priority=0):
    return Proposal(
        event=useq.MDAEvent(x_pos=x, y_pos=y),
        source="t",
        frame_index=frame,
        label=label,
        target_xy=(x, y),
        priority=priority,
    )


def test_select_dedupe_limits_and_rates():
    cfg = SelectionConfig(
        dedupe_radius_um=5,
        max_per_frame=2,
        max_per_minute=3,
        stage_limits={"x": (-100, 100), "y": None},
    )
    history = [_prop(0, 0, frame=0, label=7)]
    props = [_prop(3, 0), _prop(200, 0), _prop(50, 50), _prop(52, 50), _prop(-50, 0), _prop(9, 9)]
    out = select(props, history, cfg, [], now=0.0)
    reasons = {p.target_xy: (ok, why) for p, ok, why in out}
    assert reasons[(3, 0)][0] is False and "frame 0, label 7" in reasons[(3, 0)][1]
    assert "outside stage limits: x=200.0" in reasons[(200, 0)][1]
    assert reasons[(50, 50)][0] is True
    assert reasons[(52, 50)][0] is False and "duplicate" in reasons[(52, 50)][1]
    assert reasons[(-50, 0)][0] is True
    assert "max_per_frame=2" in reasons[(9, 9)][1]
    # per minute: 2 accepted 10 s ago + 1 new = 3, the next is rejected
    out = select([_prop(-90, 1), _prop(90, 1)], [], cfg, [0.0, 0.0], now=10.0)
    assert [ok for _, ok, _ in out] == [True, False]
    assert "max_per_minute=3" in out[1][2]
    # outside the 60 s window nothing counts
    out = select([_prop(-90, 1), _prop(90, 1)], [], cfg, [0.0, 0.0], now=61.0)
    assert [ok for _, ok, _ in out] == [True, True]


def _frame(labels_xy, *, t=0, p=0, index=0, z=0.0):
    img = np.zeros((64, 64), dtype=np.uint16)
    ev = useq.MDAEvent(index={"t": t, "p": p}, x_pos=0, y_pos=0, z_pos=z)
    return Frame(index=index, image=img, event=ev, position=p, stage_xy=(0, 0), stage_z=z)


def _objects(xy, area=100.0, edge=False):
    n = len(xy)
    return {
        "label": np.arange(1, n + 1),
        "area_px": np.full(n, area),
        "area_um2": np.full(n, area),
        "centroid_x_um": np.array([x for x, _ in xy], dtype=float),
        "centroid_y_um": np.array([y for _, y in xy], dtype=float),
        "mean_intensity": np.ones(n),
        "touches_edge": np.array([edge] * n),
    }


OK = FrameResult(labels=np.zeros((64, 64), np.uint32))


def test_visit_objects_builds_centred_substacks():
    trig = VisitObjects(
        VisitObjects.Params(
            filter="area_um2 > 50", z_range_um=2, z_step_um=1, channels=["DAPI", "FITC"]
        ),
        TriggerContext("visit_objects"),
    )
    objs = _objects([(10, -5), (30, 40)])
    objs["area_um2"] = np.array([40.0, 100.0])
    out = trig.propose(_frame([]), OK, objs, TriggerState())
    assert len(out) == 1
    p = out[0]
    assert p.label == 2 and p.target_xy == (30, 40)
    assert len(p.events) == 6  # 2 channels x 3 planes
    assert {(e.x_pos, e.y_pos) for e in p.events} == {(30, 40)}
    assert sorted({e.z_pos for e in p.events}) == [-1.0, 0.0, 1.0]
    assert {e.channel.config for e in p.events} == {"DAPI", "FITC"}


def test_skip_adaptive_stop():
    state = TriggerState()
    skip = SkipIfEmpty(SkipIfEmpty.Params(min_count=2), TriggerContext("s"))
    assert skip.propose(_frame([], t=3, p=1, index=5), OK, _objects([(0, 0)]), state) == [
        SkipRest(1, 3, "count 1 < 2")
    ]
    assert skip.propose(_frame([]), OK, _objects([(0, 0), (5, 5)]), state) is None

    ada = AdaptiveInterval(
        AdaptiveInterval.Params(condition="count >= 2", fast_interval_s=0.1, release_frames=2),
        TriggerContext("a"),
    )
    seq = [2, 2, 0, 3, 0, 0, 0]
    got = [ada.propose(_frame([]), OK, _objects([(i, 0) for i in range(n)]), state) for n in seq]
    kinds = [None if g is None else g[0].interval_s for g in got]
    assert kinds == [0.1, None, None, None, None, None, None]
    assert isinstance(got[5][0], SetInterval)

    stop = StopWhen(StopWhen.Params(condition="objects_total >= 5"), TriggerContext("st"))
    state.objects_total = 4
    assert stop.propose(_frame([]), OK, {}, state) is None
    state.objects_total = 5
    assert isinstance(stop.propose(_frame([]), OK, {}, state)[0], StopRun)


def test_frame_namespace_names():
    ns = frame_namespace(_frame([], t=2, p=1), _objects([(1, 1)]), TriggerState())
    for name in ("count", "frame_median", "t", "p", "objects_total", "area_um2"):
        assert name in ns
    assert ns["t"] == 2 and ns["p"] == 1 and ns["count"] == 1


def test_queue_runs_triggered_work_at_the_next_boundary_and_skips():
    seq = useq.MDASequence(stage_positions=[(0, 0), (10, 0)], z_plan={"range": 2, "step": 1})
    skipped = []
    q = TriggerQueue(seq, SelectionConfig(), on_skip=skipped.append)
    first = next(q)
    assert dict(first.index) == {"p": 0, "z": 0}
    trig = [useq.MDAEvent(x_pos=5, y_pos=5, metadata={"liveseg": {"series": "s-1"}})] * 2
    q.add(_Unit("s-1", list(trig), _prop(5, 5), None, 0.0))
    q.apply(SkipRest(1, 0))
    out = [next(q) for _ in range(4)]
    series = [e.metadata.get("liveseg", {}).get("series") for e in out]
    assert series[:2] == ["s-1", "s-1"]
    assert [dict(e.index) for e in out[2:]] == [{"p": 0, "z": 1}, {"p": 0, "z": 2}]
    q.frames_evaluated = q.frames_yielded  # nothing left to evaluate
    assert list(q) == []
    assert skipped == [3] and q.base_skipped == 3  # all of position 1 (it had not started)
    q.apply(StopRun("enough"))
    assert q.stop_reason == "enough"
