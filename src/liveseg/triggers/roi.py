"""Camera ROI of triggered events, through ``useq.MDAEvent.roi``.

A trigger asks for a ``(width, height)`` ROI in its event's metadata (``liveseg_roi``)
because it cannot know the sensor; :class:`RoiStamp` turns that into ``MDAEvent.roi``,
centred on the sensor where the stage move has put the object, and pymmcore-plus's
engine sets it before the snap. pymmcore-plus 0.18.1 (with useq-schema 0.9) sets an
event's ROI but leaves it in place for the next event that has none, restoring the
initial ROI only when the sequence ends; so the scheduler gives the first event after
ROI events the full-sensor ROI explicitly (:meth:`RoiStamp.restore`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import useq
    from pymmcore_plus import CMMCorePlus

__all__ = ["ROI_KEY", "RoiStamp"]

ROI_KEY = "liveseg_roi"
"""Event metadata key: the ``(width, height)`` in pixels a trigger wants imaged."""


class RoiStamp:
    """Turns requested ROI sizes into ``MDAEvent.roi`` and restores the full sensor.

    :meth:`attach` reads the sensor (the ROI in effect when the run starts) on the
    runner thread; :meth:`stamp` runs on the worker thread when a proposal is accepted;
    :meth:`restore` runs on the runner thread for every event it yields.
    """

    def __init__(self) -> None:
        self.sensor: tuple[int, int, int, int] | None = None
        self._active = False
        self._lock = threading.Lock()

    def attach(self, core: CMMCorePlus) -> None:
        """Remember the run's full ROI ``(x, y, width, height)``."""
        x, y, w, h = (int(v) for v in core.getROI())
        self.sensor = (x, y, w, h)
        self._active = False

    def stamp(self, event: useq.MDAEvent) -> useq.MDAEvent:
        """``event`` with ``roi`` set when its metadata asks for one (else unchanged)."""
        import useq

        size = event.metadata.get(ROI_KEY) if event.metadata else None
        if not size or self.sensor is None or event.roi is not None:
            return event
        x0, y0, sw, sh = self.sensor
        w, h = min(int(size[0]), sw), min(int(size[1]), sh)
        roi = useq.CameraROI(
            offset_x=x0 + (sw - w) // 2, offset_y=y0 + (sh - h) // 2, width=w, height=h
        )
        return event.model_copy(update={"roi": roi})

    def restore(self, event: useq.MDAEvent) -> useq.MDAEvent:
        """``event``, given the full ROI when it is the first one after ROI events."""
        import useq

        with self._lock:
            if event.roi is not None:
                self._active = (
                    self.sensor is None
                    or (event.roi.offset_x, event.roi.offset_y, event.roi.width, event.roi.height)
                    != self.sensor
                )
                return event
            if not self._active or self.sensor is None:
                return event
            self._active = False
        x, y, w, h = self.sensor
        full = useq.CameraROI(offset_x=x, offset_y=y, width=w, height=h)
        return event.model_copy(update={"roi": full})
