"""RunControl: start, pause, resume, stop and flag a Session's run from a GUI or notebook.

A :class:`~liveseg.session.Session` runs blocking (``session.run()``). A window needs the
same run without blocking its event loop, buttons that know what the run is doing, and
one place to hear what happened. :class:`RunControl` is that place, and the *only* code
outside the session that touches its internals (the core's MDA runner, the run's event
records): the live window and the napari dock talk to the session only through it.

- :meth:`RunControl.start` runs ``session.run`` in a worker thread and returns at once;
  :meth:`~RunControl.pause`, :meth:`~RunControl.resume`, :meth:`~RunControl.stop` act on
  the running acquisition; :meth:`~RunControl.flag` puts a frame into the retraining
  queue once (a second flag of the same frame is refused, not added).
- :attr:`RunControl.state` is a :class:`RunState`; :meth:`RunControl.stats` a frozen
  :class:`RunStats` snapshot (counts, backlog, last frame and position).
- :attr:`RunControl.signals` is one typed psygnal :class:`RunSignals` group. Signals are
  emitted on the thread where things happen (the runner or a worker thread, the caller's
  thread for pause/resume/stop/flag); handlers must be O(1) — a display hands data to its
  own thread (see :class:`liveseg.gui.feed.LiveFeed`) and never slows the camera.

Example::

    with Session(load_config("configs/demo.yaml")) as session:
        control = RunControl(session)
        control.signals.segmented.connect(lambda frame, result, objects: ...)
        control.start()
        control.pause(); control.resume()
        control.flag(3, "missed a dim cell")
        summary = control.wait()
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psygnal import Signal, SignalGroup

from liveseg.errors import LivesegError
from liveseg.types import Flag, Frame, FrameStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy as np

    from liveseg.session import Session
    from liveseg.types import FrameResult

__all__ = [
    "ERROR_KINDS",
    "TRIGGER_KINDS",
    "ControlError",
    "FlagOutcome",
    "RunControl",
    "RunSignals",
    "RunState",
    "RunStats",
]

log = logging.getLogger("liveseg.control")

#: events.jsonl kinds re-emitted as :attr:`RunSignals.triggered` (smart-microscopy actions).
TRIGGER_KINDS = frozenset(
    {
        "proposal",
        "triggered_started",
        "events_skipped",
        "skip_requested",
        "interval_changed",
        "stop_requested",
        "base_delayed",
    }
)
#: events.jsonl kinds re-emitted as :attr:`RunSignals.error`.
ERROR_KINDS = frozenset({"plugin_error", "store_error", "error", "run_failed"})


class ControlError(LivesegError):
    """A control request that cannot act now (e.g. Start while a run is in progress)."""


class RunState(enum.StrEnum):
    """What the controlled run is doing."""

    IDLE = "idle"  # no run yet
    RUNNING = "running"
    PAUSED = "paused"  # acquisition paused; segmentation catches up meanwhile
    STOPPING = "stopping"  # stop requested: no new frames, the backlog is drained
    FINISHED = "finished"  # the last run ended (completed or stopped) and was stored
    FAILED = "failed"  # the last run raised; see :attr:`RunStats.error`

    @property
    def active(self) -> bool:
        """Whether a run is in progress (running, paused or stopping)."""
        return self in (RunState.RUNNING, RunState.PAUSED, RunState.STOPPING)


@dataclass(frozen=True, slots=True)
class RunStats:
    """A snapshot of the current (or last) run, cheap to take at display rate.

    ``backlog`` is the number of acquired frames not processed yet (segmented, skipped
    or failed). ``last_acquired`` / ``last_segmented`` are ``(frame index, position)``.
    """

    state: RunState
    acquired: int = 0
    segmented: int = 0
    skipped: int = 0
    failed: int = 0
    backlog: int = 0
    flagged: int = 0
    last_acquired: tuple[int, int] | None = None
    last_segmented: tuple[int, int] | None = None
    segment_ms_mean: float | None = None
    """Mean chain time of the last 20 segmented frames."""
    latency_ms_p50: float | None = None
    """Median acquisition → segmented time of the last 20 frames."""
    rate_fps: float = 0.0
    """Frames segmented per second over the last 5 s."""
    run_dir: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FlagOutcome:
    """What :meth:`RunControl.flag` did: ``added`` is False for a frame flagged before."""

    frame_index: int
    added: bool
    message: str
    flag: Flag | None = None


class RunSignals(SignalGroup):
    """Everything a display needs to hear about a run, as one typed signal group."""

    started = Signal(str)
    """A run started: its run directory."""
    acquired = Signal(Frame)
    """A frame was acquired (runner thread): numbered like the run's frames.csv."""
    segmented = Signal(Frame, object, object)
    """``(Frame, FrameResult, objects)`` for every processed frame; see ``result.status``
    (``ok``, ``skipped``, ``failed``; ``objects`` is empty unless ``ok``)."""
    flagged = Signal(Flag)
    """A frame went into the retraining queue (operator or policy)."""
    triggered = Signal(dict)
    """A smart-microscopy record (:data:`TRIGGER_KINDS`): proposals, triggered series…"""
    error = Signal(dict)
    """A plugin, storage or run error record (:data:`ERROR_KINDS`)."""
    recorded = Signal(dict)
    """Every record of the run's events.jsonl (kind, frame, …), including the above."""
    finished = Signal(dict)
    """The run ended: its summary (``{"error": …}`` added when it failed)."""
    state_changed = Signal(RunState)
    """:attr:`RunControl.state` changed."""


# --------------------------------------------------------------------------------------
# The Session's sources. Records come from ``SessionEvents.event_recorded`` (every
# events.jsonl record), skipped and failed frames through ``frame_segmented`` (their
# ``result.status``), Stop is ``Session.request_stop()``. "Acquired" is the core's
# frameReady, numbered like the Controller numbers frames: the session's
# ``frame_acquired`` fires when a worker *takes* a frame from the queue, which would hide
# the backlog and delay the newest-image view.
# --------------------------------------------------------------------------------------
class _SessionLink:
    """Connects a Session's sources to :class:`RunControl`'s handlers."""

    def __init__(self, session: Session, control: RunControl) -> None:
        self.session = session
        self.control = control
        self._index = 0  # frameReady count of this run (the Controller's numbering)

    def _pairs(self) -> list[tuple[Any, Callable[..., Any]]]:
        ev = self.session.events
        c = self.control
        return [
            (ev.frame_segmented, c._on_segmented),
            (ev.frame_flagged, c._on_flagged),
            (ev.run_started, self._on_run_started),
            (ev.event_recorded, c._on_record),
        ]

    def _core_pairs(self) -> list[tuple[Any, Callable[..., Any]]]:
        mda = self.session.core.mda.events
        c = self.control
        return [
            (mda.frameReady, self._on_frame_ready),
            (mda.sequenceStarted, c._reassert),
            (mda.eventStarted, c._reassert),
        ]

    def connect(self) -> None:
        from liveseg.acquisition import connect_direct

        for sig, slot in self._pairs():
            sig.connect(slot)
        # Direct: a queued Qt connection would hand every image to the GUI thread.
        for sig, slot in self._core_pairs():
            connect_direct(sig, slot)

    def disconnect(self) -> None:
        for sig, slot in self._pairs():
            sig.disconnect(slot)
        if getattr(self.session, "core", None) is None:  # gone once the session is closed
            return
        for sig, slot in self._core_pairs():
            try:
                sig.disconnect(slot)
            except (RuntimeError, TypeError, ValueError):  # devices already unloaded
                pass

    def _on_run_started(self, run_dir: str) -> None:
        self._index = 0
        self.control._on_run_started(run_dir)

    def _on_frame_ready(self, image: np.ndarray, event: Any = None, meta: Any = None) -> None:
        index = getattr(event, "index", None) or {}
        frame = Frame(index=self._index, image=image, event=event, position=int(index.get("p", 0)))
        self._index += 1
        self.control._on_acquired(frame)

    def request_stop(self) -> None:
        # Stop acquiring; acquired frames are drained and stored; run.json says "stopped".
        self.session.request_stop(status="stopped")

    def set_paused(self, paused: bool) -> None:
        self.session.core.mda.set_paused(paused)


class RunControl:
    """Drive one :class:`~liveseg.session.Session` without blocking the caller.

    Parameters
    ----------
    session
        The session to drive. The control connects to its signals at once and stays
        connected until :meth:`close`; it never closes the session itself.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.signals = RunSignals()
        self._lock = threading.RLock()
        self._state = RunState.IDLE
        self._thread: threading.Thread | None = None
        self._pause_wanted = False
        self._stop_wanted = False
        self._flag_lock = threading.Lock()
        self._flagged: set[tuple[str | None, int]] = set()
        self._summary: dict[str, Any] | None = None
        self._reset_counts(None)
        self._link = _SessionLink(session, self)
        self._link.connect()
        self._closed = False

    def _reset_counts(self, run_dir: str | None) -> None:
        self._run_dir = run_dir
        self._acquired = self._segmented = self._skipped = self._failed = 0
        self._flag_count = 0
        self._last_acquired: tuple[int, int] | None = None
        self._last_segmented: tuple[int, int] | None = None
        self._acquired_at: dict[int, float] = {}
        self._seg_ms: deque[float] = deque(maxlen=20)
        self._latency_ms: deque[float] = deque(maxlen=20)
        self._done_at: deque[float] = deque(maxlen=2000)
        self._error: str | None = None

    # -- state ------------------------------------------------------------------------
    @property
    def state(self) -> RunState:
        """The run's :class:`RunState`."""
        return self._state

    @property
    def running(self) -> bool:
        """Whether a run is in progress (running, paused or stopping)."""
        return self._state.active

    @property
    def run_dir(self) -> Path | None:
        """The current (or last) run's directory, once the run has started."""
        return Path(self._run_dir) if self._run_dir else None

    @property
    def summary(self) -> dict[str, Any] | None:
        """The last finished run's summary (``None`` before the first run ends)."""
        return self._summary

    @property
    def config(self) -> Any:
        """The session's :class:`~liveseg.config.LivesegConfig`."""
        return self.session.config

    def _set_state(self, state: RunState) -> None:
        with self._lock:
            if state is self._state:
                return
            self._state = state
        self.signals.state_changed.emit(state)

    # -- control ----------------------------------------------------------------------
    def start(self, sequence: Any = None, output: str | Path | None = None) -> None:
        """Run ``sequence`` (default: the config's) in a worker thread; returns at once.

        Raises
        ------
        ControlError
            While a run is in progress, or after :meth:`close`.
        """
        with self._lock:
            if self._closed:
                raise ControlError("this run control is closed")
            if self._state.active:
                raise ControlError(f"a run is already {self._state.value}: stop it first")
            self._pause_wanted = self._stop_wanted = False
            self._summary = None
            self._reset_counts(None)
            self._thread = threading.Thread(
                target=self._run, args=(sequence, output), name="liveseg-run", daemon=True
            )
            self._state = RunState.RUNNING
        self.signals.state_changed.emit(RunState.RUNNING)
        self._thread.start()

    def _run(self, sequence: Any, output: str | Path | None) -> None:
        try:
            summary = dict(self.session.run(sequence, output=output))
            state = RunState.FINISHED
        except Exception as exc:
            log.exception("run failed")
            self._error = f"{type(exc).__name__}: {exc}"
            summary = {"error": self._error}
            if self._run_dir:
                summary["run_dir"] = self._run_dir
            state = RunState.FAILED
        if state is RunState.FAILED:
            self._on_record({"kind": "run_failed", "error": self._error})
        self._summary = summary
        self._set_state(state)
        self.signals.finished.emit(summary)

    def pause(self) -> None:
        """Pause acquiring (segmentation goes on with the frames already acquired).

        A pause asked for before the acquisition's first event takes effect when it
        starts. No-op unless running.
        """
        self._set_paused(True)

    def resume(self) -> None:
        """Resume a paused acquisition (no-op unless paused)."""
        self._set_paused(False)

    def toggle_pause(self) -> None:
        """Pause when running, resume when paused (a Pause/Resume button)."""
        self._set_paused(self._state is RunState.RUNNING)

    def _set_paused(self, paused: bool) -> None:
        before, after = (
            (RunState.RUNNING, RunState.PAUSED) if paused else (RunState.PAUSED, RunState.RUNNING)
        )
        with self._lock:
            if self._state is not before:
                return
            self._pause_wanted = paused
            self._link.set_paused(paused)
        self._set_state(after)

    def stop(self) -> None:
        """Stop acquiring; frames already acquired are still segmented and stored.

        The state is ``stopping`` until the backlog is drained, then ``finished``.
        """
        with self._lock:
            if self._state not in (RunState.RUNNING, RunState.PAUSED):
                return
            self._pause_wanted = False
            self._stop_wanted = True  # asked again when the acquisition starts, if it has not
            self._link.request_stop()
        self._set_state(RunState.STOPPING)

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Block until the run thread ends; the summary, or ``None`` on timeout."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return None
        return self._summary

    def close(self, timeout: float = 60.0) -> None:
        """Stop any run, wait for it, and disconnect from the session (idempotent)."""
        if self._closed:
            return
        self.stop()
        if self.wait(timeout) is None and self._thread is not None:
            log.error("the run did not stop within %.0f s", timeout)
        self._closed = True
        self._link.disconnect()

    # -- flagging ---------------------------------------------------------------------
    def flag(self, frame_index: int, reason: str = "", source: str = "operator") -> FlagOutcome:
        """Put frame ``frame_index`` (image + predicted labels) into the retraining queue.

        A frame goes in once per run: a second flag (by the operator or after a flag
        policy) returns ``added=False`` with "already flagged" and adds nothing.
        """
        with self._flag_lock:
            if self._state.active and self._run_dir is None:
                return FlagOutcome(frame_index, False, "the run is starting: nothing to flag yet")
            key = (self._run_dir, frame_index)
            if key in self._flagged:
                return FlagOutcome(
                    frame_index, False, f"frame {frame_index} is already flagged: not added again"
                )
            flag = self.session.flag(frame_index, reason, source=source)
            self._flagged.add(key)
        return FlagOutcome(frame_index, True, f"frame {frame_index} flagged for retraining", flag)

    def is_flagged(self, frame_index: int) -> bool:
        """Whether ``frame_index`` of the current run has been flagged."""
        return (self._run_dir, frame_index) in self._flagged

    # -- stats ------------------------------------------------------------------------
    def stats(self) -> RunStats:
        """A consistent snapshot of the run's numbers (any thread)."""
        with self._lock:
            now = time.monotonic()
            recent = sum(1 for t in self._done_at if now - t < 5.0)
            seg = list(self._seg_ms)
            lat = sorted(self._latency_ms)
            processed = self._segmented + self._skipped + self._failed
            return RunStats(
                state=self._state,
                acquired=self._acquired,
                segmented=self._segmented,
                skipped=self._skipped,
                failed=self._failed,
                backlog=max(0, self._acquired - processed),
                flagged=self._flag_count,
                last_acquired=self._last_acquired,
                last_segmented=self._last_segmented,
                segment_ms_mean=sum(seg) / len(seg) if seg else None,
                latency_ms_p50=lat[len(lat) // 2] if lat else None,
                rate_fps=recent / 5.0,
                run_dir=self._run_dir,
                error=self._error,
            )

    def chain_description(self) -> list[str]:
        """One line per chain step: step name, backend, plugin and version, model."""
        host = self.session.host
        versions = host.versions()
        pipeline = self.session.pipeline
        lines = []
        for step, backend_name, backend in zip(
            pipeline.step_names, pipeline.backend_names, pipeline.backends, strict=False
        ):
            plugin = host.backend_plugin(backend_name)
            version = versions.get(plugin, "")
            text = f"{step} — {backend_name} ({plugin}{' ' + version if version else ''})"
            for attr in ("model_version", "model_id", "model_name", "model"):
                value = getattr(backend, attr, None)
                if isinstance(value, str | int) and value != "":
                    text += f", model {value}"
                    break
            lines.append(text)
        return lines

    # -- session callbacks (runner / worker threads: O(1) only) ------------------------
    def _on_run_started(self, run_dir: str) -> None:
        with self._lock:
            self._reset_counts(run_dir)
        self.signals.started.emit(run_dir)

    def _reassert(self, *args: Any) -> None:
        """Re-apply a wanted stop or pause (runner thread: sequence and event starts).

        The runner ignores both while the session is still preparing, and
        pymmcore-plus 0.18 loses a pause set while it waits for an event that is already
        due (it overwrites PAUSED with ACQUIRING). Asked again during ACQUIRING, the pause
        is deferred to the end of this event, which it never loses.
        """
        with self._lock:
            if self._stop_wanted:
                self._link.request_stop()
            elif self._pause_wanted:
                self._link.set_paused(True)

    def _on_acquired(self, frame: Frame) -> None:
        with self._lock:
            self._acquired += 1
            self._last_acquired = (frame.index, frame.position)
            self._acquired_at[frame.index] = time.perf_counter()
        self.signals.acquired.emit(frame)

    def _on_segmented(
        self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]
    ) -> None:
        with self._lock:
            t_acq = self._acquired_at.pop(frame.index, None)
            if result.status is FrameStatus.OK:
                self._segmented += 1
                self._last_segmented = (frame.index, frame.position)
                self._seg_ms.append(float(sum(result.timings_ms.values())))
                if t_acq is not None:
                    self._latency_ms.append((time.perf_counter() - t_acq) * 1e3)
                self._done_at.append(time.monotonic())
            elif result.status is FrameStatus.SKIPPED:
                self._skipped += 1
            else:
                self._failed += 1
        self.signals.segmented.emit(frame, result, objects)

    def _on_flagged(self, flag: Flag) -> None:
        with self._lock:
            self._flag_count += 1
            self._flagged.add((self._run_dir, flag.frame_index))
        self.signals.flagged.emit(flag)

    def _on_record(self, record: dict[str, Any]) -> None:
        kind = str(record.get("kind", ""))
        self.signals.recorded.emit(record)
        if kind in TRIGGER_KINDS:
            self.signals.triggered.emit(record)
        elif kind in ERROR_KINDS:
            self.signals.error.emit(record)
