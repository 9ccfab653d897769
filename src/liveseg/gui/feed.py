"""LiveFeed: the thread-safe hand-off between a running Session and a display.

The feed listens to a :class:`~liveseg.control.RunControl`'s signals, which are emitted
on the acquisition (runner) and worker threads at their own pace; a display polls
:meth:`LiveFeed.take` from its own thread at a bounded rate (the Qt window and the napari
widget use a ~30 Hz timer). Every callback here is O(1): store a reference under a lock,
bump a counter. Nothing heavy ever runs on the runner or worker threads, and a slow
display can only make frames *skip the display* (counted as dropped), never slow the
camera or the chain.

This module does not import Qt, so it can be tested and reused without a GUI.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveseg.types import FrameStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from liveseg.control import RunControl
    from liveseg.types import Flag, Frame, FrameResult

__all__ = ["CountPoint", "LiveFeed", "LogEntry", "Snapshot"]

#: Record kinds left out of the operator's log: one per skipped frame is noise, flags
#: arrive as ``flagged`` and per-time-point timing is for benchmarks.
_QUIET_KINDS = frozenset({"skipped", "flag", "timepoint"})


@dataclass(frozen=True, slots=True)
class CountPoint:
    """One segmented frame on the count-vs-time plot."""

    frame_index: int
    time_s: float
    position: int
    count: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the operator log (trigger, flag, plugin error, run start/end)."""

    kind: str
    text: str
    level: int = logging.INFO


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What changed since the previous :meth:`LiveFeed.take`.

    ``image`` / ``result`` are the newest ones only (``None`` when nothing new arrived);
    ``points`` and ``log`` hold *every* item since the last take, because the count plot
    needs one point per segmented frame and the log must not lose lines.
    """

    image: Frame | None = None
    result: tuple[Frame, FrameResult, Mapping[str, np.ndarray]] | None = None
    points: list[CountPoint] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)
    run_started: str | None = None
    run_finished: dict[str, Any] | None = None


class _LogHandler(logging.Handler):
    """Forwards ``liveseg`` warnings and errors (plugin failures) into the feed."""

    def __init__(self, feed: LiveFeed) -> None:
        super().__init__(logging.WARNING)
        self.feed = feed

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
        except Exception:  # a bad format string must not break the caller
            text = f"{record.name}: {record.msg!r}"
        self.feed.post(LogEntry("log", text, record.levelno))


class LiveFeed:
    """Collects a run's live output for a display that polls it.

    Parameters
    ----------
    control
        The :class:`~liveseg.control.RunControl` to follow. :meth:`attach` connects the
        callbacks; :meth:`detach` (or :meth:`close`) removes them.
    """

    def __init__(self, control: RunControl) -> None:
        self.control = control
        self._lock = threading.Lock()
        self._image: Frame | None = None
        self._result: tuple[Frame, FrameResult, Mapping[str, np.ndarray]] | None = None
        self._points: list[CountPoint] = []
        self._log: collections.deque[LogEntry] = collections.deque(maxlen=10_000)
        self._run_started: str | None = None
        self._run_finished: dict[str, Any] | None = None
        self.frames_acquired = 0
        self.frames_segmented = 0
        self.frames_failed = 0
        self.dropped_images = 0
        """Acquired images never shown because a newer one arrived first."""
        self.dropped_results = 0
        """Segmentation results never shown because a newer one arrived first."""
        self.run_dir: Path | None = None
        self._handler = _LogHandler(self)
        self._attached = False

    def _slots(self) -> list[tuple[Any, Any]]:
        sig = self.control.signals
        return [
            (sig.acquired, self._on_image),
            (sig.segmented, self._on_segmented),
            (sig.flagged, self._on_flagged),
            (sig.started, self._on_run_started),
            (sig.finished, self._on_run_finished),
            (sig.recorded, self._on_record),
        ]

    # -- wiring -----------------------------------------------------------------------
    def attach(self) -> None:
        """Connect to the control's signals and the ``liveseg`` logger."""
        if self._attached:
            return
        for sig, slot in self._slots():
            sig.connect(slot)
        logging.getLogger("liveseg").addHandler(self._handler)
        self._attached = True

    def detach(self) -> None:
        """Disconnect everything :meth:`attach` connected (idempotent)."""
        if not self._attached:
            return
        self._attached = False
        logging.getLogger("liveseg").removeHandler(self._handler)
        for sig, slot in self._slots():
            sig.disconnect(slot)

    close = detach

    # -- callbacks (runner / worker threads: O(1) only) --------------------------------
    def _on_image(self, frame: Frame) -> None:
        with self._lock:
            if self._image is not None:
                self.dropped_images += 1
            self._image = frame
            self.frames_acquired += 1

    def _on_segmented(
        self, frame: Frame, result: FrameResult, columns: Mapping[str, np.ndarray]
    ) -> None:
        with self._lock:
            if result.status is not FrameStatus.OK:
                if result.status is FrameStatus.FAILED:
                    self.frames_failed += 1
                return
            labels = columns.get("label") if columns else None
            count = len(labels) if labels is not None else 0  # measured already: no unique()
            self._points.append(CountPoint(frame.index, frame.time_s, frame.position, count))
            if self._result is not None:
                self.dropped_results += 1
            self._result = (frame, result, columns)
            self.frames_segmented += 1

    def _on_flagged(self, flag: Flag) -> None:
        reason = f": {flag.reason}" if flag.reason else ""
        self.post(LogEntry("flag", f"frame {flag.frame_index} flagged by {flag.source}{reason}"))

    def _on_record(self, record: dict[str, Any]) -> None:
        kind = str(record.get("kind", "?"))
        if kind in _QUIET_KINDS:
            return
        fields = {k: v for k, v in record.items() if k not in ("time", "kind")}
        text = f"{kind}: " + ", ".join(f"{k}={v}" for k, v in fields.items())
        level = logging.ERROR if "error" in kind or "failed" in kind else logging.INFO
        self.post(LogEntry(kind, text, level))

    def _on_run_started(self, run_dir: str) -> None:
        with self._lock:
            self._image = None
            self._result = None
            self._points.clear()
            self.frames_acquired = self.frames_segmented = self.frames_failed = 0
            self.dropped_images = self.dropped_results = 0
            self.run_dir = Path(run_dir)
            self._run_started = run_dir
        self.post(LogEntry("run", f"run started: {run_dir}"))

    def _on_run_finished(self, summary: dict[str, Any]) -> None:
        with self._lock:
            self._run_finished = dict(summary)

    def post(self, entry: LogEntry) -> None:
        """Add a log line (any thread)."""
        with self._lock:
            self._log.append(entry)

    # -- display side -----------------------------------------------------------------
    def take(self) -> Snapshot:
        """Everything new since the last call; called by the display's timer."""
        with self._lock:
            snap = Snapshot(
                image=self._image,
                result=self._result,
                points=self._points,
                log=list(self._log),
                run_started=self._run_started,
                run_finished=self._run_finished,
            )
            self._image = None
            self._result = None
            self._points = []
            self._log.clear()
            self._run_started = None
            self._run_finished = None
        return snap
