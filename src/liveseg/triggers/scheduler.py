"""The scheduler: :class:`TriggerQueue`, the event source the MDA runner iterates.

It interleaves the base ``useq.MDASequence`` with triggered sub-acquisitions and does
the waiting between time points itself, so triggered work that arrives during the wait
runs in the gap. A base time point scheduled at ``t`` starts at ``t`` ± one frame when
the triggered work fits before it; when it does not, the work is deferred by at most
``selection.max_defer_timepoints`` time points, then run, and the delay it causes is
recorded (``base_delayed``).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from liveseg.plugin_api import (
    SetInterval,
    SkipRest,
    StopRun,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    import useq

    from liveseg.config import SelectionConfig
    from liveseg.types import Frame, Proposal

__all__ = ["TriggerQueue"]

BASE = "base"


@dataclass
class _Unit:
    """One accepted triggered sub-acquisition, run atomically."""

    series: str
    events: list[useq.MDAEvent]
    proposal: Proposal
    arrived: float | None  # perf_counter of the triggering frame's arrival
    queued: float
    deferred_past: int = 0  # base time points it already waited behind
    deferring_t: int | None = None


@dataclass
class _Base:
    """One base event in the look-ahead buffer."""

    event: useq.MDAEvent
    n: int  # position in the base sequence (0, 1, 2, …)


class TriggerQueue:
    """Thread-safe event source for ``core.mda.run``: base sequence + triggered events.

    Iterated by the runner thread; fed by worker threads (:meth:`add`, :meth:`apply`,
    :meth:`frame_evaluated`). ``clock`` must be the runner's event clock
    (``core.mda.event_seconds_elapsed``) so that scheduled times mean the same to both.

    Parameters
    ----------
    base
        The base acquisition (``useq.MDASequence`` or any iterable of events).
    selection
        Scheduling settings (``insert``, ``max_defer_timepoints``, timeouts).
    record
        ``record(kind, **fields)``: where schedule events go (``RunStore.event``).
    gate
        Wait for the first frame of each (position, time point) to be evaluated before
        acquiring the rest of it (set when a trigger needs it, e.g. ``skip_if_empty``).
    on_skip
        Called with the number of base frames dropped (keeps the base sink aligned).
    frame_s
        Initial estimate of one event's duration (refined by measurement).
    prepare
        Applied to every event yielded, on the runner thread (the camera ROI, see
        :class:`liveseg.triggers.roi.RoiStamp`).
    """

    def __init__(
        self,
        base: Iterable[useq.MDAEvent],
        selection: SelectionConfig,
        *,
        record: Callable[..., None] | None = None,
        clock: Callable[[], float] | None = None,
        gate: bool = False,
        on_skip: Callable[[int], None] | None = None,
        frame_s: float = 0.03,
        prepare: Callable[[useq.MDAEvent], useq.MDAEvent] | None = None,
    ) -> None:
        self.selection = selection
        self._prepare = prepare or (lambda ev: ev)
        self._base_iter: Iterator[useq.MDAEvent] = iter(base)
        self._ahead: collections.deque[_Base] = collections.deque()
        self._n_base = 0
        self._base_done = False
        self._record = record or (lambda kind, **kw: None)
        self._t0 = time.perf_counter()
        self._clock = clock or (lambda: time.perf_counter() - self._t0)
        self._gate = gate
        self._on_skip = on_skip
        self._cond = threading.Condition()
        self._pending: list[_Unit] = []
        self._unit: collections.deque[useq.MDAEvent] = collections.deque()
        self._skip: set[tuple[int, int]] = set()
        self._interval: float | None = None
        self._stop_reason: str | None = None
        # base schedule: the time point in progress and when it was scheduled
        self._cur_t: int | None = None
        self._cur_plan: float | None = None
        self._cur_sched: float | None = None
        self._cur_block: tuple[int, int] | None = None
        self._gate_wait_since: float | None = None
        self._evaluated_blocks: set[tuple[int, int]] = set()
        # accounting
        self.frames_yielded = 0
        self.frames_evaluated = 0
        self.base_skipped = 0
        self.event_s = frame_s
        self._started_at: float | None = None
        self._started_info: dict[str, Any] | None = None
        self.trigger_latency_ms: list[float] = []
        self.base_delay_s: list[float] = []
        self.timepoint_starts: list[tuple[int, float, float]] = []  # (t, scheduled, started)
        self.dropped_units = 0
        self._triggered_since = 0

    # -- worker side ----------------------------------------------------------------------
    def add(self, unit: _Unit) -> None:
        """Queue an accepted sub-acquisition (higher proposal priority first)."""
        with self._cond:
            self._pending.append(unit)
            self._pending.sort(key=lambda u: -u.proposal.priority)
            self._cond.notify_all()

    def apply(self, action: SkipRest | SetInterval | StopRun) -> None:
        """Apply an action to the base acquisition."""
        with self._cond:
            if isinstance(action, SkipRest):
                self._skip.add((action.position, action.t))
            elif isinstance(action, SetInterval):
                self._interval = action.interval_s
            else:
                if self._stop_reason is None:
                    self._stop_reason = action.reason or "stop requested"
            self._cond.notify_all()

    def frame_evaluated(self, frame: Frame) -> None:
        """A frame went through the triggers (or was skipped/failed): progress gates."""
        with self._cond:
            self.frames_evaluated += 1
            md = frame.metadata
            if md.get("series", BASE) == BASE and frame.event is not None:
                idx = frame.event.index
                self._evaluated_blocks.add((int(idx.get("p", 0)), int(idx.get("t", 0))))
            self._cond.notify_all()

    @property
    def interval_s(self) -> float | None:
        """The interval override in force (``None``: the sequence's own)."""
        return self._interval

    @property
    def stop_reason(self) -> str | None:
        """Why the run was stopped early, if it was."""
        return self._stop_reason

    # -- runner side ----------------------------------------------------------------------
    def on_event_started(self, event: useq.MDAEvent) -> None:
        """``eventStarted`` handler (runner thread, O(1)): measure latency and drift."""
        now_perf = time.perf_counter()
        self._started_at = now_perf
        info = event.metadata.get("liveseg") if event.metadata else None
        if info and info.get("first") and info.get("arrived") is not None:
            lat = (now_perf - float(info["arrived"])) * 1e3
            self.trigger_latency_ms.append(lat)
            self._record(
                "triggered_started",
                series=info.get("series"),
                frame=info.get("trigger_frame"),
                label=info.get("trigger_label"),
                latency_ms=round(lat, 3),
            )
        elif info is None and event.metadata.get("liveseg_opens_t") is not None:
            sched = float(event.metadata["liveseg_sched"])
            started = self._clock()
            delay = started - sched
            t = int(event.metadata["liveseg_opens_t"])
            self.timepoint_starts.append((t, sched, started))
            self.base_delay_s.append(delay)
            self._record(
                "timepoint",
                t=t,
                scheduled_s=round(sched, 4),
                started_s=round(started, 4),
                delay_s=round(delay, 4),
                interval_s=self._interval,
            )
            if delay > self._tolerance():
                cause = (
                    f"{self._triggered_since} triggered event(s) ran before it"
                    if self._triggered_since
                    else "the base acquisition is slower than its plan"
                )
                self._record("base_delayed", t=t, delay_s=round(delay, 4), cause=cause)
            self._triggered_since = 0

    def __iter__(self) -> TriggerQueue:
        return self

    def __next__(self) -> useq.MDAEvent:
        with self._cond:
            self._measure_previous()
            while True:
                if self._stop_reason is not None:
                    self._finish_stop()
                    raise StopIteration
                if self._unit:
                    return self._yield_triggered(self._unit.popleft())
                base = self._peek_base()
                now = self._clock()
                if self._pending and self._start_unit(base, now):
                    continue
                if base is None:
                    if self._drained():
                        raise StopIteration
                    self._cond.wait(0.05)
                    continue
                ev = base.event
                block = _block(ev)
                if (
                    self._gate
                    and block == self._cur_block
                    and block not in self._evaluated_blocks
                    and block not in self._skip
                ):
                    if self._gate_wait_since is None:
                        self._gate_wait_since = time.perf_counter()
                    waited = time.perf_counter() - self._gate_wait_since
                    if waited < self.selection.gate_timeout_s:
                        self._cond.wait(min(0.05, self.selection.gate_timeout_s - waited))
                        continue
                    self._record("gate_timeout", p=block[0], t=block[1], waited_s=waited)
                    self._evaluated_blocks.add(block)
                sched = self._scheduled(ev)
                if sched is not None:
                    margin = min(0.002, self.event_s / 4)
                    if sched - now > margin:
                        self._cond.wait(min(sched - now - margin, 0.25))
                        continue
                return self._yield_base(self._ahead.popleft(), sched)

    # -- internals (all called with the lock held) ----------------------------------------
    def _tolerance(self) -> float:
        return max(self.event_s, 0.005)

    def _measure_previous(self) -> None:
        if self._started_at is not None:
            dur = time.perf_counter() - self._started_at
            if 0 < dur < 10:
                self.event_s = 0.8 * self.event_s + 0.2 * dur
            self._started_at = None

    def _fill(self, n: int) -> None:
        while len(self._ahead) < n and not self._base_done:
            try:
                ev = next(self._base_iter)
            except StopIteration:
                self._base_done = True
                return
            self._ahead.append(_Base(ev, self._n_base))
            self._n_base += 1

    def _peek_base(self) -> _Base | None:
        """Next base event that is not skipped (skips are recorded and sunk here)."""
        dropped = 0
        last: dict[str, int] = {}
        while True:
            self._fill(1)
            if not self._ahead:
                break
            head = self._ahead[0]
            # A time point's opening event is never dropped: it carries the schedule
            # (and is the probe frame a skip decision is made from).
            if _block(head.event) in self._skip and not self._opens(head.event):
                self._ahead.popleft()
                dropped += 1
                last = dict(head.event.index)
                continue
            break
        if dropped:
            self.base_skipped += dropped
            if self._on_skip is not None:
                self._on_skip(dropped)
            self._record(
                "events_skipped",
                n=dropped,
                p=int(last.get("p", 0)),
                t=int(last.get("t", 0)),
                reason="SkipRest",
            )
        return self._ahead[0] if self._ahead else None

    def _opens(self, ev: useq.MDAEvent) -> bool:
        t = int(ev.index.get("t", 0))
        return ev.min_start_time is not None and t != self._cur_t

    def _scheduled(self, ev: useq.MDAEvent) -> float | None:
        """When ``ev`` may start on the runner's clock, or None if it need not wait."""
        if not self._opens(ev):
            return None
        plan = float(ev.min_start_time or 0.0)
        if self._cur_sched is None or self._cur_plan is None:
            return plan
        dt = self._interval if self._interval is not None else plan - self._cur_plan
        return self._cur_sched + dt

    def _advance_time(self, ev: useq.MDAEvent) -> float | None:
        sched = self._scheduled(ev)
        if sched is not None:
            self._cur_t = int(ev.index.get("t", 0))
            self._cur_plan = float(ev.min_start_time or 0.0)
            self._cur_sched = sched
            for u in self._pending:
                if u.deferring_t is not None and u.deferring_t == self._cur_t:
                    u.deferred_past += 1
                    u.deferring_t = None
        return sched

    def _next_deadline(self, now: float) -> tuple[float, int | None]:
        """Latest start for triggered work so the next time point is on time."""
        if self.selection.insert == "between_timepoints":
            head = self._ahead[0] if self._ahead else None
            if head is not None and not self._opens(head.event):
                return (-math.inf, None)
        n_before = 0
        i = 0
        while True:
            self._fill(i + 1)
            if i >= len(self._ahead):
                return (math.inf, None)
            ev = self._ahead[i].event
            if _block(ev) not in self._skip and self._opens(ev):
                sched = self._scheduled(ev)
                assert sched is not None
                return (sched - n_before * self.event_s, int(ev.index.get("t", 0)))
            if _block(ev) not in self._skip:
                n_before += 1
            i += 1
            if i > 10_000:  # a huge time point: don't scan further
                return (math.inf, None)

    def _start_unit(self, base: _Base | None, now: float) -> bool:
        unit = self._pending[0]
        need = len(unit.events) * self.event_s
        deadline, t_next = self._next_deadline(now)
        fits = now + need <= deadline + self._tolerance()
        forced = unit.deferred_past >= self.selection.max_defer_timepoints
        if base is None or fits or forced:
            self._pending.pop(0)
            if not fits and base is not None:
                self._record(
                    "trigger_overrun",
                    series=unit.series,
                    expected_overrun_s=round(now + need - deadline, 4),
                    t=t_next,
                )
            first = True
            for ev in unit.events:
                md = dict(ev.metadata)
                info = dict(md.get("liveseg", {}))
                info["first"] = first
                info["arrived"] = unit.arrived
                md["liveseg"] = info
                self._unit.append(ev.model_copy(update={"metadata": md}))
                first = False
            return True
        if unit.deferring_t is None and t_next is not None:
            unit.deferring_t = t_next
            self._record("trigger_deferred", series=unit.series, until_after_t=t_next)
        return False

    def _yield_triggered(self, ev: useq.MDAEvent) -> useq.MDAEvent:
        self.frames_yielded += 1
        self._triggered_since += 1
        return self._prepare(ev)

    def _yield_base(self, item: _Base, sched: float | None) -> useq.MDAEvent:
        ev = item.event
        self._gate_wait_since = None
        opens = sched is not None
        if opens:
            self._advance_time(ev)
        self._cur_block = _block(ev)
        self.frames_yielded += 1
        md = dict(ev.metadata)
        if opens:
            md["liveseg_opens_t"] = self._cur_t
            md["liveseg_sched"] = sched
        return self._prepare(
            ev.model_copy(
                update={
                    "min_start_time": sched if opens else None,
                    # the first base event resets the runner's clock; keep that, nothing else
                    "reset_event_timer": bool(ev.reset_event_timer and item.n == 0),
                    "metadata": md,
                }
            )
        )

    def _drained(self) -> bool:
        """Base done, no work pending: finish once every frame is evaluated (or timeout)."""
        if self._pending or self._unit:
            return False
        if self.frames_evaluated >= self.frames_yielded:
            return True
        if self._gate_wait_since is None:
            self._gate_wait_since = time.perf_counter()
        if time.perf_counter() - self._gate_wait_since > self.selection.drain_timeout_s:
            self._record(
                "drain_timeout",
                unevaluated=self.frames_yielded - self.frames_evaluated,
                waited_s=self.selection.drain_timeout_s,
            )
            return True
        return False

    def _finish_stop(self) -> None:
        dropped = len(self._pending) + (1 if self._unit else 0)
        if dropped and self.dropped_units == 0:
            self.dropped_units = dropped
            self._record("triggers_dropped", n=dropped, reason="run stopped")
        self._pending.clear()
        self._unit.clear()


def _block(ev: useq.MDAEvent) -> tuple[int, int]:
    return (int(ev.index.get("p", 0)), int(ev.index.get("t", 0)))
