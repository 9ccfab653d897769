"""Instance-segmentation metrics: IoU matching, average precision, matched IoU.

Pure numpy (plus scipy's assignment solver), after ``cellpose.metrics``: the IoU matrix
comes from one contingency table of (true, pred) label pairs, objects are matched
one-to-one by the Hungarian algorithm on IoU, and a match counts at threshold ``t`` when
its IoU is at least ``t``. Average precision follows the cellpose / DSB-2018 definition
``AP = TP / (TP + FP + FN)``.

Labels are integer arrays of the same shape, 0 = background. Ids need not be
consecutive.

Semantic class maps are scored per class (:func:`class_iou`): the IoU of the pixels
of class ``c`` in the truth and in the prediction, pooled over images by summing
intersections and unions (:func:`class_overlaps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "APResult",
    "aggregate",
    "average_precision",
    "class_iou",
    "class_overlaps",
    "iou_matrix",
    "match",
]


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map ids to 0..N consecutive (0 stays background)."""
    lab = np.asarray(labels)
    if lab.size == 0:
        return lab.astype(np.int64), 0
    ids, inverse = np.unique(lab, return_inverse=True)
    inverse = inverse.reshape(lab.shape)
    if ids[0] != 0:
        return inverse + 1, int(ids.size)
    return inverse, int(ids.size - 1)


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every true object (rows) and every predicted object (columns).

    Parameters
    ----------
    true, pred : numpy.ndarray
        Label images of equal shape.

    Returns
    -------
    numpy.ndarray
        ``(n_true, n_pred)`` float64 matrix.
    """
    if np.shape(true) != np.shape(pred):
        raise ValueError(f"shape mismatch: true {np.shape(true)} vs pred {np.shape(pred)}")
    t, nt = _compact(true)
    p, np_ = _compact(pred)
    if nt == 0 or np_ == 0:
        return np.zeros((nt, np_), dtype=np.float64)
    overlap = np.bincount(
        (t.ravel().astype(np.int64) * (np_ + 1) + p.ravel()), minlength=(nt + 1) * (np_ + 1)
    ).reshape(nt + 1, np_ + 1)
    area_t = overlap.sum(axis=1, keepdims=True)
    area_p = overlap.sum(axis=0, keepdims=True)
    union = area_t + area_p - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)
    return iou[1:, 1:]


def match(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of objects maximising total IoU (Hungarian).

    Returns
    -------
    true_idx, pred_idx, iou : numpy.ndarray
        Indices (0-based, in ascending label order) of matched pairs with IoU > 0 and
        their IoU.
    """
    from scipy.optimize import linear_sum_assignment

    iou = iou_matrix(true, pred)
    if iou.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    rows, cols = linear_sum_assignment(-iou)
    keep = iou[rows, cols] > 0
    return rows[keep], cols[keep], iou[rows[keep], cols[keep]]


@dataclass(frozen=True)
class APResult:
    """Matching scores of one image (or of a set, see :func:`aggregate`).

    ``ap``, ``precision``, ``recall``, ``tp``, ``fp``, ``fn`` are keyed by IoU threshold.
    ``mean_matched_iou`` is the mean IoU of pairs matched at the lowest threshold (NaN
    when there are none). An image with no true and no predicted objects scores 1.
    """

    thresholds: tuple[float, ...]
    ap: dict[float, float]
    precision: dict[float, float]
    recall: dict[float, float]
    tp: dict[float, int]
    fp: dict[float, int]
    fn: dict[float, int]
    mean_matched_iou: float
    n_true: int
    n_pred: int
    matched_ious: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (keys like ``ap@0.5``)."""
        out: dict[str, object] = {"n_true": self.n_true, "n_pred": self.n_pred}
        for t in self.thresholds:
            out[f"ap@{t:g}"] = self.ap[t]
            out[f"precision@{t:g}"] = self.precision[t]
            out[f"recall@{t:g}"] = self.recall[t]
        out["mean_matched_iou"] = self.mean_matched_iou
        return out


def _scores(
    tp: dict[float, int], fp: dict[float, int], fn: dict[float, int], t: float
) -> tuple[float, float, float]:
    denom = tp[t] + fp[t] + fn[t]
    ap = tp[t] / denom if denom else 1.0
    prec = tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else (1.0 if fn[t] == 0 else 0.0)
    rec = tp[t] / (tp[t] + fn[t]) if tp[t] + fn[t] else (1.0 if fp[t] == 0 else 0.0)
    return ap, prec, rec


def _result(thresholds: tuple[float, ...], ious: np.ndarray, n_true: int, n_pred: int) -> APResult:
    tp = {t: int(np.sum(ious >= t)) for t in thresholds}
    fp = {t: n_pred - tp[t] for t in thresholds}
    fn = {t: n_true - tp[t] for t in thresholds}
    ap, prec, rec = {}, {}, {}
    for t in thresholds:
        ap[t], prec[t], rec[t] = _scores(tp, fp, fn, t)
    lowest = min(thresholds)
    good = ious[ious >= lowest]
    miou = float(good.mean()) if good.size else float("nan")
    return APResult(thresholds, ap, prec, rec, tp, fp, fn, miou, n_true, n_pred, ious)


def average_precision(
    true: np.ndarray,
    pred: np.ndarray,
    thresholds: Sequence[float] = (0.5, 0.75, 0.9),
) -> APResult:
    """Average precision (TP / (TP + FP + FN)), precision, recall and matched IoU.

    Parameters
    ----------
    true, pred : numpy.ndarray
        Ground-truth and predicted label images of the same shape.
    thresholds : sequence of float
        IoU thresholds; matching is one-to-one (Hungarian on IoU), so a threshold of 0.5
        or more gives the same counts as the classical "IoU > t" rule.
    """
    ths = tuple(float(t) for t in thresholds)
    if not ths:
        raise ValueError("thresholds must not be empty")
    _, n_true = _compact(true)
    _, n_pred = _compact(pred)
    _, _, ious = match(true, pred)
    return _result(ths, ious, n_true, n_pred)


def aggregate(results: Iterable[APResult]) -> APResult:
    """Pool counts over images (the dataset-level AP, as in cellpose's benchmarks)."""
    items = list(results)
    if not items:
        raise ValueError("no results to aggregate")
    ths = items[0].thresholds
    ious = np.concatenate([r.matched_ious for r in items])
    return _result(ths, ious, sum(r.n_true for r in items), sum(r.n_pred for r in items))


def class_overlaps(
    true: np.ndarray, pred: np.ndarray, n_classes: int, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class pixel intersections and unions of two class maps (inside ``valid``).

    Returns two ``int64`` arrays of length ``n_classes``; sum them over images to pool.
    Values at or above ``n_classes`` are counted as no class.
    """
    t = np.asarray(true).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"class maps differ in shape: {np.shape(true)} vs {np.shape(pred)}")
    if valid is not None:
        keep = np.asarray(valid, bool).ravel()
        t, p = t[keep], p[keep]
    t = np.where(t < n_classes, t, n_classes)
    p = np.where(p < n_classes, p, n_classes)
    both = np.bincount(t * (n_classes + 1) + p, minlength=(n_classes + 1) ** 2)
    table = both.reshape(n_classes + 1, n_classes + 1)[:n_classes, :n_classes]
    inter = np.diag(table).astype(np.int64)
    n_true = np.bincount(t, minlength=n_classes + 1)[:n_classes]
    n_pred = np.bincount(p, minlength=n_classes + 1)[:n_classes]
    return inter, (n_true + n_pred - inter).astype(np.int64)


def class_iou(
    true: np.ndarray, pred: np.ndarray, n_classes: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """IoU of every class (``nan`` for a class absent from both maps)."""
    inter, union = class_overlaps(true, pred, n_classes, valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
