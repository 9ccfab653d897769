"""Built-in flag policies: low confidence, count outlier, disagreement."""

from __future__ import annotations

import numpy as np
import pytest

from liveseg.builtins.flags import CountOutlier, Disagreement, LowConfidence, agreement
from liveseg.plugins import PluginHost
from liveseg.types import LABEL_DTYPE, Frame, FrameResult


def _labels(n: int, shape=(64, 64)) -> np.ndarray:
    lab = np.zeros(shape, LABEL_DTYPE)
    for i in range(n):
        r, c = divmod(i, 6)
        lab[2 + r * 10 : 8 + r * 10, 2 + c * 10 : 8 + c * 10] = i + 1
    return lab


def _frame(i: int = 0, lab: np.ndarray | None = None) -> Frame:
    img = np.zeros((64, 64), np.uint16) if lab is None else (lab > 0).astype(np.uint16) * 1000
    return Frame(index=i, image=img)


def test_policies_are_registered_with_params():
    policies = PluginHost(entry_points=False).flag_policies()
    assert {"low_confidence", "count_outlier", "disagreement"} <= set(policies)
    p = policies["count_outlier"].Params.model_validate({"window": 5})
    assert p.window == 5


def test_low_confidence():
    pol = LowConfidence(LowConfidence.Params(threshold=0.5, max_fraction=0.3))
    lab = _labels(4)
    sure = FrameResult(labels=lab, scores={1: 0.9, 2: 0.95, 3: 0.8, 4: 0.9})
    assert pol.check(_frame(), sure) is None
    unsure = FrameResult(labels=lab, scores={1: 0.9, 2: 0.2, 3: 0.3, 4: 0.9})
    reason = pol.check(_frame(), unsure)
    assert reason is not None and "50%" in reason
    low_mean = FrameResult(labels=lab, scores={1: 0.4, 2: 0.3, 3: 0.45, 4: 0.2})
    assert "mean score" in (pol.check(_frame(), low_mean) or "")
    # Backends without scores never trigger it.
    assert pol.check(_frame(), FrameResult(labels=lab)) is None


def test_count_outlier_rolling_median():
    pol = CountOutlier(CountOutlier.Params(window=10, min_history=5, rel=0.5, min_abs=3))
    counts = [10, 11, 9, 10, 10, 11, 10]
    for i, n in enumerate(counts):
        assert pol.check(_frame(i), FrameResult(labels=_labels(n))) is None
    reason = pol.check(_frame(7), FrameResult(labels=_labels(2)))
    assert reason is not None and "2 objects" in reason and "median 10" in reason
    assert pol.check(_frame(8), FrameResult(labels=_labels(30))) is not None
    assert pol.check(_frame(9), FrameResult(labels=_labels(12))) is None
    # Not enough history: never flags.
    fresh = CountOutlier(CountOutlier.Params(min_history=5))
    assert fresh.check(_frame(0), FrameResult(labels=_labels(1))) is None


def test_agreement_score():
    a = _labels(4)
    assert agreement(a, a) == 1.0
    half = a.copy()
    half[half > 2] = 0
    assert abs(agreement(a, half) - 0.5) < 1e-9
    assert agreement(a, np.zeros_like(a)) == 0.0
    assert agreement(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_disagreement_against_threshold_backend():
    lab = _labels(6)
    frame = _frame(0, lab)
    pol = Disagreement(Disagreement.Params(backend="threshold", min_agreement=0.6))
    # The chain found the same objects the threshold backend finds: no flag.
    assert pol.check(frame, FrameResult(labels=lab)) is None
    # The chain missed most objects: flagged, with both counts in the reason.
    missed = lab.copy()
    missed[missed > 1] = 0
    reason = pol.check(frame, FrameResult(labels=missed))
    assert reason is not None and "1 vs 6 objects" in reason
    pol.close()


@pytest.mark.hardware
@pytest.mark.slow
def test_session_policies_and_cli_flag(make_session, liveseg_home, tmp_path):
    """A real (demo-hardware) run: a policy flags frames, the operator flags one after."""
    import json

    from click.testing import CliRunner

    from liveseg.cli import main
    from liveseg.retrain.queue import RetrainQueue
    from liveseg.testing import classical_config

    cfg = classical_config(
        hardware={
            "mm_config": "demo",
            "exposure_ms": 5,
            "simulate": {"n_objects": 40, "extent_um": 500, "seed": 1},
        },
        # The second opinion finds nothing (min_contrast above any frame's range), so
        # every frame where the chain found objects disagrees completely.
        flags=[
            {
                "policy": "disagreement",
                "params": {"backend": "threshold", "params": {"min_contrast": 2.0}},
            }
        ],
    )
    session = make_session(cfg)
    summary = session.run(output=tmp_path / "run")
    assert summary["frames_segmented"] == 3
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    auto = [e for e in events if e["kind"] == "flag" and e["source"] == "disagreement"]
    assert len(auto) == 3 and "agreement 0.00" in auto[0]["reason"]
    q = RetrainQueue(liveseg_home)
    items = q.items()
    assert len(items) == 3 and all(it.predicted().max() > 0 for it in items)
    assert {it.source for it in items} == {"disagreement"}

    res = CliRunner().invoke(
        main,
        [
            "flag",
            str(tmp_path / "run"),
            "--frame",
            "1",
            "--reason",
            "missed cells",
            "--home",
            str(liveseg_home),
        ],
    )
    assert res.exit_code == 0, res.output
    # Frame 1 was flagged automatically already: it stays one item, the new reason is noted.
    assert f"frame 1 is already flagged: queue item {items[1].id}" in res.output
    assert len(q.items()) == 3
    assert "flagged again (operator): missed cells" in q.history(items[1].id)[-1]["why"]
    res = CliRunner().invoke(
        main, ["flag", str(tmp_path / "run"), "--frame", "12", "--home", str(liveseg_home)]
    )
    assert res.exit_code == 2
    assert "frame 12 is not in run" in res.output and "frames 0..2 (3 frames)" in res.output
    # A frame nobody flagged yet becomes an item, and the run's events say so.
    frame2 = items[2].image()
    q.drop(items[2].id)
    res = CliRunner().invoke(
        main,
        [
            "flag",
            str(tmp_path / "run"),
            "--frame",
            "2",
            "--reason",
            "dim",
            "--home",
            str(liveseg_home),
        ],
    )
    assert res.exit_code == 0, res.output
    item = q.items()[-1]
    assert item.reason == "dim" and item.frame_index == 2
    np.testing.assert_array_equal(item.image(), frame2)
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "flag" and events[-1]["item"] == item.id
