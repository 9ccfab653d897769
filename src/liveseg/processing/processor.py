"""The one frame processor: chain → measure → every consumer, in order, each guarded.

Every way a frame is segmented (live run, ``segment``, ``batch``, ``resegment``,
``validate``) builds one :class:`FrameProcessor` and hands it frames; what differs
between them is only the list of consumers (see :mod:`liveseg.processing.consumers`).
Modelled on pymmcore-plus's ``mda/_dispatch.py``: a consumer protocol with ``setup`` /
``frame`` / ``finish``, per-consumer error handling (a *critical* consumer, such as the
tables, marks the run when it fails; any other is recorded and the run goes on) and a
report at the end. Backpressure lives before the processor, in
:class:`liveseg.acquisition.FrameQueue` (``all`` / ``latest``); frames the queue skips
still come here (:meth:`FrameProcessor.skipped`) so every consumer sees every frame.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from liveseg.measure import OBJECT_COLUMNS, measure_objects
from liveseg.processing.chain_runner import ChainRunner
from liveseg.types import FrameResult, FrameStatus, empty_labels, shared_empty_labels

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from liveseg.pipeline import Pipeline
    from liveseg.plugins import PluginHost
    from liveseg.processing.chain_runner import Runner
    from liveseg.types import Frame

__all__ = [
    "CLASS_SUMMARY",
    "Consumer",
    "ConsumerReport",
    "ConsumerSpec",
    "FrameProcessor",
    "Objects",
    "class_summary",
    "empty_objects",
]

log = logging.getLogger("liveseg.processing")

Objects = dict[str, np.ndarray]
"""Per-object columns of one frame (equal-length arrays, one row per object)."""


@runtime_checkable
class Consumer(Protocol):
    """Something that receives every processed frame (the shape of a plugin Sink).

    ``setup(run)`` once before the first frame (``run`` holds ``kind``, ``run_dir``,
    ``config`` and ``chain``), ``frame(frame, result, objects)`` once per frame whatever
    its ``result.status`` (ok, skipped, failed: ``objects`` is then empty), and
    ``finish(summary)`` once at the end. Called from worker threads.
    """

    def setup(self, run: Mapping[str, Any]) -> None:
        """Prepare for a run."""
        ...

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Handle one frame."""
        ...

    def finish(self, summary: Mapping[str, Any]) -> None:
        """The run is over; ``summary`` is what run.json records."""
        ...


@dataclass
class ConsumerSpec:
    """A consumer in the processor's list: its name, whether it is critical, its plugin.

    A critical consumer (the tables) that raises marks the run (``summary['errors']``
    and a non-finished status); any other is recorded in events.jsonl and skipped for
    that frame only. With several workers a consumer still sees one frame at a time
    (``lock``), so a sink needs no locking of its own.
    """

    name: str
    consumer: Consumer
    critical: bool = False
    plugin: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass
class ConsumerReport:
    """What one consumer did during a run (part of the summary)."""

    name: str
    frames: int = 0
    errors: int = 0
    last_error: str = ""


_NO_OBJECTS = np.zeros(0)
_NO_OBJECTS.flags.writeable = False
_SKIPPED_NOTE = "frames.csv has a skipped row for every frame skipped for this reason"


def empty_objects() -> Objects:
    """The per-object columns of a frame without objects (empty, read-only)."""
    return dict.fromkeys(OBJECT_COLUMNS, _NO_OBJECTS)


CLASS_SUMMARY = "class_summary"
"""``FrameResult.extra`` key (and frames.csv column) of a frame's class-map numbers."""


def class_summary(frame: Frame, result: FrameResult) -> dict[str, float]:
    """A result's class-map numbers (:func:`liveseg.materials.frame_summary`).

    Per-class area fractions and object counts, and G or porosity where the classes
    say what the sample is; measured once per frame, here, so the tables, the triggers
    and the run summary read the same numbers. Empty without a class map.
    """
    if result.classes is None:
        return {}
    from liveseg.materials.summary import frame_summary

    return frame_summary(result.classes, result.class_names, result.labels, frame.pixel_size_um)


def _no_record(kind: str, **fields: Any) -> None:
    log.info("%s: %s", kind, fields)


class FrameProcessor:
    """Segment, measure and hand each frame to an ordered list of consumers.

    Parameters
    ----------
    pipeline
        The chain (see :mod:`liveseg.assembly`).
    host
        The plugin host: ``measure_frame`` columns and the plugin that owns a step.
    consumers
        In call order. Triggers come first in a live run, because their latency counts.
    record
        ``record(kind, **fields)`` appends to events.jsonl (failed frames, consumer
        errors, skipped frames); logging only when None.
    step_timeout_s
        A chain that takes longer fails the frame (see :class:`ChainRunner`).
    measure
        False skips measuring (scoring a model needs labels only).
    runner
        Runs the chain (default: :class:`ChainRunner`, threads in this process; a live
        run with ``backlog.workers: {kind: process}`` hands in a
        :class:`~liveseg.processing.worker_process.ProcessChainRunner`).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        host: PluginHost,
        consumers: Sequence[ConsumerSpec] = (),
        *,
        record: Callable[..., None] | None = None,
        step_timeout_s: float | None = None,
        measure: bool = True,
        runner: Runner | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.host = host
        self.consumers = list(consumers)
        self.record = record or _no_record
        self.measure = measure
        self.runner: Runner = runner or ChainRunner(pipeline, step_timeout_s)
        # Whether process_batch segments frames together: the runner batches (worker
        # processes take one frame at a time) and a step has segment_batch. A live worker
        # takes several waiting frames only then, so none are held back for nothing.
        self.can_batch = self.runner.batches and any(
            callable(getattr(b, "segment_batch", None)) for b in pipeline.backends
        )
        self.reports = {c.name: ConsumerReport(c.name) for c in self.consumers}
        self.latencies_ms: list[float] = []
        self.segment_ms: list[float] = []
        self.counts: list[int] = []
        self.step_ms: dict[str, list[float]] = {}
        self.frame_checks: list[tuple[tuple[float, float], float, tuple[int, int], int]] = []
        self.by_status: collections.Counter[str] = collections.Counter()
        self.critical_errors: list[str] = []
        self.class_values: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._skip_reasons: set[str] = set()

    # -- lifecycle --------------------------------------------------------------------
    def setup(self, run: Mapping[str, Any]) -> None:
        """Start the runner, then each consumer's ``setup`` (one that raises gets no frames).

        A runner that cannot start (a worker process that cannot build the chain) raises:
        no frame could be segmented.
        """
        self.runner.start()
        kept = []
        for spec in self.consumers:
            try:
                spec.consumer.setup(run)
            except Exception as exc:
                self._consumer_failed(spec, "setup", exc, None)
                if spec.critical:
                    kept.append(spec)  # the run is marked; keep trying its frames
                continue
            kept.append(spec)
        self.consumers = kept

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Call every consumer's ``finish`` (each guarded) and stop the chain thread."""
        for spec in self.consumers:
            try:
                spec.consumer.finish(summary)
            except Exception as exc:
                self._consumer_failed(spec, "finish", exc, None)
        self.runner.close()

    # -- frames -----------------------------------------------------------------------
    def process(self, frame: Frame, enqueued: float | None = None) -> FrameResult:
        """Segment, measure and dispatch ``frame``; never raises for a plugin's failure.

        ``enqueued`` (``time.perf_counter()`` when the frame was queued) gives the
        latency; the result's ``extra`` carries ``segment_ms``, ``latency_ms`` and
        ``enqueued`` for the consumers.
        """
        t0 = time.perf_counter()
        result = self.runner.run(frame)
        return self._segmented(frame, result, (time.perf_counter() - t0) * 1e3, enqueued)

    def process_batch(
        self, frames: Sequence[Frame], enqueued: Sequence[float | None] | None = None
    ) -> list[FrameResult]:
        """:meth:`process` for several frames, segmented together (``Pipeline.run_batch``).

        For a backlog (``backlog: all`` with frames waiting) and offline work: a step with
        ``segment_batch`` sees the frames at once. Each frame is then measured and
        dispatched in order exactly as :meth:`process` does it, with the same labels;
        ``segment_ms`` is the batch's chain time divided by its frames.
        """
        when: Sequence[float | None] = enqueued or [None] * len(frames)
        if len(when) != len(frames):
            raise ValueError("frames and enqueued differ in length")
        t0 = time.perf_counter()
        results = self.runner.run_batch(frames)
        seg_ms = (time.perf_counter() - t0) * 1e3 / max(1, len(frames))
        return [
            self._segmented(f, r, seg_ms, e) for f, r, e in zip(frames, results, when, strict=True)
        ]

    def _segmented(
        self, frame: Frame, result: FrameResult, seg_ms: float, enqueued: float | None
    ) -> FrameResult:
        """Measure and dispatch a frame the chain has segmented (or failed)."""
        objects = empty_objects()
        if result.status is FrameStatus.FAILED:
            step = str(result.extra.get("failed_step", ""))
            self.record(
                "plugin_error",
                frame=frame.index,
                step=step,
                plugin=self.host.backend_plugin(self.pipeline.backend_of(step)),
                error=result.error,
            )
        elif self.measure:
            objects = measure_objects(frame, result)
            objects.update(self.host.measure_frame(frame, result))
            if result.classes is not None:
                result = result.replace(
                    extra={**result.extra, CLASS_SUMMARY: class_summary(frame, result)}
                )
        latency = (time.perf_counter() - enqueued) * 1e3 if enqueued is not None else seg_ms
        result = result.replace(
            extra={
                **result.extra,
                "segment_ms": seg_ms,
                "latency_ms": latency,
                "enqueued": enqueued,
            }
        )
        self._count(frame, result, objects)
        self._dispatch(frame, result, objects)
        return result

    def skipped(self, frame: Frame, reason: str = "backlog policy 'latest'") -> FrameResult:
        """Dispatch a frame that was not segmented (its image is stored; resegment later).

        At camera rate under ``latest`` most frames take this path, so it stays cheap:
        the labels are one shared read-only empty plane, and events.jsonl gets one
        ``skipped`` record for the first skipped frame of a reason (frames.csv has a
        ``skipped`` row for every one).
        """
        result = FrameResult(
            labels=shared_empty_labels(frame.shape),
            status=FrameStatus.SKIPPED,
            error=reason,
            extra={"latency_ms": float("nan"), "segment_ms": float("nan")},
        )
        if reason not in self._skip_reasons:
            self._skip_reasons.add(reason)
            self.record("skipped", frame=frame.index, reason=reason, note=_SKIPPED_NOTE)
        self._count(frame, result, {})
        self._dispatch(frame, result, empty_objects())
        return result

    def unreadable(self, index: int, name: str, error: str, **where: Any) -> FrameResult:
        """Dispatch an input that could not be read as a failed frame (no pixels).

        So that a sink sees every input of ``segment`` and ``batch`` exactly once, also
        the broken ones; ``input_error`` goes to events.jsonl with ``where`` (the file).
        """
        from liveseg.types import Frame

        frame = Frame(index=index, image=np.zeros((0, 0)), name=name)
        result = FrameResult(
            labels=empty_labels(frame.shape),
            status=FrameStatus.FAILED,
            error=error,
            extra={"failed_step": "input", "latency_ms": float("nan"), "segment_ms": float("nan")},
        )
        self.record("input_error", frame=index, name=name, error=error, **where)
        self._count(frame, result, {})
        self._dispatch(frame, result, empty_objects())
        return result

    def _dispatch(self, frame: Frame, result: FrameResult, objects: Objects) -> None:
        for spec in self.consumers:
            try:
                with spec.lock:
                    spec.consumer.frame(frame, result, objects)
            except Exception as exc:
                self._consumer_failed(spec, "frame", exc, frame.index)
                continue
            self.reports[spec.name].frames += 1

    def _consumer_failed(
        self, spec: ConsumerSpec, phase: str, exc: BaseException, frame: int | None
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        log.error("consumer %r failed in %s (frame %s): %s", spec.name, phase, frame, error)
        report = self.reports.setdefault(spec.name, ConsumerReport(spec.name))
        with self._lock:
            report.errors += 1
            report.last_error = error
            if spec.critical:
                self.critical_errors.append(f"{spec.name} ({phase}, frame {frame}): {error}")
        self.record(
            "consumer_error",
            frame=frame,
            consumer=spec.name,
            plugin=spec.plugin,
            phase=phase,
            critical=spec.critical,
            error=error,
        )

    def _count(self, frame: Frame, result: FrameResult, objects: Mapping[str, Any]) -> None:
        with self._lock:
            self.by_status[result.status.value] += 1
            if result.status is not FrameStatus.OK:
                return
            self.latencies_ms.append(float(result.extra["latency_ms"]))
            self.segment_ms.append(float(result.extra["segment_ms"]))
            for step, ms in result.timings_ms.items():
                self.step_ms.setdefault(step, []).append(ms)
            if frame.metadata.get("series", "base") == "base":  # triggered ones are extra views
                for key, value in result.extra.get(CLASS_SUMMARY, {}).items():
                    self.class_values.setdefault(key, []).append(float(value))
            if "label" not in objects:
                return
            if frame.stage_xy is not None and frame.metadata.get("series", "base") == "base":
                inner = int(np.count_nonzero(~objects["touches_edge"].astype(bool)))
                self.frame_checks.append((frame.stage_xy, frame.pixel_size_um, frame.shape, inner))
            self.counts.append(len(objects["label"]))  # measured already; no recount

    # -- report -----------------------------------------------------------------------
    def summary(self, wall_s: float) -> dict[str, Any]:
        """Numbers an operator wants after a run, and what each consumer did."""
        nan = float("nan")
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        seg = np.array(self.segment_ms) if self.segment_ms else np.array([np.nan])
        counts = np.array(self.counts) if self.counts else np.array([0])
        out: dict[str, Any] = {
            "frames_segmented": int(self.by_status.get("ok", 0)),
            "frames_skipped": int(self.by_status.get("skipped", 0)),
            "frames_failed": int(self.by_status.get("failed", 0)),
            "objects_per_frame_mean": float(counts.mean()),
            "objects_total": int(counts.sum()),
            # No ok frame (every input failed): NaN, without numpy's all-NaN warnings.
            "latency_ms_p50": float(np.percentile(lat, 50)) if self.latencies_ms else nan,
            "latency_ms_p95": float(np.percentile(lat, 95)) if self.latencies_ms else nan,
            "segment_ms_mean": float(np.mean(seg)) if self.segment_ms else nan,
            "segmentation_fps": float(1e3 / np.mean(seg)) if self.segment_ms else 0.0,
            # Per step, so an operator sees which backend limits the rate (e.g. cellpose on CPU).
            "step_ms_mean": {k: float(np.mean(v)) for k, v in self.step_ms.items()},
            "wall_s": wall_s,
        }
        if self.class_values:
            # Means over the segmented base frames (G, porosity, class fractions, …).
            out["class_summary_mean"] = {
                k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                for k, v in self.class_values.items()
            }
        failing = {n: vars(r) for n, r in self.reports.items() if r.errors}
        if failing:
            out["consumer_errors"] = failing
        if self.runner.timeouts:
            out["step_timeouts"] = self.runner.timeouts
        if self.runner.restarts:
            out["worker_restarts"] = self.runner.restarts
        return out
