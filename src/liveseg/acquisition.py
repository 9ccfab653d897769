"""From the camera to the workers without ever slowing the camera.

:class:`FrameQueue` is what pymmcore-plus's ``frameReady`` handler talks to: ``put`` is
O(1) and never blocks. Under the ``all`` policy frames beyond ``maxsize`` are moved to a
disk spool by a background thread (so memory stays bounded and nothing is lost); under
``latest`` a new frame replaces the waiting one, which is reported as skipped, and the
newest frame is handed out at most ``max_rate_hz`` times a second.
:class:`Controller` connects a ``CMMCorePlus`` MDA run to the queue.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from liveseg.types import Frame

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import useq
    from pymmcore_plus import CMMCorePlus

    from liveseg.image_writer import ImageWriter

__all__ = [
    "Controller",
    "FrameQueue",
    "QueueItem",
    "apply_pixel_size",
    "connect_direct",
    "frozen_heap",
]

log = logging.getLogger("liveseg.acquisition")


@dataclass
class QueueItem:
    """A frame waiting for a worker; ``frame.image`` may live in the spool file instead."""

    frame: Frame
    enqueued: float
    spool: Path | None = None
    skipped: bool = False


class FrameQueue:
    """Bounded-memory frame queue between the acquisition thread and the workers."""

    def __init__(
        self,
        policy: Literal["all", "latest"] = "all",
        maxsize: int = 16,
        spool_dir: Path | None = None,
        max_rate_hz: float | None = None,
    ) -> None:
        self.policy = policy
        self.maxsize = maxsize
        self.spool_dir = spool_dir
        # Under 'latest': the newest frame is handed out at most this often (skipped
        # frames are reported at once); no limit once the queue is closed.
        self._interval = 1.0 / max_rate_hz if policy == "latest" and max_rate_hz else 0.0
        self._next_fresh = 0.0
        self._items: collections.deque[QueueItem] = collections.deque()
        self._skipped: collections.deque[QueueItem] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._in_memory = 0
        self.max_backlog = 0
        self.spooled = 0
        self._spooler: threading.Thread | None = None
        if policy == "all" and spool_dir is not None:
            self._spooler = threading.Thread(target=self._spool_loop, name="liveseg-spool")
            self._spooler.daemon = True
            self._spooler.start()

    def put(self, frame: Frame) -> None:
        """Enqueue a frame: O(1), never blocks, never drops pixels under ``all``."""
        item = QueueItem(frame, time.perf_counter())
        with self._cond:
            replaced = self.policy == "latest" and bool(self._items)
            if replaced:
                old = self._items.popleft()
                old.skipped = True
                self._skipped.append(old)
                self._in_memory -= 1
            self._items.append(item)
            self._in_memory += 1
            self.max_backlog = max(self.max_backlog, len(self._items))
            # A frame was waiting under a rate limit: any waiting worker is waiting for
            # the limit and wakes by itself then; waking it per frame would cost the GIL.
            if not (replaced and self._interval):
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> QueueItem | None:
        """Next item (skipped ones first, flagged ``skipped``); None when closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._skipped:
                    return self._skipped.popleft()
                now = time.monotonic()
                early = self._next_fresh - now if self._interval and not self._closed else 0.0
                if self._items and early <= 0:
                    item = self._items.popleft()
                    if item.spool is None:
                        self._in_memory -= 1
                    self._next_fresh = now + self._interval
                    break
                if self._closed and not self._items:
                    return None
                remaining = None if deadline is None else deadline - now
                if remaining is not None and remaining <= 0:
                    return None
                if self._items:  # the newest frame waits for the rate limit
                    remaining = early if remaining is None else min(remaining, early)
                self._cond.wait(remaining)
        if item.spool is not None:
            image = np.load(item.spool)
            item.spool.unlink(missing_ok=True)
            item.frame = replace(item.frame, image=image)
            item.spool = None
        return item

    def get_ready(self, n: int) -> list[QueueItem]:
        """Up to ``n`` more frames that are waiting now, without waiting for any.

        For batching a backlog under ``all`` (which never skips); empty under ``latest``,
        where only the newest frame is ever segmented.
        """
        out: list[QueueItem] = []
        while self.policy == "all" and len(out) < n:
            with self._cond:
                if not self._items:
                    break
            item = self.get(timeout=0)
            if item is None:  # another worker took it
                break
            out.append(item)
        return out

    def backlog(self) -> int:
        """Frames waiting (in memory or spooled)."""
        with self._cond:
            return len(self._items)

    def abandon(self) -> int:
        """Drop every waiting frame (a second Ctrl-C); returns how many were dropped.

        Their images are already on disk (the image writer ran first), so nothing is
        lost but their segmentation, which ``liveseg resegment`` fills in; spool files
        stay where they are and ``resegment`` removes them.
        """
        with self._cond:
            n = len(self._items) + len(self._skipped)
            self._items.clear()
            self._skipped.clear()
            self._in_memory = 0
            self._cond.notify_all()
        return n

    def close(self) -> None:
        """No more frames will come; workers drain what is left, then get None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._spooler is not None:
            self._spooler.join(timeout=5)

    def _spool_loop(self) -> None:
        assert self.spool_dir is not None
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        while True:
            with self._cond:
                while self._in_memory <= self.maxsize and not self._closed:
                    self._cond.wait(0.5)
                if self._closed and self._in_memory <= self.maxsize:
                    return
                # Spool the newest in-memory frame: the oldest ones go to workers next.
                victim = next((it for it in reversed(self._items) if it.spool is None), None)
                if victim is None:
                    continue
                image = victim.frame.image
            path = self.spool_dir / f"{victim.frame.index:08d}.npy"
            np.save(path, image)
            with self._cond:
                if victim in self._items and victim.spool is None:
                    victim.spool = path
                    victim.frame = replace(victim.frame, image=np.empty((0, 0), image.dtype))
                    self._in_memory -= 1
                    self.spooled += 1
                else:
                    path.unlink(missing_ok=True)


def apply_pixel_size(core: CMMCorePlus, configured: float | None) -> tuple[float, str]:
    """Decide the run's pixel size (µm) and make the core agree; returns (size, source).

    In order: ``configured`` (the config's ``hardware.pixel_size_um``), which is written
    into the core's active pixel-size calibration (one is defined if none is active) so
    that the OME-Zarr writer, the frames and the pixel→stage transform all use it; else
    Micro-Manager's calibration when it is > 0; else 1.0 (source ``default``: µm columns
    are then pixels, and the caller says so).
    """
    if configured is not None:
        current = core.getPixelSizeUm()
        config: str = core.getCurrentPixelSizeConfig()
        if not config:
            config = "liveseg"
            cam = core.getCameraDevice()
            core.definePixelSizeConfig(config, "Core", "Camera", cam)
            core.setPixelSizeConfig(config)
        affine = tuple(float(v) for v in core.getPixelSizeAffineByID(config))
        core.setPixelSizeUm(config, float(configured))
        if len(affine) == 6 and current > 0 and not _is_identity(affine):
            k = float(configured) / current  # keep the rotation, rescale it
            core.setPixelSizeAffine(
                config, [v * k if i % 3 != 2 else v for i, v in enumerate(affine)]
            )
        return float(configured), "config"
    size = float(core.getPixelSizeUm())
    if size > 0:
        return size, "micro-manager"
    return 1.0, "default"


def _is_identity(affine: tuple[float, ...]) -> bool:
    return bool(np.allclose(affine, (1, 0, 0, 0, 1, 0)) or np.allclose(affine, 0))


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist before the run out of the garbage collector's way.

    A live-run process holds a few hundred thousand long-lived objects (the model, its
    runtime, Qt, the plugins). Every frame allocates a few more that live for a while
    (the frame, its queue item, its table rows), so Python's full collections come
    round every few seconds and each one walks the whole heap with the GIL held,
    stalling the acquisition thread for tens of milliseconds: at a fast camera's rate,
    several per cent of its frames. ``gc.freeze`` moves what exists now into a
    permanent generation that collections skip; what the run allocates is collected
    as usual, and ``gc.unfreeze`` at the end hands the old objects back.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def connect_direct(signal: Any, slot: Any) -> None:
    """Connect ``slot`` so that it runs in the emitting (runner) thread, on any backend.

    When a QApplication exists, pymmcore-plus emits Qt signals, and a Qt signal connected
    to a plain Python callable is *queued* to the Qt thread: frames would then reach the
    queue only when the GUI gets round to it (a busy GUI slows segmentation, and frames
    still queued when the run ends are lost). A direct connection keeps the O(1) handler
    on the runner thread, as with psygnal. Qt is imported only for Qt signals.
    """
    if type(signal).__module__.startswith(("PySide", "PyQt")):
        from qtpy.QtCore import Qt

        signal.connect(slot, Qt.ConnectionType.DirectConnection)
    else:
        signal.connect(slot)


class Controller:
    """Runs an MDA on a core and feeds every frame into a :class:`FrameQueue`.

    The ``frameReady`` handler only builds a small :class:`Frame` and enqueues it.
    """

    def __init__(
        self, core: CMMCorePlus, queue: FrameQueue, writer: ImageWriter | None = None
    ) -> None:
        self.core = core
        self.queue = queue
        self.writer = writer
        self._index = 0
        self._t0 = time.perf_counter()
        self.frames_acquired = 0
        self.geometry_md: dict[str, Any] = {}
        self._affine: tuple[float, float, float, float, float, float] | None = None
        self._pixel_size = 1.0
        self.image_series: dict[tuple[int, int], int] = {}  # grid runs: (p, g) → image

    def prepare(self) -> None:
        """Read camera geometry once (not per frame)."""
        core = self.core
        cam = core.getCameraDevice()
        md: dict[str, Any] = {}
        if cam:
            for prop, key in (
                ("TransposeXY", "transpose_xy"),
                ("TransposeMirrorX", "mirror_x"),
                ("TransposeMirrorY", "mirror_y"),
            ):
                if core.hasProperty(cam, prop):
                    md[key] = core.getProperty(cam, prop) in ("1", 1)
            # MM applies these only when TransposeCorrection is on; otherwise pixels are raw.
            if core.hasProperty(cam, "TransposeCorrection") and core.getProperty(
                cam, "TransposeCorrection"
            ) in ("1", 1):
                md = dict.fromkeys(md, False)
        self.geometry_md = md
        self._pixel_size = core.getPixelSizeUm() or 1.0  # see apply_pixel_size
        affine = tuple(float(v) for v in core.getPixelSizeAffine())
        self._affine = affine if len(affine) == 6 else None  # type: ignore[assignment]

    def _position(self, event: useq.MDAEvent) -> int:
        """The index of the image group the frame's pixels go to (see image_series_index)."""
        p = int(event.index.get("p", 0))
        if not self.image_series:
            return p
        return self.image_series.get((p, int(event.index.get("g", 0))), p)

    def on_frame(self, image: np.ndarray, event: useq.MDAEvent, meta: Any = None) -> None:
        """FrameReady handler: O(1) — wrap and enqueue, nothing else."""
        x, y = event.x_pos, event.y_pos
        pos = meta.get("position") if isinstance(meta, dict) else None
        if pos and pos.get("x") is not None and pos.get("y") is not None:
            x, y = pos["x"], pos["y"]  # where the stage really was, not where it was sent
        md = self.geometry_md
        trig = event.metadata.get("liveseg") if event.metadata else None
        if trig:  # a triggered event: its series and the frame/label that triggered it
            md = {**md, **trig}
        frame = Frame(
            index=self._index,
            image=image,
            event=event,
            time_s=time.perf_counter() - self._t0,
            position=self._position(event),
            stage_xy=(float(x), float(y)) if x is not None and y is not None else None,
            stage_z=event.z_pos,
            pixel_size_um=self._pixel_size,
            pixel_affine=self._affine,
            metadata=md,
        )
        self._index += 1
        self.frames_acquired += 1
        if self.writer is not None:  # the image is on its way to disk before it is queued
            self.writer.frame(frame, meta if isinstance(meta, dict) else None)
        self.queue.put(frame)

    def run(self, events: Any, output: Any = None) -> None:
        """Run the MDA (blocking) with the handler connected; images go to ``output``."""
        self.prepare()
        self._t0 = time.perf_counter()
        sig = self.core.mda.events.frameReady
        started = self.core.mda.events.sequenceStarted
        connect_direct(sig, self.on_frame)
        if self.writer is not None:
            connect_direct(started, self.writer.setup)
        try:
            self.core.mda.run(events, output=output)
        finally:
            sig.disconnect(self.on_frame)
            if self.writer is not None:
                started.disconnect(self.writer.setup)
                self.writer.close()
