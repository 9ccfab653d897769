"""Pixel (row, col) → stage (x, y) µm: the one transform every part of liveseg uses.

``stage = frame_xy + A · (col' − W/2, row' − H/2)`` where ``A`` is the 2×2 part of the
pixel-size affine (``pixel_size · I`` when the affine is identity or absent) and
``(row', col')`` are the pixel coordinates after undoing the camera's transpose and
mirror settings (``TransposeXY``, ``TransposeMirrorX``, ``TransposeMirrorY``), with the
image centre as origin. Pixel index ``c`` covers ``[c, c+1)`` pixel widths from the left edge (the
convention of pymmcore-plus's simulated sample), so a mirror maps ``c`` to ``W-1-c``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CameraGeometry", "pixel_to_stage", "stage_to_pixel"]


@dataclass(frozen=True, slots=True)
class CameraGeometry:
    """Everything the transform needs about one frame."""

    width: int
    height: int
    stage_xy: tuple[float, float] = (0.0, 0.0)
    pixel_size_um: float = 1.0
    affine: tuple[float, float, float, float, float, float] | None = None
    transpose_xy: bool = False
    mirror_x: bool = False
    mirror_y: bool = False

    def matrix(self) -> np.ndarray:
        """The 2×2 pixel → µm matrix."""
        a = self.affine
        if a is None or np.allclose(a, (1, 0, 0, 0, 1, 0)) or np.allclose(a, 0):
            return np.eye(2) * self.pixel_size_um
        return np.array([[a[0], a[1]], [a[3], a[4]]], dtype=float)


def _camera_to_sensor(
    rows: np.ndarray, cols: np.ndarray, g: CameraGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """Undo the camera's mirror/transpose so axes line up with the stage axes."""
    if g.mirror_x:
        cols = (g.width - 1) - cols
    if g.mirror_y:
        rows = (g.height - 1) - rows
    if g.transpose_xy:
        rows, cols = cols, rows
    return rows, cols


def pixel_to_stage(rows: object, cols: object, g: CameraGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Stage (x, y) µm of pixel coordinates (arrays or scalars, sub-pixel allowed)."""
    r = np.asarray(rows, dtype=float)
    c = np.asarray(cols, dtype=float)
    r, c = _camera_to_sensor(r, c, g)
    w, h = (g.height, g.width) if g.transpose_xy else (g.width, g.height)
    d = np.stack([c - w / 2.0, r - h / 2.0])
    m = g.matrix()
    x = g.stage_xy[0] + m[0, 0] * d[0] + m[0, 1] * d[1]
    y = g.stage_xy[1] + m[1, 0] * d[0] + m[1, 1] * d[1]
    return x, y


def stage_to_pixel(x: object, y: object, g: CameraGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pixel_to_stage`: (row, col) of stage (x, y) µm in this frame."""
    m_inv = np.linalg.inv(g.matrix())
    dx = np.asarray(x, dtype=float) - g.stage_xy[0]
    dy = np.asarray(y, dtype=float) - g.stage_xy[1]
    w, h = (g.height, g.width) if g.transpose_xy else (g.width, g.height)
    c = m_inv[0, 0] * dx + m_inv[0, 1] * dy + w / 2.0
    r = m_inv[1, 0] * dx + m_inv[1, 1] * dy + h / 2.0
    if g.transpose_xy:
        r, c = c, r
    if g.mirror_y:
        r = (g.height - 1) - r
    if g.mirror_x:
        c = (g.width - 1) - c
    return r, c
