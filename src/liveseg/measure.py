"""Per-object measurements and per-frame counts, vectorised (no per-object Python loop).

Columns (one row per object, ascending label order): ``position``, ``t`` and
``time_s`` of the frame (so an object table is usable without joining frames.csv),
``label``, ``area_px``,
``area_um2``, ``centroid_row``, ``centroid_col``, ``centroid_x_um``, ``centroid_y_um``,
``bbox_min_row``, ``bbox_min_col``, ``bbox_max_row``, ``bbox_max_col`` (max exclusive),
``mean_intensity``, ``max_intensity``, ``integrated_intensity``, ``eccentricity``,
``touches_edge``, and ``score`` when the backend gave confidences. Plugins add columns
through the ``measure_frame`` hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from liveseg.coords import CameraGeometry, pixel_to_stage
from liveseg.types import label_ids

if TYPE_CHECKING:
    from liveseg.types import Frame, FrameResult

__all__ = ["OBJECT_COLUMNS", "frame_geometry", "measure_objects"]

OBJECT_COLUMNS: tuple[str, ...] = (
    "position",
    "t",
    "time_s",
    "label",
    "area_px",
    "area_um2",
    "centroid_row",
    "centroid_col",
    "centroid_x_um",
    "centroid_y_um",
    "bbox_min_row",
    "bbox_min_col",
    "bbox_max_row",
    "bbox_max_col",
    "mean_intensity",
    "max_intensity",
    "integrated_intensity",
    "eccentricity",
    "touches_edge",
)


def frame_geometry(frame: Frame) -> CameraGeometry:
    """The camera geometry of ``frame`` for pixel → stage conversion."""
    h, w = frame.shape
    md = frame.metadata
    return CameraGeometry(
        width=w,
        height=h,
        stage_xy=frame.stage_xy or (0.0, 0.0),
        pixel_size_um=frame.pixel_size_um,
        affine=frame.pixel_affine,
        transpose_xy=bool(md.get("transpose_xy", False)),
        mirror_x=bool(md.get("mirror_x", False)),
        mirror_y=bool(md.get("mirror_y", False)),
    )


def measure_objects(frame: Frame, result: FrameResult) -> dict[str, np.ndarray]:
    """Standard per-object columns for ``result.labels`` measured on the raw image.

    Only foreground pixels are visited after one pass that finds them: on a 512² frame
    about a third of the pixels, so every sum below costs a third of a full-frame one.
    Each object's sums add the same pixels in the same (raster) order as a full-frame
    ``bincount`` would, so the values are bit-for-bit those of measuring every pixel.
    """
    labels = result.labels
    h, w = labels.shape
    flat_all = np.asarray(labels).ravel()
    where = np.flatnonzero(flat_all)
    ids = label_ids(flat_all[where]) if where.size else np.zeros(0, dtype=np.int64)
    n = ids.size
    if n == 0:
        return {c: np.zeros(0) for c in OBJECT_COLUMNS}
    t = int(frame.event.index.get("t", 0)) if frame.event is not None else frame.index
    # Compact ids to 1..n so bincount arrays stay small even for sparse label values.
    lut = np.zeros(int(ids[-1]) + 1, dtype=np.int64)
    lut[ids] = np.arange(1, n + 1)
    flat = lut[flat_all[where]]
    ri, ci = np.divmod(where, w)
    rows, cols = ri.astype(np.float64), ci.astype(np.float64)
    area = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    sum_r = np.bincount(flat, rows, minlength=n + 1)[1:]
    sum_c = np.bincount(flat, cols, minlength=n + 1)[1:]
    cr, cc = sum_r / area, sum_c / area
    srr = np.bincount(flat, rows * rows, minlength=n + 1)[1:] / area - cr * cr
    scc = np.bincount(flat, cols * cols, minlength=n + 1)[1:] / area - cc * cc
    src = np.bincount(flat, rows * cols, minlength=n + 1)[1:] / area - cr * cc
    tr, det = srr + scc, srr * scc - src * src
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 0)
    ecc = np.where(l1 > 0, np.sqrt(np.clip(1 - l2 / np.where(l1 > 0, l1, 1), 0, 1)), 0.0)
    values = np.asarray(frame.image).ravel()[where].astype(np.float64)
    integrated = np.bincount(flat, values, minlength=n + 1)[1:]
    maxi = np.full(n + 1, -np.inf)
    np.maximum.at(maxi, flat, values)  # ~10x cheaper than ndi.maximum's sort
    maxi = maxi[1:]
    # Bounding boxes from the extreme rows and columns of each object's pixels.
    rmin, cmin = np.full(n + 1, h, dtype=np.int64), np.full(n + 1, w, dtype=np.int64)
    rmax, cmax = np.zeros(n + 1, dtype=np.int64), np.zeros(n + 1, dtype=np.int64)
    np.minimum.at(rmin, flat, ri)
    np.minimum.at(cmin, flat, ci)
    np.maximum.at(rmax, flat, ri)
    np.maximum.at(cmax, flat, ci)
    bbox = np.stack([rmin[1:], cmin[1:], rmax[1:] + 1, cmax[1:] + 1], axis=1)
    edge = (bbox[:, 0] == 0) | (bbox[:, 1] == 0) | (bbox[:, 2] == h) | (bbox[:, 3] == w)
    geom = frame_geometry(frame)
    x_um, y_um = pixel_to_stage(cr, cc, geom)
    px_area = abs(float(np.linalg.det(geom.matrix())))
    out: dict[str, np.ndarray] = {
        "position": np.full(n, frame.position, dtype=np.int64),
        "t": np.full(n, t, dtype=np.int64),
        "time_s": np.full(n, frame.time_s, dtype=np.float64),
        "label": ids.astype(np.int64),
        "area_px": area.astype(np.int64),
        "area_um2": area * px_area,
        "centroid_row": cr,
        "centroid_col": cc,
        "centroid_x_um": np.atleast_1d(x_um),
        "centroid_y_um": np.atleast_1d(y_um),
        "bbox_min_row": bbox[:, 0],
        "bbox_min_col": bbox[:, 1],
        "bbox_max_row": bbox[:, 2],
        "bbox_max_col": bbox[:, 3],
        "mean_intensity": integrated / area,
        "max_intensity": np.asarray(maxi, dtype=np.float64),
        "integrated_intensity": integrated,
        "eccentricity": ecc,
        "touches_edge": edge,
    }
    if result.scores:
        out["score"] = np.array([float(result.scores.get(int(i), np.nan)) for i in ids])
    return out
