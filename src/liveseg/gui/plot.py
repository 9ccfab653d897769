"""Count-vs-time plot, one line per stage position, painted with plain Qt.

No plotting library: a few hundred points per run are cheap to paint, and the plot
keeps its data (:meth:`CountPlot.series`) so tests can check it point by point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

if TYPE_CHECKING:
    from collections.abc import Iterable

    from qtpy.QtGui import QPaintEvent

    from liveseg.gui.feed import CountPoint

__all__ = ["CountPlot"]

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _nice_max(value: float) -> float:
    """A round axis maximum ≥ ``value`` (1, 2, 5 × 10^k)."""
    if value <= 0:
        return 1.0
    exp = 10 ** int(f"{value:e}".split("e")[1])
    for m in (1, 2, 5, 10):
        if m * exp >= value:
            return float(m * exp)
    return float(10 * exp)


class CountPlot(QWidget):
    """Objects per segmented frame against acquisition time, per position."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._series: dict[int, list[tuple[float, int, int]]] = {}

    def clear(self) -> None:
        """Forget all points (a new run)."""
        self._series.clear()
        self.update()

    def add_points(self, points: Iterable[CountPoint]) -> None:
        """Append points (one per segmented frame) and repaint once."""
        added = False
        for p in points:
            self._series.setdefault(p.position, []).append((p.time_s, p.count, p.frame_index))
            added = True
        if added:
            self.update()

    def series(self) -> dict[int, list[tuple[float, int, int]]]:
        """Position → [(time s, count, frame index), …] in arrival order (a copy)."""
        return {k: list(v) for k, v in self._series.items()}

    def n_points(self) -> int:
        """Points on the plot, all positions together."""
        return sum(len(v) for v in self._series.values())

    def paintEvent(self, event: QPaintEvent | None) -> None:  # noqa: D102
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.fillRect(self.rect(), QColor("white"))
        fm = painter.fontMetrics()
        left, right, top, bottom = fm.horizontalAdvance("00000") + 8, 90, 8, fm.height() + 10
        area = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        if area.width() <= 10 or area.height() <= 10:
            return
        pts = [p for s in self._series.values() for p in s]
        t_max = max((p[0] for p in pts), default=1.0) or 1.0
        c_max = _nice_max(max((p[1] for p in pts), default=1))
        painter.setPen(QPen(QColor("#444")))
        painter.drawRect(area)
        align_r = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for frac in (0.0, 0.5, 1.0):
            y = area.bottom() - frac * area.height()
            painter.drawText(QRectF(0, y - 8, left - 4, 16), align_r, f"{c_max * frac:g}")
        painter.drawText(
            QRectF(area.left(), area.bottom() + 2, area.width(), fm.height() + 4),
            Qt.AlignmentFlag.AlignCenter,
            f"time (s), 0 – {t_max:.1f}",
        )

        def to_xy(t: float, c: float) -> QPointF:
            return QPointF(
                area.left() + t / t_max * area.width(), area.bottom() - c / c_max * area.height()
            )

        for i, (pos, series) in enumerate(sorted(self._series.items())):
            color = QColor(_PALETTE[i % len(_PALETTE)])
            painter.setPen(QPen(color, 1.5))
            path = QPainterPath()
            for j, (t, c, _) in enumerate(series):
                if j == 0:
                    path.moveTo(to_xy(t, c))
                else:
                    path.lineTo(to_xy(t, c))
            painter.drawPath(path)
            painter.setBrush(color)
            for t, c, _ in series:
                painter.drawEllipse(to_xy(t, c), 2.5, 2.5)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            last = series[-1][1] if series else 0
            painter.drawText(
                QRectF(area.right() + 6, top + i * (fm.height() + 2), right - 8, fm.height()),
                Qt.AlignmentFlag.AlignLeft,
                f"pos {pos}: {last}",
            )
        if not pts:
            painter.setPen(QColor("#888"))
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "objects per frame")
