"""Session: owns the core, the plugin host, the chain, the workers and the run store.

There are no globals: tests and the GUI build as many sessions as they like. A Session
is a context manager and releases the Micro-Manager core deterministically on exit — a
process that leaves a loaded core to interpreter shutdown aborts (status 134).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from liveseg.acquisition import Controller, FrameQueue, QueueItem, apply_pixel_size
from liveseg.defaults import default_steps
from liveseg.errors import ConfigError, LivesegError
from liveseg.home import resolve_home
from liveseg.image_writer import ImageWriter, check_free_space, estimate_bytes
from liveseg.measure import measure_objects
from liveseg.pipeline import Pipeline, StepContext, lookup_factory, validate_params
from liveseg.plugins import PluginHost
from liveseg.store import WRITE_FAILED, RunStore
from liveseg.triggers import TriggerController, build_trigger_controller
from liveseg.types import Flag, Frame, FrameResult, FrameStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from pymmcore_plus import CMMCorePlus

    from liveseg.config import LivesegConfig, StepConfig

__all__ = ["FrameProcessor", "Session", "SessionEvents", "build_host", "build_pipeline"]

log = logging.getLogger("liveseg.session")


class SessionEvents:
    """Signals a GUI or notebook can connect to (emitted from worker threads).

    Connect with ``thread="main"`` (psygnal) or a Qt queued connection: handlers must
    not do heavy work, and they only ever need the newest result.
    """

    frame_acquired = Signal(object)  # Frame
    frame_segmented = Signal(object, object, object)  # Frame, FrameResult, objects columns
    frame_flagged = Signal(object)  # Flag
    run_started = Signal(str)  # run directory
    run_finished = Signal(object)  # summary dict


def build_host(config: LivesegConfig, plugins_dir: str | None = None) -> PluginHost:
    """The plugin host a config asks for."""
    return PluginHost(
        allow=config.plugins.allow,
        deny=config.plugins.deny,
        plugins_dir=plugins_dir or config.plugins.dir,
    )


def build_pipeline(
    config: LivesegConfig, host: PluginHost, home: Path, steps: list[StepConfig] | None = None
) -> Pipeline:
    """The chain of ``config`` (or the default chain if it lists none)."""
    factories = host.backends()
    chosen = steps if steps is not None else config.pipeline.steps
    if not chosen:
        chosen = default_steps(factories)
    ctx = StepContext(home=home, threads=config.threads, device=config.device)
    return Pipeline.build(chosen, factories, ctx)


class FrameProcessor:
    """Everything that happens to one frame after acquisition.

    Shared by live runs, ``resegment`` and offline work: segment, measure, store labels
    and tables, call the plugin hooks.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        host: PluginHost,
        store: RunStore,
        *,
        flag_policies: list[Any] | None = None,
        on_flag: Callable[[Frame, FrameResult, str, str], None] | None = None,
        events: SessionEvents | None = None,
        write_labels: Callable[[Frame, np.ndarray], None] | None = None,
        triggers: TriggerController | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.host = host
        self.store = store
        self.flag_policies = flag_policies or []
        self.on_flag = on_flag
        self.events = events
        self.triggers = triggers
        if write_labels is None and triggers is not None:
            write_labels = triggers.write_labels  # triggered frames go to their own series
        self.write_labels = write_labels or self._write_zarr_labels
        self.latencies_ms: list[float] = []
        self.segment_ms: list[float] = []
        self.counts: list[int] = []
        self.step_ms: dict[str, list[float]] = {}
        self.frame_checks: list[tuple[tuple[float, float], float, tuple[int, int], int]] = []
        self.by_status: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def skipped(self, frame: Frame) -> None:
        """Record a frame that the ``latest`` policy did not segment."""
        self.store.frame_row(_frame_row(frame, None, FrameStatus.SKIPPED, float("nan")))
        self.store.event("skipped", frame=frame.index, reason="backlog policy 'latest'")
        with self._lock:
            self.by_status["skipped"] += 1
        if self.triggers is not None:
            self.triggers.skipped(frame)

    def process(self, frame: Frame, enqueued: float | None = None) -> FrameResult:
        """Segment, measure, store and notify; never raises for a plugin's failure."""
        t0 = time.perf_counter()
        result = self.pipeline.run(frame)
        seg_ms = (time.perf_counter() - t0) * 1e3
        columns: dict[str, np.ndarray] = {}
        if result.status is FrameStatus.FAILED:
            step = str(result.extra.get("failed_step", ""))
            self.store.event(
                "plugin_error",
                frame=frame.index,
                step=step,
                plugin=self.host.backend_plugin(_backend_of(self.pipeline, step)),
                error=result.error,
            )
            if self.triggers is not None:
                self.triggers.evaluate(frame, result, columns, enqueued)
        else:
            columns = measure_objects(frame, result)
            columns.update(self.host.measure_frame(frame, result))
            if self.triggers is not None:  # before storage: trigger latency matters
                self.triggers.evaluate(frame, result, columns, enqueued)
            try:
                self.write_labels(frame, result.labels)
            except Exception as exc:  # storage trouble must not lose the rest of the frame
                log.exception("writing labels of frame %d failed", frame.index)
                self.store.event("store_error", frame=frame.index, error=repr(exc))
            self.store.object_rows(frame.index, columns)
        latency = (time.perf_counter() - enqueued) * 1e3 if enqueued is not None else seg_ms
        self.store.frame_row(_frame_row(frame, result, result.status, latency, seg_ms, columns))
        with self._lock:
            self.by_status[result.status.value] += 1
            if result.status is FrameStatus.OK:
                self.latencies_ms.append(latency)
                self.segment_ms.append(seg_ms)
                for step, ms in result.timings_ms.items():
                    self.step_ms.setdefault(step, []).append(ms)
                if frame.stage_xy is not None and frame.metadata.get("series", "base") == "base":
                    inner = int(np.count_nonzero(~columns["touches_edge"].astype(bool)))
                    self.frame_checks.append(
                        (frame.stage_xy, frame.pixel_size_um, frame.shape, inner)
                    )
                self.counts.append(len(columns["label"]))  # measured already; no recount
        if result.status is FrameStatus.OK:
            self._flags(frame, result)
        self.host.frame_processed(frame, result)
        if self.events is not None:
            self.events.frame_segmented.emit(frame, result, columns)
        return result

    def _write_zarr_labels(self, frame: Frame, labels: np.ndarray) -> None:
        self.store.write_labels(frame.position, _event_index(frame), labels)

    def _flags(self, frame: Frame, result: FrameResult) -> None:
        reasons: list[tuple[str, str]] = []
        for name, policy in self.flag_policies:
            try:
                reason = policy.check(frame, result)
            except Exception as exc:
                self.store.event(
                    "plugin_error", frame=frame.index, plugin=name, hook="flag", error=repr(exc)
                )
                continue
            if reason:
                reasons.append((name, str(reason)))
        reasons.extend(self.host.flag_frame(frame, result))
        for source, reason in reasons:
            if self.on_flag is not None:
                self.on_flag(frame, result, reason, source)

    def summary(self, wall_s: float) -> dict[str, Any]:
        """Numbers an operator wants after a run."""
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        seg = np.array(self.segment_ms) if self.segment_ms else np.array([np.nan])
        counts = np.array(self.counts) if self.counts else np.array([0])
        return {
            "frames_segmented": int(self.by_status.get("ok", 0)),
            "frames_skipped": int(self.by_status.get("skipped", 0)),
            "frames_failed": int(self.by_status.get("failed", 0)),
            "objects_per_frame_mean": float(counts.mean()),
            "objects_total": int(counts.sum()),
            "latency_ms_p50": float(np.nanpercentile(lat, 50)),
            "latency_ms_p95": float(np.nanpercentile(lat, 95)),
            "segment_ms_mean": float(np.nanmean(seg)),
            "segmentation_fps": float(1e3 / np.nanmean(seg)) if self.segment_ms else 0.0,
            # Per step, so an operator sees which backend limits the rate (e.g. cellpose on CPU).
            "step_ms_mean": {k: float(np.mean(v)) for k, v in self.step_ms.items()},
            "wall_s": wall_s,
        }


def _backend_of(pipeline: Pipeline, step: str) -> str:
    for name, backend in zip(pipeline.step_names, pipeline.backend_names, strict=True):
        if name == step:
            return backend
    return step


def _event_index(frame: Frame) -> dict[str, int]:
    if frame.event is not None:
        return dict(frame.event.index)
    return {"t": frame.index}


def _frame_row(
    frame: Frame,
    result: FrameResult | None,
    status: FrameStatus,
    latency_ms: float,
    segment_ms: float = float("nan"),
    columns: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    idx = _event_index(frame)
    areas = columns.get("area_px") if columns else None
    count = len(areas) if areas is not None else 0
    return {
        "index": frame.index,
        "time_s": frame.time_s,
        "position": frame.position,
        "t": idx.get("t", 0),
        "c": idx.get("c", 0),
        "z": idx.get("z", 0),
        "stage_x_um": frame.stage_xy[0] if frame.stage_xy else float("nan"),
        "stage_y_um": frame.stage_xy[1] if frame.stage_xy else float("nan"),
        "count": count if status is FrameStatus.OK else "",
        "mean_area_px": float(np.mean(areas)) if areas is not None and count else "",
        "latency_ms": latency_ms,
        "segment_ms": segment_ms,
        "status": status.value,
        "series": str(frame.metadata.get("series", "base")),
        "event_index": json.dumps(idx),
        "trigger": frame.metadata.get("trigger", ""),
        "trigger_frame": frame.metadata.get("trigger_frame", ""),
        "trigger_label": frame.metadata.get("trigger_label", ""),
    }


def load_core(config: LivesegConfig) -> CMMCorePlus:
    """A new core with the config's Micro-Manager configuration loaded."""
    from pymmcore_plus import CMMCorePlus

    hw = config.hardware
    core = CMMCorePlus()
    try:
        if hw.mm_config == "demo":
            core.loadSystemConfiguration()
        else:
            path = Path(hw.mm_config).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"Micro-Manager config file not found: {path} "
                    f"(hardware.mm_config; use 'demo' for the demo devices)"
                )
            core.loadSystemConfiguration(str(path))
        for dev, prop, value in hw.properties:
            core.setProperty(dev, prop, value)
        if hw.exposure_ms is not None:
            core.setExposure(hw.exposure_ms)
    except BaseException:
        release_core(core)
        raise
    return core


def release_core(core: CMMCorePlus) -> None:
    """Unload devices so the process can exit cleanly (see DESIGN: status 134)."""
    try:
        core.mda.cancel()
    except Exception:
        pass
    try:
        core.unloadAllDevices()
    except Exception:
        log.exception("unloading devices failed")


class Session:
    """Acquire with a Micro-Manager core and segment every frame live.

    Use as a context manager::

        with Session(load_config("configs/demo.yaml")) as s:
            summary = s.run()
    """

    def __init__(
        self,
        config: LivesegConfig,
        *,
        home: str | Path | None = None,
        plugins_dir: str | None = None,
        core: CMMCorePlus | None = None,
        host: PluginHost | None = None,
    ) -> None:
        self.config = config
        self.home = resolve_home(home or config.home)
        self.events = SessionEvents()
        self.host = host or build_host(config, plugins_dir)
        self._store: RunStore | None = None
        self.host.on_error = self._plugin_error
        self.pipeline = build_pipeline(config, self.host, self.home)
        self.flag_policies = self._build_flag_policies()
        self._own_core = core is None
        try:
            self.core = core if core is not None else load_core(config)
        except BaseException:
            self.pipeline.close()
            raise
        self._sample: Any = None
        self._recent: collections.OrderedDict[int, tuple[Frame, FrameResult]] = (
            collections.OrderedDict()
        )
        self._recent_lock = threading.Lock()
        self.run_dir: Path | None = None
        self._bar: Any = None
        self.simulated_objects: list[tuple[float, float, float, float]] = []
        self.controller: Controller | None = None
        self.queue: FrameQueue | None = None
        self.processor: FrameProcessor | None = None
        self.triggers: TriggerController | None = None
        self.writer: ImageWriter | None = None
        self._stop_requested = 0
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release backends and the core (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.pipeline.close()
        if self._sample is not None:
            self._sample.close()
            self._sample = None
        if self._own_core:
            release_core(self.core)
            del self.core
            gc.collect()

    # -- plugin plumbing --------------------------------------------------------------
    def _plugin_error(
        self, plugin: str, hook: str, exc: BaseException, frame_index: int | None
    ) -> None:
        log.error("plugin %r raised in %s (frame %s): %r", plugin, hook, frame_index, exc)
        if self._store is not None:
            self._store.event(
                "plugin_error", plugin=plugin, hook=hook, frame=frame_index, error=repr(exc)
            )

    def _build_flag_policies(self) -> list[tuple[str, Any]]:
        factories = self.host.flag_policies()
        out = []
        for cfg in self.config.flags:
            factory = lookup_factory("flag policy", cfg.policy, factories)
            params = validate_params(cfg.policy, cfg.policy, factory, cfg.params)
            ctx = StepContext(
                home=self.home,
                threads=self.config.threads,
                device=self.config.device,
                step_name=cfg.policy,
                logger=log.getChild(cfg.policy),
            )
            out.append((cfg.policy, factory(params, ctx)))
        return out

    # -- simulated sample -------------------------------------------------------------
    def install_simulation(self) -> list[tuple[float, float, float, float]]:
        """Install the config's simulated sample; returns its objects (x, y, radius, I)."""
        sim = self.config.hardware.simulate
        if sim is None:
            return []
        from liveseg.simulation import make_sample

        sample, objects = make_sample(sim)
        self.simulated_objects = objects
        self._sample = contextlib.ExitStack()
        self._sample.enter_context(sample.patch(self.core))
        # The simulation patches snapImage only: hardware-sequenced bursts would bypass it.
        self.core.mda.engine.use_hardware_sequencing = False  # type: ignore[union-attr]
        return objects

    # -- running ----------------------------------------------------------------------
    def new_run_dir(self, output: str | Path | None = None) -> Path:
        """A fresh run directory (``output`` itself, or a timestamped one under it)."""
        if output is not None:
            path = Path(output)
            if path.exists() and any(path.iterdir()):
                raise LivesegError(f"output directory {path} exists and is not empty")
            return path
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        return Path(self.config.output) / f"{self.config.name}-{stamp}"

    def run(
        self,
        events: Iterable[Any] | None = None,
        output: str | Path | None = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Acquire ``events`` (default: the config's sequence), segmenting live.

        ``progress`` shows a bar of processed frames on stderr. Returns the summary that
        is also written to run.json.
        """
        cfg = self.config
        sequence = events if events is not None else cfg.useq_sequence()
        if self._sample is None and cfg.hardware.simulate is not None:
            self.install_simulation()
        run_dir = self.new_run_dir(output)
        pixel_size, pixel_source = apply_pixel_size(self.core, cfg.hardware.pixel_size_um)
        store = RunStore(run_dir)
        self._store = store
        self.run_dir = run_dir
        queue = FrameQueue(cfg.backlog.policy, cfg.backlog.queue_size, run_dir / ".spool")
        self.queue = queue
        try:
            triggers = build_trigger_controller(
                cfg, self.host, store, sequence, frame_s=self.core.getExposure() / 1e3 + 0.01
            )
            writer = ImageWriter(
                store,
                sequence,
                triggered=triggers.triggered if triggers is not None else None,
                max_failures=cfg.storage.max_write_failures,
                on_stop=self.core.mda.cancel,
                pixel_size_um=pixel_size,
            )
        except BaseException:
            store.close()
            self._store = None
            raise
        if triggers is not None:
            triggers.on_skip = writer.skip
        self.triggers = triggers
        self.writer = writer
        self._stop_requested = 0
        processor = FrameProcessor(
            self.pipeline,
            self.host,
            store,
            flag_policies=self.flag_policies,
            on_flag=self._auto_flag,
            events=self.events,
            triggers=triggers,
        )
        self.processor = processor
        controller = Controller(self.core, queue, writer)
        self.controller = controller
        store.start(
            {
                **self._provenance(sequence),
                "pixel_size_um": pixel_size,
                "pixel_size_source": pixel_source,
            }
        )
        if pixel_source == "default":
            store.event(
                "pixel_size",
                pixel_size_um=1.0,
                message="no pixel size (hardware.pixel_size_um or a Micro-Manager "
                "calibration): µm columns are in pixels",
            )
        self._check_space(store, sequence)
        self.host.sequence_started(str(run_dir), cfg.model_dump(mode="json"))
        self.events.run_started.emit(str(run_dir))
        workers = [
            threading.Thread(
                target=self._work, args=(queue, processor), name=f"liveseg-worker-{i}"
            )
            for i in range(cfg.backlog.workers)
        ]
        self._bar = None
        if progress:
            import useq
            from tqdm import tqdm

            total = len(list(sequence)) if isinstance(sequence, useq.MDASequence) else None
            self._bar = tqdm(total=total, desc="frames", unit="frame", leave=False)
        for w in workers:
            w.start()
        t0 = time.perf_counter()
        status = "finished"
        try:
            if triggers is None:
                controller.run(sequence)
            else:  # the queue interleaves triggered events
                with triggers.attached(self.core):
                    controller.run(triggers.queue)
        except BaseException:
            status = "aborted"
            raise
        finally:
            acq_s = time.perf_counter() - t0
            queue.close()
            self._join(workers)
            if writer.failed:
                status = WRITE_FAILED
            if self._stop_requested:
                status = "interrupted"
            wall = time.perf_counter() - t0
            summary = processor.summary(wall)
            summary.update(
                frames_acquired=controller.frames_acquired,
                acquisition_s=acq_s,
                acquisition_fps=controller.frames_acquired / acq_s if acq_s > 0 else 0.0,
                max_backlog=queue.max_backlog,
                frames_spooled=queue.spooled,
                backlog_policy=cfg.backlog.policy,
                chain=self.pipeline.step_names,
                run_dir=str(run_dir),
                pixel_size_um=pixel_size,
                status=status,
                **writer.summary(),
            )
            if triggers is not None:
                summary.update(triggers.summary())
            if self.simulated_objects:
                from liveseg.simulation import count_check

                summary["simulation_check"] = count_check(
                    self.simulated_objects, processor.frame_checks
                )
            store.finish(summary, status)
            self.host.sequence_finished(str(run_dir), summary)
            store.close()
            self._store = None
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.events.run_finished.emit(summary)
        return summary

    def _check_space(self, store: RunStore, sequence: Any) -> None:
        """Warn when the images will not fit on the output's disk (a sized sequence)."""
        import useq

        if not isinstance(sequence, useq.MDASequence):
            return
        core = self.core
        needed = estimate_bytes(
            len(list(sequence)),
            core.getImageWidth(),
            core.getImageHeight(),
            core.getBytesPerPixel(),
        )
        check_free_space(store, needed)

    def request_stop(self, drain: bool = True) -> int:
        """Stop acquiring now (thread- and signal-safe); returns the frames still queued.

        With ``drain`` the workers finish the frames already acquired; without it they
        stop after the frame in hand (the rest stay unsegmented: ``liveseg resegment``
        fills them in). Either way :meth:`run` closes the store and writes run.json
        with status ``interrupted``.
        """
        self._stop_requested += 1
        try:
            self.core.mda.cancel()
        except Exception:
            log.exception("cancelling the acquisition failed")
        queue = self.queue
        if queue is None:
            return 0
        if not drain:
            queue.abandon()
        return queue.backlog()

    def _join(self, workers: list[threading.Thread]) -> None:
        """Join the workers in short waits, so a signal handler runs (also on Windows)."""
        for w in workers:
            while w.is_alive():
                w.join(0.2)

    def _work(self, queue: FrameQueue, processor: FrameProcessor) -> None:
        while True:
            item: QueueItem | None = queue.get()
            if item is None:
                return
            try:
                if item.skipped:
                    processor.skipped(item.frame)
                    continue
                result = processor.process(item.frame, item.enqueued)
                self._remember(item.frame, result)
            except Exception as exc:  # never let one frame kill the worker
                log.exception("processing frame %d failed", item.frame.index)
                if self._store is not None:
                    self._store.event("error", frame=item.frame.index, error=repr(exc))
            finally:
                if self._bar is not None:
                    self._bar.update(1)

    def _remember(self, frame: Frame, result: FrameResult) -> None:
        with self._recent_lock:
            self._recent[frame.index] = (frame, result)
            while len(self._recent) > 32:
                self._recent.popitem(last=False)

    def _provenance(self, sequence: Any) -> dict[str, Any]:
        from liveseg.provenance import provenance

        seq: Any
        try:
            seq = sequence.model_dump(mode="json")
        except AttributeError:
            seq = "event iterable"
        return provenance(
            config=self.config.model_dump(mode="json"),
            host=self.host,
            chain=self.pipeline.step_names,
            sequence=seq,
            core=self.core,
        )

    # -- flagging ---------------------------------------------------------------------
    def _auto_flag(self, frame: Frame, result: FrameResult, reason: str, source: str) -> None:
        self._flag(frame, result.labels, reason, source)

    def flag(self, frame_index: int, reason: str = "", source: str = "operator") -> Flag:
        """Put a frame of the current (or last) run into the retraining queue."""
        with self._recent_lock:
            hit = self._recent.get(frame_index)
        if hit is not None:
            frame, result = hit
            return self._flag(frame, result.labels, reason, source)
        if self.run_dir is None:
            raise LivesegError("no run yet: nothing to flag")
        from liveseg.store import RunReader

        reader = RunReader(self.run_dir)
        image = reader.image(frame_index)
        labels = reader.labels(frame_index)
        frame = Frame(index=frame_index, image=image)
        return self._flag(frame, labels, reason, source)

    def _flag(self, frame: Frame, labels: np.ndarray | None, reason: str, source: str) -> Flag:
        flag = Flag(frame.index, reason, source, time.time())
        item_id = None
        try:
            from liveseg.retrain.queue import RetrainQueue

            item_id = RetrainQueue(self.home).add(
                frame.image,
                labels,
                run=str(self.run_dir),
                frame_index=frame.index,
                reason=reason,
                source=source,
            )
        except ImportError:
            log.warning("retraining queue unavailable; flag recorded in events.jsonl only")
        store = self._store
        if store is not None:
            store.event("flag", frame=frame.index, reason=reason, source=source, item=item_id)
        elif self.run_dir is not None:
            _append_event(self.run_dir, "flag", frame=frame.index, reason=reason, source=source)
        self.host.frame_flagged(frame, flag)
        self.events.frame_flagged.emit(flag)
        return flag


def _append_event(run_dir: Path, kind: str, **fields: Any) -> None:
    """Append an event to a run that is no longer being written."""
    rec = {"time": datetime.now().isoformat(), "kind": kind, **fields}
    with (run_dir / "events.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec, default=str) + "\n")
