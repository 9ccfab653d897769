"""The one image writer of a live run: every raw frame to disk, on the acquisition thread.

Shaped like a pymmcore-plus data sink (``setup`` / ``frame`` / ``close``) and run in the
runner thread straight from ``frameReady``, before the frame is queued for segmentation,
with or without triggers:

* base frames go to ``<run>/images.ome.zarr`` through pymmcore-plus's own OME-Zarr sink
  (set up from the *base* ``MDASequence``, so triggered events never reshape the grid;
  the planes of base events a trigger dropped are skipped, left empty);
* triggered frames go to their series in ``<run>/triggered.ome.zarr``.

When a frame's image is on disk the writer appends its frame-index row (status
``acquired``) to ``frames.csv``, so ``open_run`` and ``liveseg resegment`` find every
image a run wrote. The sink's tensorstore backend writes asynchronously; the
acquisition thread only notes each frame's write future, and a watcher thread collects
the completed ones every ``index_interval_s`` (50 ms) and appends their rows together
(the store's ``frames.csv`` log flushes them within the same interval). Per-frame
completion callbacks would take the GIL from a foreign thread at the camera's rate,
which at hundreds of frames/s costs the acquisition thread several per cent of its
frame rate. A run killed inside that window leaves at most that many images without a
row; :class:`~liveseg.store.RunReader` recovers them from the image store's chunks, so
every image on disk stays reachable.

A failed write is never silent: the frame gets a ``write_failed`` row (which outranks
any later segmentation row, see :meth:`RunReader.frames`), ``events.jsonl`` a
``write_failed`` line, the run a ``write_failed`` status; after ``max_failures``
consecutive failures the acquisition is stopped rather than imaging into the void.
"""

from __future__ import annotations

import collections
import json
import logging
import shutil
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
from liveseg.store import ACQUIRED, WRITE_FAILED, TriggeredStore

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from liveseg.store import RunStore
    from liveseg.types import Frame

__all__ = ["ImageWriter", "check_free_space", "estimate_bytes", "index_row"]

log = logging.getLogger("liveseg.image_writer")


def index_row(frame: Frame, status: str) -> dict[str, Any]:
    """The frame-index columns of ``frame`` (what the reader needs to find its image)."""
    idx = dict(frame.event.index) if frame.event is not None else {"t": frame.index}
    return {
        "index": frame.index,
        "time_s": frame.time_s,
        "position": frame.position,
        "t": idx.get("t", 0),
        "c": idx.get("c", 0),
        "z": idx.get("z", 0),
        "stage_x_um": frame.stage_xy[0] if frame.stage_xy else float("nan"),
        "stage_y_um": frame.stage_xy[1] if frame.stage_xy else float("nan"),
        "status": status,
        "series": str(frame.metadata.get("series", "base")),
        "event_index": json.dumps(idx),
        "trigger": frame.metadata.get("trigger", ""),
        "trigger_frame": frame.metadata.get("trigger_frame", ""),
        "trigger_label": frame.metadata.get("trigger_label", ""),
    }


def estimate_bytes(n_frames: int, width: int, height: int, bytes_per_pixel: int) -> int:
    """Uncompressed bytes of ``n_frames`` planes: what the run needs on disk at most."""
    return int(n_frames) * int(width) * int(height) * max(int(bytes_per_pixel), 1)


def check_free_space(store: RunStore, needed: int) -> bool:
    """Warn (log and ``events.jsonl``) when ``needed`` bytes will not fit; True if they do."""
    free = shutil.disk_usage(store.path).free
    if needed <= free:
        return True
    msg = (
        f"the run needs about {needed / 1e6:.1f} MB for its images but only "
        f"{free / 1e6:.1f} MB are free on {store.path}"
    )
    log.warning(msg)
    store.event("disk_space", needed_bytes=needed, free_bytes=free, message=msg)
    return False


class ImageWriter:
    """Writes every acquired frame and its frame-index row; see the module docstring.

    Parameters
    ----------
    store
        The run's store (``frames.csv``, ``events.jsonl``, ``images.ome.zarr``).
    base
        The base acquisition: an ``MDASequence`` shapes the image array; anything else
        (an event iterable) gets pymmcore-plus's unbounded ``(t, y, x)`` layout.
    triggered
        Where triggered series go (created on first use when None).
    max_failures
        Consecutive failed writes after which ``on_stop`` is called.
    on_stop
        Stops the acquisition (the session passes ``core.mda.cancel``).
    pixel_size_um
        Recorded in the triggered stacks' ``coordinateTransformations`` (their z-step
        comes from the stage positions of their planes).
    index_interval_s
        How long written frames' index rows may wait to be appended together.
    """

    def __init__(
        self,
        store: RunStore,
        base: Any,
        *,
        triggered: TriggeredStore | None = None,
        max_failures: int = 3,
        on_stop: Callable[[], None] | None = None,
        pixel_size_um: float = 1.0,
        index_interval_s: float = 0.05,
    ) -> None:
        from useq import MDASequence

        try:
            # Private modules, but exactly what ``core.mda.run(output=path)`` uses.
            from pymmcore_plus.mda._generator_sequence import GeneratorMDASequence
            from pymmcore_plus.mda._sink import OmeWritersSink
        except ImportError as exc:
            import pymmcore_plus

            raise LivesegError(
                f"liveseg needs pymmcore-plus's OME-Zarr sink, which pymmcore-plus "
                f"{pymmcore_plus.__version__} does not provide ({exc}). Install the "
                f"version liveseg is tested with: pip install 'pymmcore-plus==0.18.1'"
            ) from exc
        self.store = store
        self._unbounded = GeneratorMDASequence
        self._sink = OmeWritersSink.from_output(str(store.images_path))
        self._sequence = base if isinstance(base, MDASequence) else None
        self._triggered = triggered
        self.max_failures = max_failures
        self._on_stop = on_stop
        self.pixel_size_um = pixel_size_um
        self._lock = threading.Lock()  # the sink (runner thread; close waits for writes)
        self._state = threading.Lock()  # the counters (runner and watcher threads)
        self._ready = False
        self._setup_error: str | None = None
        self._consecutive = 0
        self.frames_written = 0
        self.write_failures = 0
        self.stopped: str | None = None
        self.close_error: str | None = None
        self.index_interval_s = index_interval_s
        self._futures: list[Any] | None = None  # the tensorstore backend's write futures
        self._inflight: collections.deque[tuple[Frame, Any]] = collections.deque()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- sink protocol (runner thread) ------------------------------------------------
    def setup(self, sequence: Any = None, meta: Any = None) -> None:
        """``sequenceStarted`` handler: create the image array(s)."""
        with self._lock:
            try:
                self._sink.setup(self._sequence or self._unbounded(), meta)
                self._ready = True
            except Exception as exc:  # e.g. a full or read-only disk: every frame fails
                log.exception("setting up the image store failed")
                self._setup_error = f"{type(exc).__name__}: {exc}"
                self.store.event(WRITE_FAILED, frame=None, error=self._setup_error)
                return
            backend = getattr(getattr(self._sink, "_stream", None), "_backend", None)
            futures = getattr(backend, "_futures", None)
            self._futures = futures if isinstance(futures, list) else None
            self._complete_metadata()
        if self._futures is not None:
            self._watcher = threading.Thread(
                target=self._watch_loop, name="liveseg-image-writes", daemon=True
            )
            self._watcher.start()

    def _complete_metadata(self) -> None:
        """Finish what ome-writers leaves out of the store's OME-NGFF metadata.

        A time scale of 0 (``interval: 0``) becomes 1 without a unit, through the
        stream's own metadata update (so ome-writers' later flushes keep it), and a
        multi-position store gets ``OME/METADATA.ome.xml`` naming its images, which
        napari-ome-zarr needs to open the root. Images are written either way: a
        failure here is recorded, not raised.
        """
        from liveseg.store import ngff

        try:
            stream: Any = getattr(self._sink, "_stream", None)
            if stream is not None:
                attrs = stream.get_metadata()
                mended = {p: a for p, a in attrs.items() if ngff.mend_scales(a.get("ome") or {})}
                if mended:
                    stream.update_metadata(mended)
            series = ngff.series_paths(self.store.images_path)
            if series:
                ngff.write_ome_xml(self.store.images_path, series)
        except Exception as exc:
            log.warning("could not complete the image store's OME metadata: %r", exc)
            self.store.event("metadata_incomplete", error=f"{type(exc).__name__}: {exc}")

    def frame(self, frame: Frame, meta: Mapping[str, Any] | None = None) -> None:
        """Write one frame (runner thread); never raises.

        The frame-index row is appended once the image is stored; a failure is recorded
        (see the module docstring).
        """
        info = frame.metadata.get("series", "base")
        if info != "base":
            self._write_triggered(frame, str(info))
            return
        with self._lock:
            if not self._ready:
                self._failed(frame, self._setup_error or "the image store is not open")
                return
            futures = self._futures
            n_before = len(futures) if futures is not None else -1
            event: Any = frame.event
            frame_meta: Any = dict(meta or _meta(frame))
            try:
                self._sink.append(frame.image, event, frame_meta)
            except Exception as exc:
                self._failed(frame, f"{type(exc).__name__}: {exc}")
                return
        if futures is not None and len(futures) > n_before:
            self._inflight.append((frame, futures[-1]))  # stored when it completes
        else:
            self._written(frame)

    def skip(self, n: int) -> None:
        """Leave ``n`` base planes empty (their events were dropped by a trigger)."""
        with self._lock:
            if self._ready and n > 0:
                try:
                    self._sink.skip(frames=n)
                except Exception as exc:
                    log.exception("skipping %d planes failed", n)
                    self.store.event(WRITE_FAILED, frame=None, error=repr(exc))

    def close(self, *_: Any) -> None:
        """Flush and close the image store (idempotent); a failure is recorded."""
        if self._triggered is not None:
            self._triggered.close()  # its OME-XML, written behind the acquisition
        with self._lock:
            ready, self._ready = self._ready, False
            try:
                if ready:
                    self._sink.close()
            except Exception as exc:  # pending writes failed (recorded), or the metadata
                self.close_error = f"{type(exc).__name__}: {exc}"
                log.error("closing the image store failed: %s", self.close_error)
                self.store.event(WRITE_FAILED, frame=None, error=self.close_error)
        self._closing.set()  # the sink waited for its writes: the watcher takes the rest
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        self._collect(final=True)

    # -- the frame index ----------------------------------------------------------------
    def _watch_loop(self) -> None:
        """Every ``index_interval_s``, record the writes that have completed, until closed."""
        while not self._closing.wait(self.index_interval_s):
            self._collect()

    def _collect(self, final: bool = False) -> None:
        """Record completed writes in acquisition order (``final``: wait for every one)."""
        rows: list[dict[str, Any]] = []
        inflight = self._inflight
        while inflight:
            frame, future = inflight[0]
            if not final and not future.done():
                break
            inflight.popleft()
            try:
                future.result(timeout=30)
            except Exception as exc:
                self._stored(rows)  # in order: the rows before the failure first
                rows = []
                self._failed(frame, f"{type(exc).__name__}: {exc}")
                continue
            rows.append(index_row(frame, ACQUIRED))
        self._stored(rows)

    # -- outcomes ---------------------------------------------------------------------
    def _stored(self, rows: list[dict[str, Any]]) -> None:
        """Count written images and append their index rows."""
        if not rows:
            return
        with self._state:
            self._consecutive = 0
            self.frames_written += len(rows)
        try:
            self.store.frame_rows(rows)
        except Exception as exc:  # the disk filled between the image and its row
            log.error("appending %d frame-index rows failed: %s", len(rows), exc)

    def _written(self, frame: Frame) -> None:
        """A synchronous write (no tensorstore future) is on disk: its row goes now."""
        self._stored([index_row(frame, ACQUIRED)])

    def _failed(self, frame: Frame, error: str) -> None:
        """Record a frame whose image is not on disk; stop after too many in a row."""
        log.error("writing the image of frame %d failed: %s", frame.index, error)
        self.store.frame_row(index_row(frame, WRITE_FAILED))
        self.store.event(WRITE_FAILED, frame=frame.index, error=error)
        with self._state:
            self.write_failures += 1
            self._consecutive += 1
            stop = self._consecutive >= self.max_failures and self.stopped is None
            if stop:
                self.stopped = f"{self._consecutive} consecutive image writes failed ({error})"
        if stop:
            self.store.event("acquisition_stopped", frame=frame.index, reason=self.stopped)
            if self._on_stop is not None:
                self._on_stop()

    def _write_triggered(self, frame: Frame, series: str) -> None:
        if self._triggered is None:
            self._triggered = TriggeredStore(self.store.path)
        idx = dict(frame.event.index) if frame.event is not None else {}
        try:
            self._triggered.write(
                series,
                idx,
                image=np.asarray(frame.image),
                z_um=frame.stage_z,
                pixel_size_um=self.pixel_size_um,
            )
        except Exception as exc:
            self._failed(frame, f"{type(exc).__name__}: {exc}")
            return
        self._written(frame)

    @property
    def failed(self) -> bool:
        """Whether any image (or the store's metadata) could not be written."""
        return bool(self.write_failures or self.close_error or self._setup_error)

    def summary(self) -> dict[str, Any]:
        """Numbers for run.json."""
        return {
            "frames_written": self.frames_written,
            "frames_write_failed": self.write_failures,
            "write_stopped": self.stopped,
        }


def _meta(frame: Frame) -> dict[str, Any]:
    """The frame metadata pymmcore-plus's sink needs when the runner gave none."""
    return {"runner_time_ms": frame.time_s * 1e3, "exposure_ms": 0.0}
