"""The consumers of the frame processor: everything that happens to a frame after the chain.

Each gets ``frame(frame, result, objects)`` for every frame whatever its status; each
decides what a skipped or failed frame means to it (the tables record a row, the labels
write nothing, the triggers let the scheduler move on). The entry points pick from
these (see :mod:`liveseg.assembly` and ``docs/architecture.md``):

======================  ====  =======  =====  =========  ========
consumer                run   segment  batch  resegment  validate
======================  ====  =======  =====  =========  ========
TriggerConsumer         ✓
TablesConsumer          ✓     ✓        (1)    ✓
LabelsConsumer          ✓     (2)      (1)    ✓
FlagConsumer            ✓
PluginNotifier          ✓     ✓        ✓
SignalsConsumer         ✓
plugin sinks            ✓     ✓        ✓      ✓
LabelsCollector                                          ✓
======================  ====  =======  =====  =========  ========

(1) ``batch`` writes per-image tables and labels (:class:`liveseg.batch.BatchFiles`).
(2) ``segment`` writes ``<name>_labels.tif`` (:class:`TiffLabelsConsumer`).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.image_writer import index_row
from liveseg.processing.processor import CLASS_SUMMARY
from liveseg.types import FrameStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from liveseg.plugins import PluginHost
    from liveseg.store import RunStore, TriggeredStore
    from liveseg.triggers import TriggerController
    from liveseg.types import Frame, FrameResult

__all__ = [
    "BaseConsumer",
    "FlagConsumer",
    "LabelsCollector",
    "LabelsConsumer",
    "PluginNotifier",
    "SignalsConsumer",
    "TablesConsumer",
    "TiffLabelsConsumer",
    "TriggerConsumer",
    "class_image_label",
    "event_index",
    "frame_row",
]

log = logging.getLogger("liveseg.processing")

BASE = "base"


class BaseConsumer:
    """A consumer whose ``setup`` and ``finish`` do nothing (override what you need)."""

    def setup(self, run: Mapping[str, Any]) -> None:
        """Nothing to prepare."""

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Nothing to do."""

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Nothing to finish."""


def event_index(frame: Frame) -> dict[str, int]:
    """The frame's MDA index (``{"t": index}`` for frames without an event)."""
    if frame.event is not None:
        return dict(frame.event.index)
    return {"t": frame.index}


def frame_row(
    frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """The frames.csv row of one processed frame (see :data:`liveseg.store.FRAME_COLUMNS`).

    The frame-index columns are the image writer's (:func:`liveseg.image_writer.index_row`);
    processing adds the count, the mean area, the timings and, for a chain that returns
    a class map, ``class_summary`` (JSON: per-class fractions and counts, G, porosity).
    """
    ok = result.status is FrameStatus.OK
    areas = objects.get("area_px") if ok else None
    count = len(areas) if areas is not None else 0
    return {
        **index_row(frame, result.status.value),
        "count": count if ok else "",
        "mean_area_px": float(np.mean(areas)) if areas is not None and count else "",
        "latency_ms": result.extra.get("latency_ms", float("nan")),
        "segment_ms": result.extra.get("segment_ms", float("nan")),
        CLASS_SUMMARY: _json_numbers(result.extra.get(CLASS_SUMMARY)) if ok else "",
    }


def _json_numbers(values: Mapping[str, float] | None) -> str:
    """One CSV cell of named numbers (JSON; non-finite numbers as null)."""
    if not values:
        return ""
    clean = {k: (round(float(v), 6) if np.isfinite(v) else None) for k, v in values.items()}
    return json.dumps(clean, separators=(",", ":"))


class TablesConsumer(BaseConsumer):
    """frames.csv (every frame) and objects.csv (the objects of ok frames); critical."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Append the frame's row and its object rows."""
        if result.status is FrameStatus.OK:
            self.store.object_rows(frame.index, objects)
        self.store.frame_row(frame_row(frame, result, objects))


def class_image_label(result: FrameResult) -> dict[str, Any]:
    """The OME-NGFF ``image-label`` colours and class names of a result's class map.

    Empty without a class map. The colours are :meth:`ClassTable.default`'s, the same
    the live overlay and its legend use.
    """
    if result.classes is None:
        return {}
    from liveseg.builtins.classes import ClassTable

    return ClassTable.default(result.class_names).ngff_image_label()


class LabelsConsumer(BaseConsumer):
    """OME-NGFF labels beside the images (ok frames only).

    Base frames go into the run's images, triggered ones into their series of
    ``triggered.ome.zarr``. A class map (``result.classes``) is stored too, as the
    label image ``labels/classes`` with its class names and colours.
    """

    def __init__(self, store: RunStore, triggered: TriggeredStore | None = None) -> None:
        self.store = store
        self.triggered = triggered

    def setup(self, run: Mapping[str, Any]) -> None:
        """Warm label writing up before the first frame (see ``warm_up_label_writing``)."""
        from liveseg.store.ngff import warm_up_label_writing

        warm_up_label_writing()

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Write the labels of an ok frame."""
        if result.status is not FrameStatus.OK:
            return
        series = str(frame.metadata.get("series", BASE))
        idx = event_index(frame)
        meta = class_image_label(result)
        if series == BASE or self.triggered is None:
            self.store.write_labels(frame.position, idx, result.labels)
            if result.classes is not None:
                self.store.write_classes(frame.position, idx, result.classes, meta)
        else:
            self.triggered.write(
                series, idx, labels=result.labels, classes=result.classes, image_label=meta
            )


class TiffLabelsConsumer(BaseConsumer):
    """``<out>/<frame.name>_labels.tif`` for every ok frame (``liveseg segment``).

    With a class map also ``<frame.name>_classes.tif`` (``uint8``, class names in its
    description: :func:`liveseg.imageio.read_classes_tif`).

    ``frame.name`` is the input's path relative to the inputs' common folder (without
    its suffix), so same-name inputs in different folders never overwrite each other.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Write the labels atomically."""
        if result.status is not FrameStatus.OK:
            return
        from liveseg.imageio import write_labels_tif

        stem = self.out_dir / str(frame.name or frame.index)
        stem.parent.mkdir(parents=True, exist_ok=True)  # names may keep input subfolders
        known = frame.metadata.get("pixel_size_source") is not None
        px = frame.pixel_size_um if known else None
        if result.classes is not None:
            from liveseg.imageio import write_classes_tif

            write_classes_tif(f"{stem}_classes.tif", result.classes, result.class_names, px)
        write_labels_tif(f"{stem}_labels.tif", result.labels, px)


class TriggerConsumer(BaseConsumer):
    """Smart microscopy: every frame goes to the trigger controller.

    Ok or not, so that the scheduler never waits for a frame that will not come.
    """

    def __init__(self, controller: TriggerController) -> None:
        self.controller = controller

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Evaluate the triggers (or just release the scheduler for a skipped frame)."""
        if result.status is FrameStatus.SKIPPED:
            self.controller.skipped(frame)
            return
        self.controller.evaluate(frame, result, objects, result.extra.get("enqueued"))


class FlagConsumer(BaseConsumer):
    """Automatic flags: every flag policy, asked about every ok frame.

    ``register_flag_policies`` is the mechanism; plugins' ``flag_frame`` hookimpls come
    as policies too (:meth:`liveseg.plugins.PluginHost.hook_flag_policies`, a thin
    adapter), see docs/architecture.md. ``on_flag(frame, result, reason, source)``
    queues the frame.
    """

    def __init__(
        self,
        policies: Sequence[tuple[str, Any]],
        on_flag: Callable[[Frame, FrameResult, str, str], None],
        record: Callable[..., None],
    ) -> None:
        self.policies = list(policies)
        self.on_flag = on_flag
        self.record = record

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Ask every policy about an ok frame; flag it once per reason."""
        if result.status is not FrameStatus.OK:
            return
        reasons: list[tuple[str, str]] = []
        for name, policy in self.policies:
            try:
                reason = policy.check(frame, result)
            except Exception as exc:
                self.record(
                    "plugin_error", frame=frame.index, plugin=name, hook="flag", error=repr(exc)
                )
                continue
            if reason:
                reasons.append((name, str(reason)))
        for source, reason in reasons:
            self.on_flag(frame, result, reason, source)


class PluginNotifier(BaseConsumer):
    """The notification hooks.

    ``sequence_started``, ``frame_processed`` (every frame, whatever its status) and
    ``sequence_finished``.
    """

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self._run_dir = ""

    def setup(self, run: Mapping[str, Any]) -> None:
        """``sequence_started(run_dir, config)``."""
        self._run_dir = str(run.get("run_dir", ""))
        self.host.sequence_started(self._run_dir, dict(run.get("config") or {}))

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """``frame_processed(frame, result)``."""
        self.host.frame_processed(frame, result)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """``sequence_finished(run_dir, summary)``."""
        self.host.sequence_finished(self._run_dir, summary)


class SignalsConsumer(BaseConsumer):
    """``SessionEvents.frame_segmented(frame, result, objects)`` for the GUI (every frame)."""

    def __init__(self, events: Any) -> None:
        self.events = events

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Emit the signal (handlers must be quick: they run on the worker thread)."""
        self.events.frame_segmented.emit(frame, result, objects)


class LabelsCollector(BaseConsumer):
    """Keeps every frame's labels by name (scoring a model against a reference set)."""

    def __init__(self) -> None:
        self.labels: dict[str, np.ndarray] = {}
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Keep the labels (or the error) under the frame's name."""
        key = frame.name or str(frame.index)
        with self._lock:
            if result.status is FrameStatus.OK:
                self.labels[key] = result.labels
            else:
                self.errors[key] = str(result.error)
