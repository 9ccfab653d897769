"""The trigger controller: triggers asked on the worker thread, the queue fed.

:class:`TriggerController` runs after a frame is segmented and measured (the frame
processor's ``TriggerConsumer``). It asks every trigger (configured ones and the
``propose_events`` adapters) for proposals and actions, passes proposals through
:func:`~liveseg.triggers.selection.select`, records every decision in ``events.jsonl``
and hands accepted work to the :class:`~liveseg.triggers.scheduler.TriggerQueue`.
A trigger that raises is recorded with the frame; the run goes on.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.acquisition import connect_direct
from liveseg.plugin_api import (
    SetInterval,
    SkipRest,
    StopRun,
    TriggerState,
)
from liveseg.triggers.roi import RoiStamp
from liveseg.triggers.scheduler import TriggerQueue, _Unit
from liveseg.triggers.selection import select
from liveseg.types import FrameStatus, Proposal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    import useq
    from pymmcore_plus import CMMCorePlus

    from liveseg.config import SelectionConfig
    from liveseg.store import RunStore, TriggeredStore
    from liveseg.types import Frame, FrameResult

__all__ = ["TriggerController", "build_trigger_controller"]

log = logging.getLogger("liveseg.triggers")

BASE = "base"


class TriggerController:
    """Evaluates triggers on the worker thread and feeds the :class:`TriggerQueue`.

    Build it with :func:`build_trigger_controller`; the session runs ``queue`` instead
    of the base sequence inside :meth:`attached`.
    """

    def __init__(
        self,
        triggers: Sequence[tuple[str, Any]],
        selection: SelectionConfig,
        store: RunStore,
        triggered: TriggeredStore,
        base: Any,
        *,
        clock: Callable[[], float] | None = None,
        frame_s: float = 0.03,
        record: Callable[..., None] | None = None,
    ) -> None:
        self.triggers = list(triggers)
        self.selection = selection
        self.store = store
        self.triggered = triggered
        self.record: Callable[..., None] = record or store.event
        self.state = TriggerState()
        self.on_skip: Callable[[int], None] | None = None
        """Told how many base planes to leave empty (the session's image writer)."""
        gate = any(getattr(t, "gates", False) for _, t in self.triggers)
        self.roi = RoiStamp()
        self.queue = TriggerQueue(
            base,
            selection,
            record=self.record,
            clock=clock,
            gate=gate,
            on_skip=self._skip_planes,
            frame_s=frame_s,
            prepare=self.roi.restore,
        )
        self._lock = threading.Lock()
        self._accept_times: collections.deque[float] = collections.deque()
        self._series = 0
        self.proposals_accepted = 0
        self.proposals_rejected = 0
        self.errors = 0
        self._t0 = time.perf_counter()

    # -- wiring ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def attached(self, core: CMMCorePlus) -> Iterator[TriggerController]:
        """Connect the timing handler and read the sensor for the ROI of triggered events."""
        ev = core.mda.events
        self.queue._clock = core.mda.event_seconds_elapsed
        self.roi.attach(core)
        pairs: list[tuple[Any, Callable[..., Any]]] = [
            (ev.eventStarted, self.queue.on_event_started),
        ]
        for sig, fn in pairs:
            connect_direct(sig, fn)
        try:
            yield self
        finally:
            for sig, fn in pairs:
                sig.disconnect(fn)

    def _skip_planes(self, n: int) -> None:
        if self.on_skip is not None:
            self.on_skip(n)

    # -- worker side ----------------------------------------------------------------------
    def skipped(self, frame: Frame) -> None:
        """A frame the backlog policy did not segment (its image is already stored)."""
        self.queue.frame_evaluated(frame)

    def evaluate(
        self,
        frame: Frame,
        result: FrameResult,
        objects: Mapping[str, np.ndarray],
        arrived: float | None = None,
    ) -> None:
        """Run every trigger on a base frame; store triggered frames. Never raises."""
        try:
            if str(frame.metadata.get("series", BASE)) != BASE:
                return  # its image was stored by the frame sink
            self._evaluate_base(frame, result, objects, arrived)
        except Exception as exc:  # the controller itself must not kill the worker
            log.exception("trigger evaluation failed on frame %d", frame.index)
            self.record("plugin_error", frame=frame.index, hook="triggers", error=repr(exc))
        finally:
            self.queue.frame_evaluated(frame)

    def _evaluate_base(
        self,
        frame: Frame,
        result: FrameResult,
        objects: Mapping[str, np.ndarray],
        arrived: float | None,
    ) -> None:
        with self._lock:
            st = self.state
            ok = result.status is FrameStatus.OK
            count = len(objects.get("label", ())) if ok else 0
            st.frames += 1
            st.objects_total += count
            st.counts_by_position[frame.position] = count
            st.time_s = time.perf_counter() - self._t0
            st.interval_s = self.queue.interval_s
            items: list[tuple[str, Any]] = []
            for name, trig in self.triggers:
                try:
                    out = trig.propose(frame, result, objects, st)
                except Exception as exc:
                    self.errors += 1
                    log.warning("trigger %r raised on frame %d: %r", name, frame.index, exc)
                    self.record(
                        "plugin_error",
                        frame=frame.index,
                        plugin=name,
                        hook="trigger",
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    continue
                items.extend((name, o) for o in out or ())
            proposals = [o for _, o in items if isinstance(o, Proposal)]
            for name, o in items:
                if isinstance(o, SkipRest | SetInterval | StopRun):
                    self._act(frame, name, o)
                elif not isinstance(o, Proposal):
                    self.record(
                        "plugin_error",
                        frame=frame.index,
                        plugin=name,
                        hook="trigger",
                        error=f"returned {type(o).__name__}, not a Proposal or an action",
                    )
            if proposals:
                self._select(frame, proposals, arrived)

    def _act(self, frame: Frame, source: str, action: SkipRest | SetInterval | StopRun) -> None:
        if isinstance(action, SetInterval):
            if action.interval_s == self.queue.interval_s:
                return
            self.record(
                "interval_changed",
                frame=frame.index,
                source=source,
                interval_s=action.interval_s,
                reason=action.reason,
            )
        elif isinstance(action, SkipRest):
            self.record(
                "skip_requested",
                frame=frame.index,
                source=source,
                position=action.position,
                t=action.t,
                reason=action.reason,
            )
        else:
            if self.queue.stop_reason is not None:
                return
            self.record("stop_requested", frame=frame.index, source=source, reason=action.reason)
        self.queue.apply(action)

    def _select(self, frame: Frame, proposals: list[Proposal], arrived: float | None) -> None:
        now = time.perf_counter()
        while self._accept_times and now - self._accept_times[0] > 60.0:
            self._accept_times.popleft()
        decisions = select(
            proposals, self.state.accepted, self.selection, list(self._accept_times), now
        )
        for prop, ok, reason in decisions:
            fields: dict[str, Any] = {
                "frame": prop.frame_index,
                "source": prop.source,
                "label": prop.label,
                "target_xy": list(prop.target_xy) if prop.target_xy else None,
                "accepted": ok,
                "reason": reason if not ok else (prop.reason or "accepted"),
            }
            if not ok:
                self.proposals_rejected += 1
                self.record("proposal", **fields)
                continue
            self._series += 1
            series = f"{prop.source}-{self._series:04d}"
            events = self._stamp(prop, series)
            self.proposals_accepted += 1
            self.state.accepted.append(prop)
            self.state.triggered_series += 1
            self._accept_times.append(now)
            self.record("proposal", series=series, n_events=len(events), **fields)
            self.triggered.declare(
                series,
                _sizes(events),
                {
                    "trigger": prop.source,
                    "frame": prop.frame_index,
                    "label": prop.label,
                    "target_xy": list(prop.target_xy) if prop.target_xy else None,
                    "reason": prop.reason,
                },
            )
            self.queue.add(_Unit(series, events, prop, arrived, now))

    def _stamp(self, prop: Proposal, series: str) -> list[useq.MDAEvent]:
        """The proposal's events, marked as one triggered series (never the base grid)."""
        raw = list(prop.events) if getattr(prop, "events", ()) else [prop.event]
        out = []
        for ev in raw:
            md = dict(ev.metadata)
            md["liveseg"] = {
                "series": series,
                "trigger": prop.source,
                "trigger_frame": prop.frame_index,
                "trigger_label": prop.label,
            }
            out.append(
                self.roi.stamp(
                    ev.model_copy(
                        update={"metadata": md, "min_start_time": None, "reset_event_timer": False}
                    )
                )
            )
        return out

    def summary(self) -> dict[str, Any]:
        """Numbers for run.json."""
        q = self.queue
        lat = q.trigger_latency_ms
        delay = q.base_delay_s
        return {
            "triggers": [n for n, _ in self.triggers],
            "proposals_accepted": self.proposals_accepted,
            "proposals_rejected": self.proposals_rejected,
            "trigger_errors": self.errors,
            "triggered_series": self.state.triggered_series,
            "trigger_latency_ms_p50": float(np.percentile(lat, 50)) if lat else math.nan,
            "trigger_latency_ms_p95": float(np.percentile(lat, 95)) if lat else math.nan,
            "base_delay_s_max": float(max(delay)) if delay else math.nan,
            "base_events_skipped": q.base_skipped,
            "stopped": q.stop_reason,
        }


def _sizes(events: Sequence[useq.MDAEvent]) -> dict[str, int]:
    sizes = {"c": 1, "z": 1}
    for ev in events:
        for ax in ("c", "z"):
            sizes[ax] = max(sizes[ax], int(ev.index.get(ax, 0)) + 1)
    return sizes


def build_trigger_controller(
    triggers: Sequence[tuple[str, Any]],
    selection: SelectionConfig,
    store: RunStore,
    base: Any,
    *,
    frame_s: float = 0.03,
    record: Callable[..., None] | None = None,
) -> TriggerController | None:
    """The controller for already built ``triggers``, or ``None`` when there are none.

    The triggers come from :meth:`liveseg.assembly.Assembly.build_triggers`.
    """
    if not triggers:
        return None
    from liveseg.store import TriggeredStore

    return TriggerController(
        triggers,
        selection,
        store,
        TriggeredStore(store.path),
        base,
        frame_s=frame_s,
        record=record,
    )
