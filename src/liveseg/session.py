"""Session: owns the core, the assembled chain, the workers and the run store.

There are no globals: tests and the GUI build as many sessions as they like. A Session
is a context manager and releases the Micro-Manager core deterministically on exit — a
process that leaves a loaded core to interpreter shutdown aborts (status 134).

Per frame the session only moves it from the acquisition queue to the one
:class:`liveseg.processing.FrameProcessor`; what happens to it there is the live run's
list of consumers (:meth:`Session._consumers`, see docs/architecture.md).
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

from liveseg.acquisition import (
    Controller,
    FrameQueue,
    QueueItem,
    apply_pixel_size,
    frozen_heap,
)
from liveseg.assembly import assemble
from liveseg.errors import ConfigError, LivesegError
from liveseg.events import SessionEvents, SignallingStore
from liveseg.image_writer import ImageWriter, check_free_space, estimate_bytes
from liveseg.processing import (
    BaseConsumer,
    ConsumerSpec,
    FlagConsumer,
    FrameProcessor,
    LabelsConsumer,
    PluginNotifier,
    SignalsConsumer,
    TablesConsumer,
    TriggerConsumer,
)
from liveseg.store import WRITE_FAILED, RunStore, image_series_index
from liveseg.triggers import TriggerController, build_trigger_controller
from liveseg.types import Flag, Frame, FrameResult

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import numpy as np
    from pymmcore_plus import CMMCorePlus

    from liveseg.config import LivesegConfig
    from liveseg.plugins import PluginHost

__all__ = ["Session", "SessionEvents"]

log = logging.getLogger("liveseg.session")


class _Recent(BaseConsumer):
    """The last frames and results, so the operator can flag what they just saw."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.items: collections.OrderedDict[int, tuple[Frame, FrameResult]] = (
            collections.OrderedDict()
        )
        self.lock = threading.Lock()

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Keep ``frame`` (forget the oldest beyond ``size``)."""
        with self.lock:
            self.items[frame.index] = (frame, result)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def get(self, index: int) -> tuple[Frame, FrameResult] | None:
        """The frame and result of ``index`` if still kept."""
        with self.lock:
            return self.items.get(index)


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
        self.events = SessionEvents()
        self._store: RunStore | None = None
        self.parts = assemble(config, home=home, plugins_dir=plugins_dir, host=host)
        self.home = self.parts.home
        self.host = self.parts.host
        self.host.on_error = self._plugin_error
        self.pipeline = self.parts.pipeline
        self.flag_policies = self.parts.flag_policies
        self._own_core = core is None
        try:
            self.core = core if core is not None else load_core(config)
        except BaseException:
            self.parts.close()
            raise
        self._sample: Any = None
        self._recent = _Recent()
        self.run_dir: Path | None = None
        self._bar: Any = None
        self.simulated_objects: list[tuple[float, float, float, float]] = []
        self.controller: Controller | None = None
        self.queue: FrameQueue | None = None
        self.processor: FrameProcessor | None = None
        self.triggers: TriggerController | None = None
        self.writer: ImageWriter | None = None
        self._stop_requested = 0
        self._stop_status = "interrupted"
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
        self.parts.close()
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
            self.record(
                "plugin_error", plugin=plugin, hook=hook, frame=frame_index, error=repr(exc)
            )

    def record(self, kind: str, **fields: Any) -> None:
        """Append one record to the current run's events.jsonl (``event_recorded`` too)."""
        store = self._store
        if store is not None:  # between runs there is no events.jsonl being written
            store.event(kind, **fields)

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

    def _consumers(
        self, store: RunStore, triggers: TriggerController | None
    ) -> list[ConsumerSpec]:
        """What a live run does with each frame, in order.

        Triggers first (latency matters); labels before tables, because a frame's ``ok``
        row in frames.csv is the promise that its labels are on disk (a kill between the
        two must not leave an ``ok`` frame without labels).
        """
        specs = []
        if triggers is not None:
            specs.append(ConsumerSpec("triggers", TriggerConsumer(triggers)))
        specs += [
            ConsumerSpec(
                "labels", LabelsConsumer(store, triggers.triggered if triggers else None)
            ),
            ConsumerSpec("tables", TablesConsumer(store), critical=True),
            ConsumerSpec("flags", FlagConsumer(self.flag_policies, self._auto_flag, self.record)),
            ConsumerSpec("plugins", PluginNotifier(self.host)),
            ConsumerSpec("signals", SignalsConsumer(self.events)),
            ConsumerSpec("recent", self._recent),
        ]
        return specs

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
        store = SignallingStore(
            run_dir, self.events.event_recorded.emit, cfg.storage.index_interval_s
        )
        self._store = store
        self.run_dir = run_dir
        queue = FrameQueue(
            cfg.backlog.policy,
            cfg.backlog.queue_size,
            run_dir / ".spool",
            max_rate_hz=cfg.backlog.max_rate_hz,
        )
        self.queue = queue
        try:
            triggers = build_trigger_controller(
                self.parts.build_triggers(),
                cfg.selection,
                store,
                sequence,
                frame_s=self.core.getExposure() / 1e3 + 0.01,
                record=self.record,
            )
            writer = ImageWriter(
                store,
                sequence,
                triggered=triggers.triggered if triggers is not None else None,
                max_failures=cfg.storage.max_write_failures,
                on_stop=self.core.mda.cancel,
                pixel_size_um=pixel_size,
                index_interval_s=cfg.storage.index_interval_s,
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
        self._stop_status = "interrupted"
        processor = self.parts.processor(
            self._consumers(store, triggers),
            record=self.record,
            workers=cfg.backlog.workers,
            frame_shape=(self.core.getImageHeight(), self.core.getImageWidth()),
        )
        self.processor = processor
        controller = Controller(self.core, queue, writer)
        controller.image_series = image_series_index(sequence)
        self.controller = controller
        store.start(
            {
                **self._provenance(sequence),
                "pixel_size_um": pixel_size,
                "pixel_size_source": pixel_source,
            }
        )
        if pixel_source == "default":
            self.record(
                "pixel_size",
                pixel_size_um=1.0,
                message="no pixel size (hardware.pixel_size_um or a Micro-Manager "
                "calibration): µm columns are in pixels",
            )
        self._check_space(store, sequence)
        self.parts.record_plugin_failures(self.record)
        try:
            processor.setup(self.parts.run_info("run", run_dir))  # starts worker processes
        except BaseException as exc:
            self.record("error", error=f"{type(exc).__name__}: {exc}")
            store.finish({"error": str(exc)}, "aborted")
            store.close()
            self._store = None
            raise
        self.events.run_started.emit(str(run_dir))
        workers = [
            threading.Thread(
                target=self._work,
                args=(queue, processor, cfg.backlog.batch),
                name=f"liveseg-worker-{i}",
            )
            for i in range(cfg.backlog.workers.count)
        ]
        self._bar = None
        if progress:
            import useq
            from tqdm import tqdm

            total = len(list(sequence)) if isinstance(sequence, useq.MDASequence) else None
            self._bar = tqdm(total=total, desc="frames", unit="frame", leave=False)
        for w in workers:
            w.start()
        heap = contextlib.ExitStack()  # until the workers are done
        if cfg.backlog.freeze_heap:
            heap.enter_context(frozen_heap())
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
            heap.close()
            if writer.failed:
                status = WRITE_FAILED
            if self._stop_requested:
                status = self._stop_status  # "stopped" (operator) or "interrupted" (signal)
            if processor.critical_errors and status == "finished":
                status = "incomplete"  # a table could not be written: the run says so
            wall = time.perf_counter() - t0
            summary = processor.summary(wall)
            summary.update(
                frames_acquired=controller.frames_acquired,
                acquisition_s=acq_s,
                acquisition_fps=controller.frames_acquired / acq_s if acq_s > 0 else 0.0,
                max_backlog=queue.max_backlog,
                frames_spooled=queue.spooled,
                backlog_policy=cfg.backlog.policy,
                worker_kind=cfg.backlog.workers.kind,
                chain=self.pipeline.step_names,
                run_dir=str(run_dir),
                pixel_size_um=pixel_size,
                status=status,
                **writer.summary(),
            )
            if processor.critical_errors:
                summary["errors"] = processor.critical_errors
            if triggers is not None:
                summary.update(triggers.summary())
            if self.simulated_objects:
                from liveseg.simulation import count_check

                summary["simulation_check"] = count_check(
                    self.simulated_objects, processor.frame_checks
                )
            store.finish(summary, status)
            processor.finish(summary)
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

    def request_stop(self, drain: bool = True, status: str = "interrupted") -> int:
        """Stop acquiring now (thread- and signal-safe); returns the frames still queued.

        With ``drain`` the workers finish the frames already acquired; without it they
        stop after the frame in hand (the rest stay unsegmented: ``liveseg resegment``
        fills them in). Either way :meth:`run` closes the store and writes run.json
        with ``status``: ``interrupted`` for a signal, ``stopped`` for an operator's Stop.
        """
        if not self._stop_requested:
            self._stop_status = status
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

    def _work(self, queue: FrameQueue, processor: FrameProcessor, batch: int = 1) -> None:
        """A worker: hand every queued frame to the processor (never dies on a frame).

        Frames waiting under ``all`` go ``batch`` at a time (``process_batch``) when
        :attr:`FrameProcessor.can_batch`.
        """
        while True:
            item: QueueItem | None = queue.get()
            if item is None:
                return
            # A backlog under 'all' is segmented backlog.batch frames at a time, when the
            # chain can segment frames together.
            more = batch - 1 if processor.can_batch and not item.skipped else 0
            items = [item, *queue.get_ready(more)]
            try:
                for it in items:
                    self.events.frame_acquired.emit(it.frame)
                if item.skipped:
                    processor.skipped(item.frame)
                elif len(items) == 1:
                    processor.process(item.frame, item.enqueued)
                else:
                    processor.process_batch(
                        [it.frame for it in items], [it.enqueued for it in items]
                    )
            except Exception as exc:  # never let one frame kill the worker
                log.exception("processing frame %d failed", item.frame.index)
                self.record("error", frame=item.frame.index, error=repr(exc))
            finally:
                if self._bar is not None:
                    self._bar.update(len(items))

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
        if self._store is not None:
            self.record("flag", frame=frame.index, reason=reason, source=source, item=item_id)
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
