"""LiveFeed: the thread-safe hand-off between a running Session and a display.

The acquisition (runner thread) and the workers emit at their own pace; a display
polls :meth:`LiveFeed.take` from its own thread at a bounded rate (the Qt window and
the napari widget use a ~30 Hz timer). Every callback here is O(1): store a reference
under a lock, bump a counter. Nothing heavy ever runs on the runner or worker threads,
and a slow display can only make frames *skip the display* (counted as dropped), never
slow the camera or the chain.

This module does not import Qt, so it can be tested and reused without a GUI.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from liveseg.session import Session
    from liveseg.types import Flag, Frame, FrameResult

__all__ = ["CountPoint", "LiveFeed", "LogEntry", "Snapshot"]

#: events.jsonl kinds that are noise in an operator's log (one per skipped frame).
_QUIET_KINDS = frozenset({"skipped"})


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

    image: tuple[int, np.ndarray] | None = None
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
    """Collects a Session's live output for a display that polls it.

    Parameters
    ----------
    session
        The session to follow. :meth:`attach` connects the callbacks; :meth:`detach`
        (or :meth:`close`) removes them.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._lock = threading.Lock()
        self._image: tuple[int, np.ndarray] | None = None
        self._result: tuple[Frame, FrameResult, Mapping[str, np.ndarray]] | None = None
        self._points: list[CountPoint] = []
        self._log: collections.deque[LogEntry] = collections.deque(maxlen=10_000)
        self._run_started: str | None = None
        self._run_finished: dict[str, Any] | None = None
        self._next_index = 0
        self.frames_acquired = 0
        self.frames_segmented = 0
        self.frames_failed = 0
        self.dropped_images = 0
        """Acquired images never shown because a newer one arrived first."""
        self.dropped_results = 0
        """Segmentation results never shown because a newer one arrived first."""
        self.run_dir: Path | None = None
        self._events_offset = 0
        self._handler = _LogHandler(self)
        self._attached = False

    # -- wiring -----------------------------------------------------------------------
    def attach(self) -> None:
        """Connect to the session's signals and the core's ``frameReady``."""
        if self._attached:
            return
        ev = self.session.events
        ev.frame_segmented.connect(self._on_segmented)
        ev.frame_flagged.connect(self._on_flagged)
        ev.run_started.connect(self._on_run_started)
        ev.run_finished.connect(self._on_run_finished)
        from liveseg.acquisition import connect_direct

        # Direct: with Qt signals a plain connection would queue every image to the Qt
        # thread, which is exactly the thread that may be busy painting.
        connect_direct(self.session.core.mda.events.frameReady, self._on_image)
        logging.getLogger("liveseg").addHandler(self._handler)
        self._attached = True

    def detach(self) -> None:
        """Disconnect everything :meth:`attach` connected (idempotent)."""
        if not self._attached:
            return
        self._attached = False
        logging.getLogger("liveseg").removeHandler(self._handler)
        ev = self.session.events
        for sig, slot in (
            (ev.frame_segmented, self._on_segmented),
            (ev.frame_flagged, self._on_flagged),
            (ev.run_started, self._on_run_started),
            (ev.run_finished, self._on_run_finished),
        ):
            sig.disconnect(slot)
        core = getattr(self.session, "core", None)  # gone once the session is closed
        if core is not None:
            try:
                core.mda.events.frameReady.disconnect(self._on_image)
            except (RuntimeError, TypeError, ValueError):
                pass

    close = detach

    # -- callbacks (runner / worker threads: O(1) only) --------------------------------
    def _on_image(self, image: np.ndarray, event: Any = None, meta: Any = None) -> None:
        with self._lock:
            if self._image is not None:
                self.dropped_images += 1
            # Same numbering as the Controller: the n-th frameReady of a run is frame n.
            self._image = (self._next_index, image)
            self._next_index += 1
            self.frames_acquired += 1

    def _on_segmented(
        self, frame: Frame, result: FrameResult, columns: Mapping[str, np.ndarray]
    ) -> None:
        from liveseg.types import FrameStatus

        with self._lock:
            if result.status is not FrameStatus.OK:
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

    def _on_run_started(self, run_dir: str) -> None:
        with self._lock:
            self._next_index = 0
            self._image = None
            self._result = None
            self._points.clear()
            self.frames_acquired = self.frames_segmented = self.frames_failed = 0
            self.dropped_images = self.dropped_results = 0
            self.run_dir = Path(run_dir)
            self._events_offset = 0
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

    def read_events(self) -> list[LogEntry]:
        """New lines of the run's events.jsonl (triggers, flags, plugin errors).

        Called from the display thread at a low rate; reads only the bytes appended since
        the previous call.
        """
        run_dir = self.run_dir
        if run_dir is None:
            return []
        path = run_dir / "events.jsonl"
        try:
            with path.open("rb") as fh:
                fh.seek(self._events_offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # leave a half-written last line for next time
        self._events_offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            kind = str(rec.get("kind", "?"))
            if kind in _QUIET_KINDS or kind == "flag":  # flags arrive via frame_flagged
                continue
            fields = {k: v for k, v in rec.items() if k not in ("time", "kind")}
            text = f"{kind}: " + ", ".join(f"{k}={v}" for k, v in fields.items())
            level = logging.ERROR if "error" in kind else logging.INFO
            out.append(LogEntry(kind, text, level))
        return out
