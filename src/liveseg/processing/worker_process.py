"""Run the chain in a worker process: pixels through shared memory, never pickled.

``backlog.workers: {kind: process}`` moves inference out of the run's process, so the
acquisition thread competes for the GIL with nothing but the worker thread's copy into
shared memory and the measuring and writing that follow the chain. Each worker thread of
the run (``backlog.workers.count``) gets a worker process of its own:

* The process is started with the ``spawn`` context (the same on every platform; no
  ``fork`` of a process that holds a camera), builds the chain from the config through
  :mod:`liveseg.assembly` (so the plugins load there, under the same ``plugins.allow`` /
  ``deny`` / ``dir``), runs it once on a frame of noise of the camera's size and only then
  reports ready: the first real frame does not pay for imports and lazy initialisation.
* A frame travels as a small header over a :func:`multiprocessing.Pipe` (index, stage
  position, event, …) and its pixels in a :class:`~multiprocessing.shared_memory.SharedMemory`
  input slot; the labels (and a class map) come back in an output slot, with the small
  picklable rest of the result (status, timings, scores, ``extra``). The worker thread
  waits for its frame's result, as with the in-process step timeout, so one frame is in
  flight per worker and a ring of one input and one output slot per worker suffices. A
  larger frame (a full sensor after ROI frames) gets a larger slot. The chain's last
  processed image (``FrameResult.image``) stays in the worker: no consumer reads it.
* The run's process creates and unlinks every segment (the worker only attaches), so a
  worker killed at any moment leaves nothing behind; ``close`` (also on an exception path,
  and through :func:`weakref.finalize` at interpreter exit) unlinks them all.
* A worker that dies (a crash in a native library, the OOM killer, ``kill -9``) fails
  the frame it held with ``worker process died (exit -9), restarted``, a new worker is
  started and warmed up, and the run goes on. A worker over ``pipeline.step_timeout_s``
  fails its frame with the step that hung and, unlike a thread, is killed and replaced,
  so later frames do not have to wait for the hung call.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import secrets
import shutil
import threading
import time
import weakref
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
from liveseg.pipeline import failed_result
from liveseg.types import CLASS_DTYPE, LABEL_DTYPE, Frame, FrameResult, FrameStatus, empty_labels

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnContext
    from multiprocessing.process import BaseProcess

    from liveseg.config import LivesegConfig, StepConfig
    from liveseg.pipeline import Pipeline

__all__ = ["SEGMENT_PREFIX", "ProcessChainRunner", "WorkerSpec"]

log = logging.getLogger("liveseg.processing.worker")

SEGMENT_PREFIX = "liveseg_"
"""Every shared-memory segment liveseg creates is ``liveseg_<pid>_<hex>`` (``/dev/shm``).

``pid`` is the run's process, which creates and unlinks them all."""

_START_TIMEOUT_S = 300.0  # spawn, imports, model load and warm-up on a busy machine
_STOP_TIMEOUT_S = 10.0
_FRAME_FIELDS = (
    "index",
    "event",
    "time_s",
    "position",
    "stage_xy",
    "stage_z",
    "pixel_size_um",
    "pixel_affine",
    "metadata",
    "name",
)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to build the same chain as the run (all picklable).

    ``config`` is the run's config as JSON-able data; ``steps`` a replacement chain
    (``None``: the config's, else the default one); ``warmup_shape`` the size of the
    frame (noise) the worker segments before it reports ready.
    """

    config: dict[str, Any]
    home: str
    plugins_dir: str | None = None
    steps: tuple[dict[str, Any], ...] | None = None
    warmup_shape: tuple[int, int] = (512, 512)

    @classmethod
    def of(
        cls,
        config: LivesegConfig,
        home: str | Path,
        *,
        plugins_dir: str | None = None,
        steps: Sequence[StepConfig] | None = None,
        warmup_shape: tuple[int, int] | None = None,
    ) -> WorkerSpec:
        """The spec of a run's chain."""
        return cls(
            config=config.model_dump(mode="json"),
            home=str(home),
            plugins_dir=plugins_dir,
            steps=tuple(s.model_dump(mode="json") for s in steps) if steps is not None else None,
            warmup_shape=tuple(warmup_shape) if warmup_shape else (512, 512),  # type: ignore[arg-type]
        )


# -- shared memory ------------------------------------------------------------------------
class _Slot:
    """A shared-memory segment this process created and alone unlinks.

    ``weakref.finalize`` unlinks it when the slot is dropped or the interpreter exits, so
    an exception path that skips :meth:`release` still leaves no segment in ``/dev/shm``.
    """

    def __init__(self, nbytes: int) -> None:
        _check_room(nbytes)
        name = f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"  # macOS: < 31 chars
        self.shm = shared_memory.SharedMemory(name=name, create=True, size=max(1, nbytes))
        self.name = self.shm.name
        self.size = self.shm.size
        self._finalizer = weakref.finalize(self, _unlink, self.shm)

    def array(self, shape: tuple[int, ...], dtype: np.dtype[Any], offset: int = 0) -> np.ndarray:
        """A view of part of the segment (drop it before :meth:`release`)."""
        return np.ndarray(shape, dtype=dtype, buffer=self.shm.buf, offset=offset)

    def release(self) -> None:
        """Unlink and close the segment (idempotent)."""
        self._finalizer()


def _check_room(nbytes: int) -> None:
    """Refuse a segment that ``/dev/shm`` cannot hold (where it exists).

    The segment is sized lazily: writing past the memory the filesystem has would kill
    the run with SIGBUS instead of failing one frame (a container's 64 MB ``/dev/shm``).
    """
    root = Path("/dev/shm")
    if not root.is_dir():
        return
    free = shutil.disk_usage(root).free
    if nbytes > free:
        raise LivesegError(
            f"no room in {root} for a {nbytes / 1e6:.1f} MB frame slot ({free / 1e6:.1f} MB "
            "free); enlarge it (docker: --shm-size) or use backlog.workers.kind: thread"
        )


def _unlink(shm: shared_memory.SharedMemory) -> None:
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()
    with contextlib.suppress(BufferError):  # a view still alive: the mapping goes at exit
        shm.close()


def _out_layout(shape: tuple[int, int]) -> tuple[int, int]:
    """Byte offset of the class map after the labels, and the output slot's size."""
    pixels = int(shape[0]) * int(shape[1])
    offset = pixels * LABEL_DTYPE.itemsize
    return offset, offset + pixels * CLASS_DTYPE.itemsize


# -- the worker process -------------------------------------------------------------------
def _worker_main(conn: Connection, spec: WorkerSpec, step: Any) -> None:
    """Entry point of a worker process: build, warm up, say ready, then serve frames.

    ``step`` (shared memory) holds the index of the step running now, so the run's
    process can name the step a dead or hung worker was in.
    """
    import signal

    # Ctrl-C reaches the whole process group; the run drains and then ends this worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pipeline = _build_pipeline(spec)
        # Noise, not zeros: a backend may skip a constant frame and so stay cold.
        noise = np.random.default_rng(0).integers(0, 1000, spec.warmup_shape, dtype=np.uint16)
        t0 = time.perf_counter()
        pipeline.run(Frame(index=-1, image=noise))
        warmup_ms = (time.perf_counter() - t0) * 1e3
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    names = pipeline.step_names
    conn.send(("ready", {"pid": os.getpid(), "steps": names, "warmup_ms": warmup_ms}))
    where = {name: i for i, name in enumerate(names)}

    def on_step(name: str) -> None:
        step.value = where.get(name, -1)

    attached: dict[str, shared_memory.SharedMemory] = {}
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the run's process is gone
                return
            if message is None:
                return
            step.value = -1
            try:
                reply = _serve(pipeline, message, attached, on_step)
            except Exception as exc:  # not a step's failure (those are results): this frame's
                reply = {"status": FrameStatus.FAILED.value, "error": f"worker: {exc!r}"}
                reply.update(timings_ms={}, scores={}, class_names=(), extra={}, classes=False)
            try:
                conn.send(("result", reply))
            except Exception:  # something in extra does not travel: keep what does
                reply["extra"] = {k: v for k, v in reply["extra"].items() if _picklable(v)}
                reply["scores"] = {int(k): float(v) for k, v in reply["scores"].items()}
                conn.send(("result", reply))
    finally:
        pipeline.close()
        for shm in attached.values():
            with contextlib.suppress(BufferError):
                shm.close()


def _build_pipeline(spec: WorkerSpec) -> Pipeline:
    from liveseg.assembly import build_host, build_pipeline
    from liveseg.config import LivesegConfig, StepConfig

    config = LivesegConfig.model_validate(spec.config)
    host = build_host(config, spec.plugins_dir)
    steps = [StepConfig.model_validate(s) for s in spec.steps] if spec.steps is not None else None
    return build_pipeline(config, host, Path(spec.home), steps)


def _attach(
    attached: dict[str, shared_memory.SharedMemory], name: str
) -> shared_memory.SharedMemory:
    shm = attached.get(name)
    if shm is None:
        shm = shared_memory.SharedMemory(name=name)
        attached[name] = shm
    return shm


def _serve(
    pipeline: Pipeline,
    header: dict[str, Any],
    attached: dict[str, shared_memory.SharedMemory],
    on_step: Callable[[str], None],
) -> dict[str, Any]:
    """Segment the frame in the input slot; write labels (and classes) to the output slot."""
    for stale in set(attached) - {header["in"], header["out"]}:  # a slot was replaced
        with contextlib.suppress(BufferError):
            attached.pop(stale).close()
    shape = tuple(header["shape"])
    src = _attach(attached, header["in"])
    image = np.ndarray(shape, dtype=np.dtype(header["dtype"]), buffer=src.buf).copy()
    frame = Frame(image=image, **header["frame"])
    result = pipeline.run(frame, on_step=on_step)
    reply: dict[str, Any] = {
        "status": result.status.value,
        "error": result.error,
        "timings_ms": dict(result.timings_ms),
        "scores": dict(result.scores),
        "class_names": tuple(result.class_names),
        "extra": dict(result.extra),
        "classes": False,
    }
    if result.status is not FrameStatus.FAILED:
        dst = _attach(attached, header["out"])
        offset, _ = _out_layout(frame.shape)
        labels = np.ndarray(frame.shape, dtype=LABEL_DTYPE, buffer=dst.buf)
        labels[...] = result.labels
        del labels
        if result.classes is not None and result.classes.shape == frame.shape:
            classes = np.ndarray(frame.shape, dtype=CLASS_DTYPE, buffer=dst.buf, offset=offset)
            classes[...] = result.classes
            del classes
            reply["classes"] = True
    return reply


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


# -- the run's side -----------------------------------------------------------------------
class _WorkerDied(Exception):
    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"worker process died (exit {exitcode})")
        self.exitcode = exitcode


class _WorkerTimedOut(Exception):
    pass


class _Worker:
    """One worker process, its pipe and its two slots (used by one thread at a time)."""

    def __init__(self, spec: WorkerSpec, context: SpawnContext) -> None:
        self.spec = spec
        self.conn, child = context.Pipe(duplex=True)
        self.step: Any = context.RawValue("i", -1)  # the step running now (a ctypes int)
        self.process: BaseProcess = context.Process(
            target=_worker_main,
            args=(child, spec, self.step),
            name="liveseg-chain-worker",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.pid = self.process.pid
        self.ready_s = 0.0
        self.info: dict[str, Any] = {}
        self.inp: _Slot | None = None
        self.out: _Slot | None = None
        self._t0 = time.perf_counter()

    def wait_ready(self, timeout_s: float = _START_TIMEOUT_S) -> dict[str, Any]:
        """Block until the worker has built and warmed up its chain; its ready message."""
        try:
            kind, payload = self._receive(timeout_s)
        except _WorkerDied as exc:
            self.stop()
            raise LivesegError(
                f"the chain's worker process could not start: {exc} before it was ready (its "
                "error is above; a script of your own that starts the run needs "
                "`if __name__ == '__main__':`, as every spawned process does)"
            ) from None
        except _WorkerTimedOut:
            self.stop()
            raise LivesegError(
                f"the chain's worker process was not ready after {timeout_s:g} s"
            ) from None
        if kind != "ready":
            self.stop()
            raise LivesegError(f"the chain's worker process could not build the chain: {payload}")
        self.ready_s = time.perf_counter() - self._t0
        self.info = dict(payload)
        return self.info

    def _receive(self, timeout_s: float | None) -> tuple[str, Any]:
        ready = multiprocessing.connection.wait([self.conn, self.process.sentinel], timeout_s)
        if self.conn in ready:
            try:
                message: tuple[str, Any] = self.conn.recv()
            except (EOFError, OSError):
                pass
            else:
                return message
        if ready:
            self.process.join(_STOP_TIMEOUT_S)
            raise _WorkerDied(self.process.exitcode)
        raise _WorkerTimedOut

    def step_name(self, default: str) -> str:
        """The step the worker is in now (``default`` between steps or before the first)."""
        names = self.info.get("steps") or []
        i = int(self.step.value)
        return str(names[i]) if 0 <= i < len(names) else default

    def _slot(self, current: _Slot | None, nbytes: int) -> _Slot:
        if current is not None and current.size >= nbytes:
            return current
        if current is not None:
            current.release()
        return _Slot(nbytes)

    def segment(self, frame: Frame, timeout_s: float | None) -> FrameResult:
        """The chain's result for ``frame``; raises if the worker dies or runs over."""
        image = np.ascontiguousarray(frame.image)
        self.inp = inp = self._slot(self.inp, image.nbytes)
        offset, out_bytes = _out_layout(frame.shape)
        self.out = out = self._slot(self.out, out_bytes)
        view = inp.array(image.shape, image.dtype)
        np.copyto(view, image)
        del view
        fields: dict[str, Any] = {f: getattr(frame, f) for f in _FRAME_FIELDS}
        header: dict[str, Any] = {
            "in": inp.name,
            "out": out.name,
            "shape": image.shape,
            "dtype": image.dtype.str,
            "frame": fields,
        }
        try:
            try:
                self.conn.send(header)
            except (pickle.PicklingError, TypeError, AttributeError):  # pickled before sent
                header["frame"] = {**fields, "event": None, "metadata": {}}
                self.conn.send(header)
        except OSError:  # the worker is gone (BrokenPipeError)
            self.process.join(_STOP_TIMEOUT_S)
            raise _WorkerDied(self.process.exitcode) from None
        kind, reply = self._receive(timeout_s)
        if kind != "result":
            raise _WorkerDied(self.process.exitcode)
        status = FrameStatus(reply["status"])
        labels = empty_labels(frame.shape)
        classes = None
        if status is not FrameStatus.FAILED:
            labels = out.array(frame.shape, LABEL_DTYPE).copy()
            if reply["classes"]:
                classes = out.array(frame.shape, CLASS_DTYPE, offset).copy()
        return FrameResult(
            labels=labels,
            classes=classes,
            class_names=tuple(reply["class_names"]),
            scores=reply["scores"],
            timings_ms=reply["timings_ms"],
            status=status,
            error=reply["error"],
            extra=reply["extra"],
        )

    def stop(self, kill: bool = False) -> None:
        """End the process (asked to, else killed) and unlink its slots."""
        try:
            if kill:
                self.process.kill()
            elif self.process.is_alive():
                with contextlib.suppress(OSError):
                    self.conn.send(None)
            self.process.join(_STOP_TIMEOUT_S)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(_STOP_TIMEOUT_S)
        finally:
            self.conn.close()
            for slot in (self.inp, self.out):
                if slot is not None:
                    slot.release()
            self.inp = self.out = None


class ProcessChainRunner:
    """``run(frame)`` runs the chain in a worker process; the same contract as ``ChainRunner``.

    Parameters
    ----------
    spec
        How a worker builds the chain (:meth:`WorkerSpec.of`).
    count
        Worker processes started (and warmed up) by :meth:`start`: one per worker thread.
    timeout_s
        ``pipeline.step_timeout_s``: a frame over it fails and its worker is replaced.
    record
        ``record(kind, **fields)`` (events.jsonl): ``worker_started`` with the pid and the
        seconds until ready, ``worker_reused`` for a warm one kept from the previous run,
        ``worker_restarted`` with the reason.
    keep_warm
        :meth:`close` (the end of a run) keeps the workers running for the next run of
        the same session; :meth:`shutdown` ends them. Otherwise ``close`` ends them.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        count: int = 1,
        timeout_s: float | None = None,
        record: Callable[..., None] | None = None,
        *,
        keep_warm: bool = False,
    ) -> None:
        self.spec = spec
        self.keep_warm = keep_warm
        self.count = count
        self.timeout_s = timeout_s
        self.timeouts = 0
        self.restarts = 0
        self.batches = False  # a worker takes one frame at a time
        self.record = record or (lambda kind, **fields: log.info("%s: %s", kind, fields))
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    @property
    def pids(self) -> list[int]:
        """The process ids of the live worker processes."""
        with self._lock:
            return [w.pid for w in self._all if w.pid is not None and w.process.is_alive()]

    @property
    def segment_names(self) -> list[str]:
        """The shared-memory segments the workers' slots hold now (to check none is left)."""
        with self._lock:
            slots = [slot for w in self._all for slot in (w.inp, w.out) if slot is not None]
        return [slot.name for slot in slots]

    def start(self) -> None:
        """Have ``count`` warm workers: start the missing ones at once, wait for each.

        Workers kept from the previous run (``keep_warm``) are reused when still alive;
        the counters (``timeouts``, ``restarts``) start again from zero.
        """
        with self._lock:
            self.timeouts = self.restarts = 0
            dead = [w for w in self._all if not w.process.is_alive()]
            kept = [w for w in self._all if w not in dead]
            self._all, self._idle = kept, list(kept)
        for worker in dead:
            worker.stop()
        for worker in kept:
            self.record("worker_reused", pid=worker.pid)
        fresh = [self._spawn() for _ in range(self.count - len(kept))]
        try:
            for worker in fresh:
                self._ready(worker)
        except BaseException:
            self.shutdown()
            raise
        with self._lock:
            self._idle.extend(fresh)

    def _spawn(self) -> _Worker:
        worker = _Worker(self.spec, self._context)
        with self._lock:
            self._all.append(worker)
        return worker

    def _ready(self, worker: _Worker) -> None:
        try:
            info = worker.wait_ready()
        except BaseException:
            with self._lock:
                if worker in self._all:
                    self._all.remove(worker)
            raise
        self.record(
            "worker_started",
            pid=worker.pid,
            ready_s=round(worker.ready_s, 3),
            warmup_ms=round(float(info.get("warmup_ms", 0.0)), 1),
            steps=info.get("steps"),
        )

    def _worker(self) -> _Worker:
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is None:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:  # more threads than started workers
                worker = self._spawn()
                self._ready(worker)
            self._local.worker = worker
        return worker

    def _replace(self, worker: _Worker, kill: bool) -> str:
        """Stop ``worker``, start and warm up its successor; '' or why that failed."""
        worker.stop(kill=kill)
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            self.restarts += 1
        self._local.worker = None
        try:
            self._local.worker = self._spawn()
            self._ready(self._local.worker)
        except Exception as exc:  # the next frame tries again
            self._local.worker = None
            return str(exc)
        return ""

    def run_batch(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """One frame after another through :meth:`run` (the wire carries one frame)."""
        return [self.run(f) for f in frames]

    def run(self, frame: Frame) -> FrameResult:
        """Segment ``frame`` in this thread's worker; a dead or hung worker fails the frame."""
        try:
            worker = self._worker()
        except Exception as exc:  # no worker could be started: this frame fails, not the run
            return failed_result(frame, "worker", str(exc))
        try:
            return worker.segment(frame, self.timeout_s)
        except LivesegError as exc:  # no room for the frame's slot
            return failed_result(frame, "worker", str(exc))
        except _WorkerDied as exc:
            step = worker.step_name("worker")
            reason = f"worker process died (exit {exc.exitcode})"
            kill = False
        except _WorkerTimedOut:
            with self._lock:
                self.timeouts += 1
            step = worker.step_name("chain")
            reason = (
                f"step {step!r} took longer than pipeline.step_timeout_s = "
                f"{self.timeout_s:g} s; worker process {worker.pid} killed"
            )
            kill = True
        failed = self._replace(worker, kill)
        message = f"{reason}, restarted" if not failed else f"{reason}; restart failed: {failed}"
        self.record("worker_restarted", frame=frame.index, pid=worker.pid, reason=message)
        log.error("frame %d: %s", frame.index, message)
        return failed_result(frame, step, message, timed_out=kill)

    def close(self) -> None:
        """The run is over: keep the workers warm (``keep_warm``), else :meth:`shutdown`."""
        if not self.keep_warm:
            self.shutdown()
            return
        with self._lock:
            self._idle = list(self._all)
        self._local = threading.local()  # the next run's worker threads pick them up

    def shutdown(self) -> None:
        """Ask every worker to finish, join it, and unlink every segment (idempotent)."""
        with self._lock:
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            try:
                worker.stop()
            except Exception:
                log.exception("stopping worker process %s failed", worker.pid)
        self._local = threading.local()
