"""Smart microscopy: acquisition events driven by what the chain detects.

The pieces, in the order a frame meets them:

* :class:`TriggerController` runs on the worker thread after a frame is segmented and
  measured. It asks every configured trigger (``propose(frame, result, objects, state)``)
  and every ``propose_events`` hook for :class:`~liveseg.types.Proposal` objects and
  :data:`Action` objects, passes proposals through :func:`select` (dedupe within R µm,
  rate limits per frame and per minute, stage limits), records every accepted and
  rejected proposal with its reason in ``events.jsonl``, and hands the accepted ones to
  the queue. A trigger that raises is recorded with the frame; the run goes on.
* :class:`TriggerQueue` is the thread-safe event source the MDA runner iterates. It
  interleaves the base ``useq.MDASequence`` with triggered sub-acquisitions, and it does
  the waiting between time points itself (instead of handing the runner a future event
  to sleep on), so triggered work that arrives during the wait runs in the gap. A base
  time point scheduled at ``t`` starts at ``t`` ± one frame when the triggered work fits
  before it; when it does not, the work is deferred by at most
  ``selection.max_defer_timepoints`` time points, then run, and the delay it causes is
  recorded (``base_delayed``).
* Every frame, base and triggered, is written in the runner thread by
  :class:`liveseg.image_writer.ImageWriter`; the controller tells it (``on_skip``) how
  many base planes to leave empty when events are skipped, so the base grid stays
  aligned. A run killed while the worker lags behind loses labels at most, never images.

Conditions in trigger parameters (``area_um2 > 80 and mean_intensity > 1.5 *
frame_median``) are parsed by :func:`compile_condition`: a small, safe expression
language over the measured columns (vectorised, one value per object) and frame-level
numbers; never ``eval``.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import logging
import math
import operator
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import ConfigError
from liveseg.plugin_api import (
    Action,
    SetInterval,
    SkipRest,
    StopRun,
    Trigger,
    TriggerContext,
    TriggerState,
)
from liveseg.types import FrameStatus, Proposal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    import useq
    from pymmcore_plus import CMMCorePlus

    from liveseg.config import LivesegConfig, SelectionConfig
    from liveseg.plugins import PluginHost
    from liveseg.store import RunStore, TriggeredStore
    from liveseg.types import Frame, FrameResult

__all__ = [
    "FRAME_NAMES",
    "Action",
    "Condition",
    "SetInterval",
    "SkipRest",
    "StopRun",
    "Trigger",
    "TriggerContext",
    "TriggerController",
    "TriggerQueue",
    "TriggerState",
    "build_trigger_controller",
    "compile_condition",
    "frame_namespace",
    "select",
]

log = logging.getLogger("liveseg.triggers")

BASE = "base"


# -- conditions ---------------------------------------------------------------------------
FRAME_NAMES: tuple[str, ...] = (
    "count",
    "frame_mean",
    "frame_median",
    "frame_std",
    "frame_min",
    "frame_max",
    "t",
    "p",
    "c",
    "z",
    "frames",
    "objects_total",
    "triggered_series",
    "time_s",
    "fast",
)
"""Frame-level and cumulative names every condition can use besides the object columns."""

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCS: dict[str, Callable[[Any], Any]] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "log": np.log,
    "min": lambda a: float(np.min(a)) if np.size(a) else math.nan,
    "max": lambda a: float(np.max(a)) if np.size(a) else math.nan,
    "mean": lambda a: float(np.mean(a)) if np.size(a) else math.nan,
    "median": lambda a: float(np.median(a)) if np.size(a) else math.nan,
    "sum": lambda a: float(np.sum(a)),
    "any": lambda a: bool(np.any(a)),
    "all": lambda a: bool(np.all(a)),
}


class Condition:
    """A parsed condition: call it with a namespace of arrays and numbers.

    Supports numbers, names, ``+ - * / // % **``, comparisons (chained too), ``and``,
    ``or``, ``not`` (element-wise on arrays) and the functions ``abs sqrt log min max
    mean median sum any all``. Anything else is a :class:`ConfigError` at parse time.
    """

    def __init__(self, expr: str) -> None:
        self.expr = expr
        try:
            tree = ast.parse(expr.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConfigError(f"condition {expr!r}: {exc.msg}") from None
        self._tree = tree.body
        self.names: frozenset[str] = frozenset()
        names: set[str] = set()
        self._check(self._tree, names)
        self.names = frozenset(names)

    def _check(self, node: ast.AST, names: set[str]) -> None:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | bool):
                raise ConfigError(f"condition {self.expr!r}: only numbers are allowed")
        elif isinstance(node, ast.BoolOp | ast.UnaryOp | ast.BinOp | ast.Compare):
            ops: list[ast.AST] = []
            if isinstance(node, ast.BinOp):
                ops = [node.op]
            elif isinstance(node, ast.Compare):
                ops = list(node.ops)
            bad = [o for o in ops if type(o) not in _BINOPS and type(o) not in _CMPOPS]
            if bad:
                raise ConfigError(
                    f"condition {self.expr!r}: operator {type(bad[0]).__name__} not allowed"
                )
            if isinstance(node, ast.UnaryOp) and not isinstance(
                node.op, ast.Not | ast.USub | ast.UAdd
            ):
                raise ConfigError(f"condition {self.expr!r}: operator not allowed")
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, ast.operator | ast.cmpop | ast.boolop | ast.unaryop):
                    self._check(child, names)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
                allowed = ", ".join(sorted(_FUNCS))
                raise ConfigError(
                    f"condition {self.expr!r}: only these functions are allowed: {allowed}"
                )
            if len(node.args) != 1 or node.keywords:
                raise ConfigError(f"condition {self.expr!r}: functions take one argument")
            self._check(node.args[0], names)
        else:
            raise ConfigError(
                f"condition {self.expr!r}: {type(node).__name__} is not allowed "
                "(use names, numbers, arithmetic, comparisons, and/or/not)"
            )

    def __call__(self, namespace: Mapping[str, Any]) -> Any:
        """Evaluate; names missing from ``namespace`` raise ``NameError`` listing the rest."""
        missing = self.names - set(namespace)
        if missing:
            raise NameError(
                f"condition {self.expr!r}: unknown name(s) {sorted(missing)}; "
                f"available: {', '.join(sorted(namespace))}"
            )
        return self._eval(self._tree, namespace)

    def _eval(self, node: ast.AST, ns: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return ns[node.id]
        if isinstance(node, ast.BoolOp):
            values = [self._eval(v, ns) for v in node.values]
            fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = values[0]
            for v in values[1:]:
                out = fn(out, v)
            return out
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, ns)
            if isinstance(node.op, ast.Not):
                return np.logical_not(v)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](self._eval(node.left, ns), self._eval(node.right, ns))
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, ns)
            res: Any = True
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, ns)
                res = np.logical_and(res, _CMPOPS[type(op)](left, right))
                left = right
            return res
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return _FUNCS[node.func.id](self._eval(node.args[0], ns))
        raise AssertionError(f"unchecked node {node!r}")  # pragma: no cover

    def __repr__(self) -> str:
        return f"Condition({self.expr!r})"


def compile_condition(expr: str) -> Condition:
    """Parse ``expr`` once (at config time) into a reusable :class:`Condition`."""
    return Condition(expr)


def frame_namespace(
    frame: Frame, objects: Mapping[str, np.ndarray], state: TriggerState | None = None
) -> dict[str, Any]:
    """Names a condition sees for one frame: object columns, frame stats, cumulative state."""
    img = np.asarray(frame.image)
    idx = dict(frame.event.index) if frame.event is not None else {}
    labels = objects.get("label")
    ns: dict[str, Any] = {
        "count": len(labels) if labels is not None else 0,
        "t": int(idx.get("t", 0)),
        "p": int(idx.get("p", frame.position)),
        "c": int(idx.get("c", 0)),
        "z": int(idx.get("z", 0)),
    }
    if img.size:
        ns.update(
            frame_mean=float(img.mean()),
            frame_median=float(np.median(img)),
            frame_std=float(img.std()),
            frame_min=float(img.min()),
            frame_max=float(img.max()),
        )
    if state is not None:
        ns.update(state.numbers())
    ns.update({k: np.asarray(v) for k, v in objects.items()})
    return ns


# -- selection ----------------------------------------------------------------------------
def select(
    proposals: Sequence[Proposal],
    history: Sequence[Proposal],
    cfg: SelectionConfig,
    recent_accept_times: Sequence[float],
    now: float,
) -> list[tuple[Proposal, bool, str]]:
    """Decide on every proposal of one frame: ``(proposal, accepted, reason)``.

    Order of checks (the first that fails is the reason): stage limits, dedupe against
    every accepted target of the run *and* of this frame (never revisit within
    ``dedupe_radius_um``), ``max_per_frame``, ``max_per_minute`` (a sliding 60 s window
    given by ``recent_accept_times``, perf-counter seconds). Higher ``priority`` first.
    """
    targets = [p.target_xy for p in history if p.target_xy is not None]
    origin = [p for p in history if p.target_xy is not None]
    in_window = sum(1 for t in recent_accept_times if now - t < 60.0)
    out: list[tuple[Proposal, bool, str]] = []
    n_frame = 0
    r2 = cfg.dedupe_radius_um**2
    for prop in sorted(proposals, key=lambda p: -p.priority):
        xy = prop.target_xy
        if xy is None and prop.event.x_pos is not None and prop.event.y_pos is not None:
            xy = (float(prop.event.x_pos), float(prop.event.y_pos))
        reason = ""
        lim = cfg.stage_limits
        if xy is not None and lim is not None:
            for axis, value, bounds in (("x", xy[0], lim.x), ("y", xy[1], lim.y)):
                if bounds is not None and not (bounds[0] <= value <= bounds[1]):
                    reason = (
                        f"outside stage limits: {axis}={value:.1f} µm not in "
                        f"[{bounds[0]:g}, {bounds[1]:g}]"
                    )
                    break
        if not reason and xy is not None and r2 > 0 and targets:
            arr = np.asarray(targets, dtype=float)
            d2 = (arr[:, 0] - xy[0]) ** 2 + (arr[:, 1] - xy[1]) ** 2
            j = int(np.argmin(d2))
            if d2[j] < r2:
                near = origin[j] if j < len(origin) else None
                what = (
                    f" (frame {near.frame_index}, label {near.label})"
                    if near is not None
                    else " (this frame)"
                )
                reason = (
                    f"duplicate: {math.sqrt(d2[j]):.1f} µm from an accepted target{what}, "
                    f"dedupe radius {cfg.dedupe_radius_um:g} µm"
                )
        if not reason and cfg.max_per_frame is not None and n_frame >= cfg.max_per_frame:
            reason = f"rate limit: max_per_frame={cfg.max_per_frame}"
        if not reason and cfg.max_per_minute is not None and in_window >= cfg.max_per_minute:
            reason = f"rate limit: max_per_minute={cfg.max_per_minute}"
        if reason:
            out.append((prop, False, reason))
            continue
        out.append((prop, True, "accepted"))
        n_frame += 1
        in_window += 1
        if xy is not None:
            targets.append(xy)
            origin.append(prop)
    return out


# -- the event source ---------------------------------------------------------------------
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
    ) -> None:
        self.selection = selection
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
        return ev

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
        return ev.model_copy(
            update={
                "min_start_time": sched if opens else None,
                # the first base event resets the runner's clock; keep that, nothing else
                "reset_event_timer": bool(ev.reset_event_timer and item.n == 0),
                "metadata": md,
            }
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


def _connect_direct(signal: Any, slot: Callable[..., Any]) -> None:
    """Run ``slot`` in the emitting (runner) thread, also for Qt signals.

    With a QApplication, pymmcore-plus emits Qt signals, and a plain callable would be
    *queued* to the Qt thread: base frames and skips would reach the sink out of order.
    """
    if type(signal).__module__.startswith(("PySide", "PyQt")):
        from qtpy.QtCore import Qt

        signal.connect(slot, Qt.ConnectionType.DirectConnection)
    else:
        signal.connect(slot)


# -- the controller -----------------------------------------------------------------------
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
        host: PluginHost | None = None,
        clock: Callable[[], float] | None = None,
        frame_s: float = 0.03,
    ) -> None:
        self.triggers = list(triggers)
        self.selection = selection
        self.store = store
        self.triggered = triggered
        self.host = host
        self.state = TriggerState()
        self.on_skip: Callable[[int], None] | None = None
        """Told how many base planes to leave empty (the session's image writer)."""
        gate = any(getattr(t, "gates", False) for _, t in self.triggers)
        self.queue = TriggerQueue(
            base,
            selection,
            record=store.event,
            clock=clock,
            gate=gate,
            on_skip=self._skip_planes,
            frame_s=frame_s,
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
        """Connect the ROI and timing handlers to ``core``'s MDA signals."""
        ev = core.mda.events
        self.queue._clock = core.mda.event_seconds_elapsed
        self._core = core
        self._roi_active = False
        pairs: list[tuple[Any, Callable[..., Any]]] = [
            (ev.eventStarted, self._apply_roi),
            (ev.eventStarted, self.queue.on_event_started),
        ]
        for sig, fn in pairs:
            _connect_direct(sig, fn)
        try:
            yield self
        finally:
            for sig, fn in pairs:
                sig.disconnect(fn)
            if self._roi_active:
                core.clearROI()
                self._roi_active = False

    def _skip_planes(self, n: int) -> None:
        if self.on_skip is not None:
            self.on_skip(n)

    def _apply_roi(self, event: useq.MDAEvent) -> None:
        """Set a triggered event's camera ROI before its snap (``eventStarted``, runner thread).

        The ROI is centred on the sensor, where the stage move has put the object.
        """
        core = self._core
        roi = event.metadata.get("liveseg_roi") if event.metadata else None
        if roi:
            if self._roi_active:
                core.clearROI()
            sensor_w, sensor_h = core.getImageWidth(), core.getImageHeight()
            w, h = min(int(roi[0]), sensor_w), min(int(roi[1]), sensor_h)
            core.setROI((sensor_w - w) // 2, (sensor_h - h) // 2, w, h)
            self._roi_active = True
        elif self._roi_active:
            core.clearROI()
            self._roi_active = False

    # -- worker side ----------------------------------------------------------------------
    def write_labels(self, frame: Frame, labels: np.ndarray) -> None:
        """Labels of base frames beside their images; triggered ones in their series."""
        series = str(frame.metadata.get("series", BASE))
        idx = dict(frame.event.index) if frame.event is not None else {"t": frame.index}
        if series == BASE:
            self.store.write_labels(frame.position, idx, labels)
        else:
            self.triggered.write(series, idx, labels=labels)

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
            self.store.event("plugin_error", frame=frame.index, hook="triggers", error=repr(exc))
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
                    self.store.event(
                        "plugin_error",
                        frame=frame.index,
                        plugin=name,
                        hook="trigger",
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    continue
                items.extend((name, o) for o in out or ())
            if ok and self.host is not None:
                history = tuple(st.accepted)
                items.extend(
                    (p.source, p) for p in self.host.propose_events(frame, result, history)
                )
            proposals = [o for _, o in items if isinstance(o, Proposal)]
            for name, o in items:
                if isinstance(o, SkipRest | SetInterval | StopRun):
                    self._act(frame, name, o)
                elif not isinstance(o, Proposal):
                    self.store.event(
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
            self.store.event(
                "interval_changed",
                frame=frame.index,
                source=source,
                interval_s=action.interval_s,
                reason=action.reason,
            )
        elif isinstance(action, SkipRest):
            self.store.event(
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
            self.store.event(
                "stop_requested", frame=frame.index, source=source, reason=action.reason
            )
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
                self.store.event("proposal", **fields)
                continue
            self._series += 1
            series = f"{prop.source}-{self._series:04d}"
            events = self._stamp(prop, series)
            self.proposals_accepted += 1
            self.state.accepted.append(prop)
            self.state.triggered_series += 1
            self._accept_times.append(now)
            self.store.event("proposal", series=series, n_events=len(events), **fields)
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
                ev.model_copy(
                    update={"metadata": md, "min_start_time": None, "reset_event_timer": False}
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
    config: LivesegConfig,
    host: PluginHost,
    store: RunStore,
    base: Any,
    *,
    channel_group: str = "Channel",
    frame_s: float = 0.03,
) -> TriggerController | None:
    """The controller a config asks for, or ``None`` when it lists no triggers."""
    if not config.triggers:
        return None
    from liveseg.pipeline import lookup_factory, validate_params
    from liveseg.store import TriggeredStore

    factories = host.triggers()
    built: list[tuple[str, Any]] = []
    for i, cfg in enumerate(config.triggers):
        factory = lookup_factory("trigger", cfg.trigger, factories, f"(triggers[{i}])")
        params = validate_params(cfg.trigger, cfg.trigger, factory, cfg.params)
        ctx = TriggerContext(
            name=cfg.trigger,
            channel_group=channel_group,
            logger=logging.getLogger(f"liveseg.triggers.{cfg.trigger}"),
        )
        built.append((cfg.trigger, factory(params, ctx)))
    return TriggerController(
        built,
        config.selection,
        store,
        TriggeredStore(store.path),
        base,
        host=host,
        frame_s=frame_s,
    )
