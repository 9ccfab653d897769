"""Run the chain with a time limit, so one hung backend cannot hang the run.

A Python thread cannot be killed, and a backend stuck in a native call (a driver, a GPU
kernel, a deadlocked library) never returns. So the chain runs on a helper thread (one
per calling worker, reused frame after frame), the caller waits at most
``step_timeout_s``, and on timeout the frame is *failed* with the step that hung. The
helper thread keeps the hung call; until it returns, further frames of that worker fail
at once with the same reason instead of queueing behind it, so the run still finishes
(and closes its store) in about the timeout plus its own time. When the call does
return, its late result is dropped and the thread serves frames again.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from liveseg.pipeline import failed_result

if TYPE_CHECKING:
    from collections.abc import Sequence

    from liveseg.pipeline import Pipeline
    from liveseg.types import Frame, FrameResult

__all__ = ["ChainRunner", "Runner"]


class Runner(Protocol):
    """What the processor needs to run the chain: this module's threads, or worker processes.

    ``start`` before the first frame (a worker process builds and warms up its chain),
    ``run`` per frame (never raises for a plugin's failure or a timeout), ``run_batch``
    for frames that wait together (``batches``: whether it segments them in one call,
    else one by one), ``close`` at the end; ``timeouts`` counts frames over
    ``pipeline.step_timeout_s``, ``restarts`` workers that had to be replaced.
    """

    timeouts: int
    restarts: int
    batches: bool

    def start(self) -> None:
        """Be ready for the first frame."""
        ...

    def run(self, frame: Frame) -> FrameResult:
        """Segment one frame."""
        ...

    def run_batch(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """Segment frames that wait together, one result per frame in order."""
        ...

    def close(self) -> None:
        """Release what ``start`` and ``run`` took."""
        ...


@dataclass
class _Job:
    frame: Frame
    done: threading.Event = field(default_factory=threading.Event)
    result: FrameResult | None = None
    batch: Sequence[Frame] = ()  # when set: the frames of one run_batch (frame is the first)
    results: list[FrameResult] = field(default_factory=list)
    error: BaseException | None = None


class _Lane:
    """One helper thread that runs the chain for one calling thread."""

    def __init__(self, pipeline: Pipeline, name: str) -> None:
        self.pipeline = pipeline
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.step = ""
        self.busy: _Job | None = None
        self.busy_since = 0.0
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _set_step(self, name: str) -> None:
        self.step = name

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            self.busy_since = time.perf_counter()
            self.busy = job
            try:
                if job.batch:
                    job.results = self.pipeline.run_batch(job.batch, on_step=self._set_step)
                else:
                    job.result = self.pipeline.run(job.frame, on_step=self._set_step)
            except BaseException as exc:  # handed to the caller, which re-raises
                job.error = exc
            finally:
                self.busy = None
                job.done.set()


class ChainRunner:
    """``run(frame)`` is ``pipeline.run(frame)`` with a time limit (None: no limit)."""

    def __init__(self, pipeline: Pipeline, timeout_s: float | None) -> None:
        self.pipeline = pipeline
        self.timeout_s = timeout_s
        self.timeouts = 0
        self.restarts = 0  # threads are never replaced
        self.batches = True
        self._local = threading.local()
        self._lanes: list[_Lane] = []
        self._lock = threading.Lock()

    def _lane(self) -> _Lane:
        lane: _Lane | None = getattr(self._local, "lane", None)
        if lane is None:
            with self._lock:
                lane = _Lane(self.pipeline, f"liveseg-chain-{len(self._lanes)}")
                self._lanes.append(lane)
            self._local.lane = lane
        return lane

    def start(self) -> None:
        """Nothing to start: a worker's helper thread starts with its first frame."""

    def run(self, frame: Frame) -> FrameResult:
        """Segment ``frame``; a chain over the limit gives a ``FAILED`` result."""
        if self.timeout_s is None:
            return self.pipeline.run(frame)
        lane = self._lane()
        hung = lane.busy
        if hung is not None:
            waited = time.perf_counter() - lane.busy_since
            return failed_result(
                frame,
                lane.step or "chain",
                f"step {lane.step!r} has not returned from frame {hung.frame.index} "
                f"after {waited:.1f} s (timeout {self.timeout_s:g} s); frame not segmented",
                timed_out=True,
            )
        job = _Job(frame)
        lane.jobs.put(job)
        if not job.done.wait(self.timeout_s):
            with self._lock:
                self.timeouts += 1
            return failed_result(
                frame,
                lane.step or "chain",
                f"step {lane.step!r} took longer than pipeline.step_timeout_s = "
                f"{self.timeout_s:g} s",
                timed_out=True,
            )
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def run_batch(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """:meth:`run` for several frames at once (``Pipeline.run_batch``), in order.

        The limit is ``step_timeout_s`` per frame (the batch's frames run one after
        another in the end); over it, every frame of the batch fails with the step that
        hung, as :meth:`run` fails one.
        """
        if len(frames) <= 1:
            return [self.run(f) for f in frames]
        if self.timeout_s is None:
            return self.pipeline.run_batch(frames)
        lane = self._lane()
        if lane.busy is not None:
            return [self.run(f) for f in frames]  # each fails at once with the reason
        job = _Job(frames[0], batch=list(frames))
        lane.jobs.put(job)
        limit = self.timeout_s * len(frames)
        if not job.done.wait(limit):
            with self._lock:
                self.timeouts += 1
            return [
                failed_result(
                    f,
                    lane.step or "chain",
                    f"step {lane.step!r} took longer than pipeline.step_timeout_s = "
                    f"{self.timeout_s:g} s per frame on a batch of {len(frames)} frames",
                    timed_out=True,
                )
                for f in frames
            ]
        if job.error is not None:
            raise job.error
        return job.results

    def close(self) -> None:
        """Let the helper threads end (a hung one ends when its call returns)."""
        with self._lock:
            lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.jobs.put(None)
        self._local = threading.local()
