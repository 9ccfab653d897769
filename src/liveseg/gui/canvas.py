"""The live image with its mask overlay: contrast, zoom, pan, hover read-out.

Rendering is split so that it can be tested pixel by pixel: :func:`to_gray8` and
:func:`overlay_rgba` are pure numpy; :meth:`ImageCanvas.paint_scene` draws the image and
the overlay with any view transform, and :meth:`ImageCanvas.render_native` runs the
same painting code at 1 image pixel = 1 screen pixel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from qtpy.QtCore import (  # type: ignore[attr-defined]
    QPointF,
    QRectF,
    Qt,
    Signal,
)
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QTransform
from qtpy.QtWidgets import QToolTip, QWidget

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from qtpy.QtGui import QMouseEvent, QPaintEvent, QResizeEvent, QWheelEvent

__all__ = [
    "ImageCanvas",
    "class_overlay_rgba",
    "label_colors",
    "outline_mask",
    "overlay_rgba",
    "to_gray8",
]

OverlayMode = Literal["filled", "outline"]

#: Columns shown in the hover read-out, in this order, when present.
HOVER_COLUMNS = ("area_px", "area_um2", "centroid_x_um", "centroid_y_um", "mean_intensity")


def auto_limits(image: np.ndarray) -> tuple[float, float]:
    """Contrast limits from the 0.5 / 99.8 percentiles of a strided subsample (fast)."""
    step = max(1, int(np.sqrt(image.size / 65536)))
    sample = image[::step, ::step]
    lo, hi = np.percentile(sample, (0.5, 99.8))
    if hi <= lo:
        hi = lo + 1
    return float(lo), float(hi)


def to_gray8(image: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """Map ``image`` to uint8 with ``limits`` → 0..255 (clipped)."""
    lo, hi = limits
    scale = 255.0 / max(hi - lo, 1e-12)
    out = (np.asarray(image, dtype=np.float32) - lo) * scale
    return np.clip(out, 0, 255).astype(np.uint8)


def label_colors(ids: np.ndarray) -> np.ndarray:
    """A stable, saturated RGB colour (uint8, shape ``(n, 3)``) per label id.

    The hue is a hash of the id, so an object keeps its colour from frame to frame as
    long as the backend keeps its id; neighbouring ids get very different hues.
    """
    ids = np.asarray(ids, dtype=np.uint64)
    hue = ((ids * np.uint64(2654435761)) % np.uint64(4096)).astype(np.float64) / 4096.0
    # HSV → RGB with s = 0.85, v = 1.
    h6 = hue * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    s = 0.85
    p = np.full_like(f, 1 - s)
    q = 1 - s * f
    t = 1 - s * (1 - f)
    one = np.ones_like(f)
    r = np.choose(i, [one, q, p, p, t, one])
    g = np.choose(i, [t, one, one, q, p, p])
    b = np.choose(i, [p, p, t, one, one, q])
    return (np.stack([r, g, b], axis=-1) * 255).round().astype(np.uint8)


def outline_mask(labels: np.ndarray) -> np.ndarray:
    """Object pixels that touch another label or background (4-connectivity)."""
    lab = labels
    edge = np.zeros(lab.shape, dtype=bool)
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    return edge & (lab != 0)


def overlay_rgba(labels: np.ndarray, mode: OverlayMode = "filled") -> np.ndarray:
    """RGBA (uint8) overlay of ``labels``: opaque colour on objects, transparent elsewhere.

    Opacity is applied when painting, so moving the slider needs no recomputation.
    """
    h, w = labels.shape
    out = np.zeros((h, w, 4), dtype=np.uint8)
    mask = labels != 0 if mode == "filled" else outline_mask(labels)
    if not mask.any():
        return out
    ids, inverse = np.unique(labels[mask], return_inverse=True)
    out[mask, :3] = label_colors(ids)[inverse]
    out[mask, 3] = 255
    return out


def class_overlay_rgba(
    classes: np.ndarray, colors: Sequence[tuple[int, int, int, int]], mode: OverlayMode = "filled"
) -> np.ndarray:
    """RGBA (uint8) overlay of a class map in its class colours (``ClassTable.colors``).

    Every pixel gets its class's colour and alpha (class 0 is transparent by default);
    ``outline`` draws only the borders between classes.
    """
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[: min(len(colors), 256)] = np.asarray(colors[:256], dtype=np.uint8)
    cls = np.asarray(classes, dtype=np.uint8)
    out = lut[cls]
    if mode == "outline":
        out[~outline_mask(cls.astype(np.int64) + 1)] = 0
    return out


def _qimage(array: np.ndarray) -> QImage:
    """Wrap a C-contiguous uint8 array (H, W) or (H, W, 4) without copying."""
    array = np.ascontiguousarray(array)
    h, w = array.shape[:2]
    if array.ndim == 2:
        img = QImage(array.data, w, h, array.strides[0], QImage.Format.Format_Grayscale8)
    else:
        img = QImage(array.data, w, h, array.strides[0], QImage.Format.Format_RGBA8888)
    img._keepalive = array  # type: ignore[attr-defined]  # QImage does not own the buffer
    return img


class ImageCanvas(QWidget):
    """The live image, the newest mask overlay and a lag marker.

    Wheel zooms around the cursor, left-drag pans, double-click fits. Hovering an
    object shows its id and measurements (tooltip and :attr:`hovered`).
    """

    hovered = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setMinimumSize(256, 256)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.image: np.ndarray | None = None
        self.image_index: int | None = None
        self.image_position: int | None = None
        self.labels: np.ndarray | None = None
        self.classes: np.ndarray | None = None
        self.class_names: tuple[str, ...] = ()
        self.class_colors: tuple[tuple[int, int, int, int], ...] = ()
        self.overlay_index: int | None = None
        self.overlay_position: int | None = None
        self.banner_rect = QRectF()
        """Where the frame read-out was last painted (widget coordinates)."""
        self.columns: Mapping[str, np.ndarray] = {}
        self.auto_contrast = True
        self.limits: tuple[float, float] = (0.0, 1.0)
        self.mode: OverlayMode = "filled"
        self.opacity = 0.5
        self.show_overlay = True
        self._gray: QImage | None = None
        self._overlay: QImage | None = None
        self._zoom = 1.0
        self._offset = QPointF(0, 0)
        self._auto_fit = True  # until the operator zooms or pans
        self._drag: QPointF | None = None

    # -- data -------------------------------------------------------------------------
    def set_image(self, index: int, image: np.ndarray, position: int | None = None) -> None:
        """Show raw frame ``index`` of stage ``position`` (contrast applied now, once)."""
        if image.ndim > 2:  # RGB cameras: show the first channel
            image = image[..., 0]
        new_shape = self.image is None or self.image.shape != image.shape
        self.image = image
        self.image_index = index
        self.image_position = position
        if self.auto_contrast:
            self.limits = auto_limits(image)
        self._gray = _qimage(to_gray8(image, self.limits))
        if new_shape and self._auto_fit:
            self.fit()
        self.update()

    def set_overlay(
        self,
        index: int,
        labels: np.ndarray,
        columns: Mapping[str, np.ndarray] | None = None,
        position: int | None = None,
        classes: np.ndarray | None = None,
        class_names: Sequence[str] = (),
    ) -> None:
        """Show the labels of segmented frame ``index`` (may be older than the image).

        With a class map (a semantic chain's ``result.classes``) the overlay shows the
        classes in their :class:`~liveseg.builtins.classes.ClassTable` colours — the
        same the OME-NGFF labels carry — and a legend names them.
        """
        self.labels = labels
        self.overlay_index = index
        self.overlay_position = position
        self.columns = columns or {}
        self.classes = classes
        if classes is not None:
            from liveseg.builtins.classes import ClassTable

            table = ClassTable.default(tuple(class_names))
            self.class_names, self.class_colors = table.names, table.colors
            self._overlay = _qimage(class_overlay_rgba(classes, table.colors, self.mode))
        else:
            self.class_names, self.class_colors = (), ()
            self._overlay = _qimage(overlay_rgba(labels, self.mode))
        self.update()

    def clear_overlay(self) -> None:
        """Draw no masks (none fit the image on screen)."""
        self.labels = None
        self.classes = None
        self.class_names, self.class_colors = (), ()
        self.overlay_index = None
        self.overlay_position = None
        self.columns = {}
        self._overlay = None
        self.update()

    def set_limits(self, lo: float, hi: float) -> None:
        """Manual contrast limits (turns auto contrast off)."""
        self.auto_contrast = False
        self.limits = (lo, max(hi, lo + 1e-6))
        self._refresh_gray()

    def set_auto_contrast(self, on: bool) -> None:
        """Auto contrast: percentiles of every new frame."""
        self.auto_contrast = on
        if on and self.image is not None:
            self.limits = auto_limits(self.image)
        self._refresh_gray()

    def set_mode(self, mode: OverlayMode) -> None:
        """``filled`` or ``outline`` masks."""
        self.mode = mode
        if self.labels is not None and self.overlay_index is not None:
            self.set_overlay(
                self.overlay_index,
                self.labels,
                self.columns,
                self.overlay_position,
                self.classes,
                self.class_names,
            )

    def set_opacity(self, opacity: float) -> None:
        """Overlay opacity, 0..1."""
        self.opacity = float(np.clip(opacity, 0, 1))
        self.update()

    def set_overlay_visible(self, on: bool) -> None:
        """Show or hide the overlay."""
        self.show_overlay = on
        self.update()

    def _refresh_gray(self) -> None:
        if self.image is not None:
            self._gray = _qimage(to_gray8(self.image, self.limits))
        self.update()

    @property
    def lag(self) -> int | None:
        """How many frames the overlay is behind the image (None: nothing to compare)."""
        if self.image_index is None or self.overlay_index is None:
            return None
        return self.image_index - self.overlay_index

    # -- view -------------------------------------------------------------------------
    def fit(self) -> None:
        """Zoom so that the whole image fits, centred."""
        if self.image is None:
            return
        h, w = self.image.shape[:2]
        self._zoom = min(self.width() / w, self.height() / h) or 1.0
        self._offset = QPointF(
            (self.width() - w * self._zoom) / 2, (self.height() - h * self._zoom) / 2
        )
        self._auto_fit = True
        self.update()

    def view_transform(self) -> QTransform:
        """Image pixel coordinates → widget coordinates."""
        t = QTransform()
        t.translate(self._offset.x(), self._offset.y())
        t.scale(self._zoom, self._zoom)
        return t

    def widget_to_pixel(self, pos: QPointF) -> tuple[int, int] | None:
        """(row, col) of the image pixel under a widget position, or None outside."""
        if self.image is None:
            return None
        inv, ok = self.view_transform().inverted()
        if not ok:
            return None
        p = inv.map(pos)
        row, col = int(np.floor(p.y())), int(np.floor(p.x()))
        h, w = self.image.shape[:2]
        if 0 <= row < h and 0 <= col < w:
            return row, col
        return None

    # -- painting ---------------------------------------------------------------------
    def paint_scene(self, painter: QPainter, transform: QTransform) -> None:
        """Draw image then overlay with ``transform`` (the whole paint path)."""
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.setTransform(transform)
        if self._gray is not None:
            painter.drawImage(QPointF(0, 0), self._gray)
        if self.show_overlay and self._overlay is not None:
            painter.setOpacity(self.opacity)
            painter.drawImage(QPointF(0, 0), self._overlay)
            painter.setOpacity(1.0)
        painter.resetTransform()

    def render_native(self, overlay: bool | None = None) -> np.ndarray:
        """The scene at 1 image pixel per output pixel, as an (H, W, 3) uint8 array.

        Uses :meth:`paint_scene`, i.e. exactly what the widget paints, without zoom.
        """
        if self.image is None:
            raise RuntimeError("no image yet")
        h, w = self.image.shape[:2]
        out = QImage(w, h, QImage.Format.Format_RGB32)
        out.fill(QColor("black"))
        shown = self.show_overlay
        if overlay is not None:
            self.show_overlay = overlay
        painter = QPainter(out)
        try:
            self.paint_scene(painter, QTransform())
        finally:
            painter.end()
            self.show_overlay = shown
        ptr = out.constBits()
        arr = np.frombuffer(ptr, dtype=np.uint8, count=h * out.bytesPerLine())  # type: ignore[call-overload]
        arr = arr.reshape(h, out.bytesPerLine() // 4, 4)[:, :w, :3]
        return arr[..., ::-1].copy()  # BGRA (little endian) → RGB

    def paintEvent(self, event: QPaintEvent | None) -> None:  # noqa: D102
        painter = QPainter(self)
        try:
            painter.fillRect(self.rect(), QColor(20, 20, 20))
            self.paint_scene(painter, self.view_transform())
            self._paint_banner(painter)
            self._paint_legend(painter)
        finally:
            painter.end()

    def banner_text(self) -> str:
        """The read-out drawn on the image: which frame and position, whose masks."""
        if self.image_index is None:
            return "waiting for frames…"
        where = f"frame {self.image_index}"
        if self.image_position is not None:
            where += f" · position {self.image_position}"
        if self.overlay_index is None:
            return f"{where} · no masks for it yet"
        lag = self.lag or 0
        if lag > 0:
            return (
                f"{where} · ⚠ masks from frame {self.overlay_index},"
                f" {lag} frame{'s' if lag != 1 else ''} older"
            )
        return f"{where} · masks of this frame"

    def legend(self) -> list[tuple[str, tuple[int, int, int, int], float]]:
        """The class legend: (name, RGBA, area fraction) of every class shown.

        Empty without a class map; transparent classes (the background) are left out.
        """
        if self.classes is None or not self.class_names:
            return []
        counts = np.bincount(self.classes.ravel(), minlength=len(self.class_names))
        total = max(int(self.classes.size), 1)
        return [
            (name, rgba, float(counts[i]) / total)
            for i, (name, rgba) in enumerate(zip(self.class_names, self.class_colors, strict=True))
            if rgba[3] > 0
        ]

    def _paint_legend(self, painter: QPainter) -> None:
        entries = self.legend() if self.show_overlay else []
        if not entries:
            return
        metrics = painter.fontMetrics()
        lines = [f"{name}  {100 * frac:.1f}%" for name, _, frac in entries]
        line_h = metrics.height() + 2
        width = max(metrics.horizontalAdvance(t) for t in lines) + line_h + 16
        rect = QRectF(
            6, self.height() - 6 - line_h * len(lines) - 6, width, line_h * len(lines) + 6
        )
        painter.fillRect(rect, QColor(0, 0, 0, 160))
        for k, ((_, rgba, _), text) in enumerate(zip(entries, lines, strict=True)):
            top = rect.top() + 3 + k * line_h
            painter.fillRect(
                QRectF(rect.left() + 4, top + 2, line_h - 4, line_h - 4), QColor(*rgba)
            )
            painter.setPen(QColor("white"))
            painter.drawText(
                QRectF(rect.left() + line_h + 6, top, width, line_h),
                int(Qt.AlignmentFlag.AlignVCenter),
                text,
            )

    def _paint_banner(self, painter: QPainter) -> None:
        text = self.banner_text()
        lagging = (self.lag or 0) > 0
        font = QFont(painter.font())
        font.setBold(lagging)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        rect = QRectF(6, 6, metrics.horizontalAdvance(text) + 12, metrics.height() + 6)
        self.banner_rect = rect
        painter.fillRect(rect, QColor(200, 90, 0, 220) if lagging else QColor(0, 0, 0, 160))
        painter.setPen(QColor("white"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)

    # -- interaction ------------------------------------------------------------------
    def describe_pixel(self, row: int, col: int) -> str:
        """Object id and measurements at a pixel ('' on background or without overlay)."""
        if self.labels is None or not (
            0 <= row < self.labels.shape[0] and 0 <= col < self.labels.shape[1]
        ):
            return ""
        label = int(self.labels[row, col])
        if label == 0:
            return ""
        parts = [f"object {label}"]
        ids = self.columns.get("label")
        if ids is not None and len(ids):
            i = int(np.searchsorted(ids, label))
            if i < len(ids) and int(ids[i]) == label:
                for name in (*HOVER_COLUMNS, "score"):
                    col_values = self.columns.get(name)
                    if col_values is not None and i < len(col_values):
                        parts.append(f"{name}={float(col_values[i]):.4g}")
        return "  ".join(parts)

    def mouseMoveEvent(self, event: QMouseEvent | None) -> None:  # noqa: D102
        if event is None:
            return
        pos = event.position()
        if self._drag is not None:
            self._offset += pos - self._drag
            self._drag = pos
            self._auto_fit = False
            self.update()
            return
        px = self.widget_to_pixel(pos)
        text = ""
        if px is not None:
            text = self.describe_pixel(*px)
            value = self.image[px] if self.image is not None else 0
            self.hovered.emit(f"row {px[0]}, col {px[1]}, value {value}  {text}".strip())
        if text:
            QToolTip.showText(event.globalPosition().toPoint(), text, self)
        else:
            QToolTip.hideText()

    def mousePressEvent(self, event: QMouseEvent | None) -> None:  # noqa: D102
        if event is not None and event.button() == Qt.MouseButton.LeftButton:
            self._drag = event.position()

    def mouseReleaseEvent(self, event: QMouseEvent | None) -> None:  # noqa: D102
        self._drag = None

    def mouseDoubleClickEvent(self, event: QMouseEvent | None) -> None:  # noqa: D102
        self.fit()

    def wheelEvent(self, event: QWheelEvent | None) -> None:  # noqa: D102
        if event is None:
            return
        factor = 1.25 ** (event.angleDelta().y() / 120)
        self.zoom_by(factor, event.position())

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom by ``factor`` keeping the point under ``anchor`` (widget coords) fixed."""
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        new_zoom = float(np.clip(self._zoom * factor, 0.05, 64))
        real = new_zoom / self._zoom
        self._offset = anchor - (anchor - self._offset) * real
        self._zoom = new_zoom
        self._auto_fit = False
        self.update()

    def resizeEvent(self, event: QResizeEvent | None) -> None:  # noqa: D102
        if self._auto_fit and self.image is not None:
            self.fit()
        if event is not None:
            super().resizeEvent(event)
