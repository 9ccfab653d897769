"""Tests of IoU matching and average precision."""

from __future__ import annotations

import numpy as np
import pytest

from liveseg.metrics import aggregate, average_precision, iou_matrix, match


def _square(shape, y, x, s, value, out=None):
    out = np.zeros(shape, dtype=np.uint32) if out is None else out
    out[y : y + s, x : x + s] = value
    return out


def test_perfect_match_any_ids():
    true = _square((20, 20), 2, 2, 5, 1)
    _square((20, 20), 10, 10, 6, 2, true)
    pred = np.where(true == 1, 7, np.where(true == 2, 3, 0))
    r = average_precision(true, pred)
    assert r.ap == {0.5: 1.0, 0.75: 1.0, 0.9: 1.0}
    assert r.mean_matched_iou == pytest.approx(1.0)
    assert r.n_true == 2 and r.n_pred == 2


def test_iou_matrix_values():
    true = _square((10, 10), 0, 0, 4, 1)  # 16 px
    pred = _square((10, 10), 0, 2, 4, 1)  # overlap 8 px, union 24
    np.testing.assert_allclose(iou_matrix(true, pred), [[8 / 24]])


def test_partial_overlap_counts_by_threshold():
    true = _square((20, 20), 0, 0, 10, 1)  # 100 px
    pred = _square((20, 20), 0, 0, 8, 1)  # 64 px inside: IoU 0.64
    r = average_precision(true, pred, thresholds=(0.5, 0.75))
    assert r.tp == {0.5: 1, 0.75: 0}
    assert r.ap[0.5] == 1.0
    assert r.ap[0.75] == 0.0  # 0 TP, 1 FP, 1 FN
    assert r.mean_matched_iou == pytest.approx(0.64)


def test_false_positive_and_negative():
    true = _square((30, 30), 0, 0, 5, 1)
    _square((30, 30), 20, 20, 5, 2, true)
    pred = _square((30, 30), 0, 0, 5, 1)
    _square((30, 30), 10, 10, 5, 2, pred)  # wrong place
    r = average_precision(true, pred, thresholds=(0.5,))
    assert (r.tp[0.5], r.fp[0.5], r.fn[0.5]) == (1, 1, 1)
    assert r.ap[0.5] == pytest.approx(1 / 3)
    assert r.precision[0.5] == pytest.approx(0.5)
    assert r.recall[0.5] == pytest.approx(0.5)


def test_one_to_one_matching_when_merged():
    true = _square((20, 20), 0, 0, 5, 1)
    _square((20, 20), 0, 5, 5, 2, true)
    pred = (true > 0).astype(np.uint32)  # one merged object, IoU 0.5 with each
    rows, cols, ious = match(true, pred)
    assert rows.size == 1 and cols.size == 1
    assert ious[0] == pytest.approx(0.5)


def test_empty_images():
    empty = np.zeros((8, 8), np.uint32)
    obj = _square((8, 8), 1, 1, 3, 1)
    both = average_precision(empty, empty)
    assert both.ap[0.5] == 1.0 and both.n_true == 0
    assert np.isnan(both.mean_matched_iou)
    miss = average_precision(obj, empty)
    assert miss.ap[0.5] == 0.0 and miss.recall[0.5] == 0.0
    ghost = average_precision(empty, obj)
    assert ghost.ap[0.5] == 0.0 and ghost.precision[0.5] == 0.0


def test_aggregate_pools_counts():
    a_true = _square((10, 10), 0, 0, 5, 1)
    a = average_precision(a_true, a_true, thresholds=(0.5,))
    b = average_precision(a_true, np.zeros_like(a_true), thresholds=(0.5,))
    pooled = aggregate([a, b])
    assert (pooled.tp[0.5], pooled.fn[0.5]) == (1, 1)
    assert pooled.ap[0.5] == pytest.approx(0.5)
    assert pooled.as_dict()["ap@0.5"] == pytest.approx(0.5)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        average_precision(np.zeros((3, 3)), np.zeros((3, 4)))


def test_agrees_with_cellpose_metrics():
    cp_metrics = pytest.importorskip("cellpose.metrics")
    from liveseg.synthetic import generate

    _, true = generate(1, (96, 96), "test_hard")
    _, pred = generate(1, (96, 96), "test_hard", blur=(3.0, 3.0))
    pred = np.roll(pred, 1, axis=0)
    ours = average_precision(true, pred, thresholds=(0.5, 0.75))
    ap, tp, _fp, _fn = cp_metrics.average_precision([true], [pred], threshold=[0.5, 0.75])
    np.testing.assert_allclose([ours.ap[0.5], ours.ap[0.75]], ap[0], atol=1e-9)
    assert [ours.tp[0.5], ours.tp[0.75]] == list(tp[0])
