"""The ordered chain of segmentation steps.

A step is a :class:`Backend` built by a registered factory; the chain runs the steps in
the order the config lists them (never in pluggy's registration order), handing each the
frame and the previous step's result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pydantic

from liveseg.errors import ConfigError
from liveseg.plugin_api import Backend, BackendFactory, StepContext
from liveseg.types import LABEL_DTYPE, Frame, FrameResult, FrameStatus, empty_labels

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from liveseg.config import StepConfig

__all__ = [
    "Backend",
    "BackendFactory",
    "Pipeline",
    "StepContext",
    "StepError",
    "failed_result",
    "lookup_factory",
    "validate_params",
]

log = logging.getLogger("liveseg.pipeline")


class StepError(RuntimeError):
    """A step raised while segmenting a frame; carries the step's name."""

    def __init__(self, step: str, frame_index: int, cause: BaseException) -> None:
        super().__init__(f"step {step!r} failed on frame {frame_index}: {cause!r}")
        self.step = step
        self.frame_index = frame_index
        self.cause = cause


def lookup_factory(
    kind: str, name: str, factories: Mapping[str, Callable[..., Any]], where: str = ""
) -> Callable[..., Any]:
    """The factory registered as ``name``, or a ConfigError listing what is available."""
    if name not in factories:
        available = ", ".join(sorted(factories)) or "(none)"
        place = f" {where}" if where else ""
        raise ConfigError(f"unknown {kind} {name!r}{place}; available {kind}s: {available}")
    return factories[name]


def validate_params(step: str, backend: str, factory: Callable[..., Any], params: Any) -> Any:
    """Validate ``params`` against ``factory.Params`` with an error naming step and field."""
    model = getattr(factory, "Params", None)
    if model is None:
        return dict(params or {})
    try:
        return model.model_validate(params or {})
    except pydantic.ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(params)"
            allowed = ""
            ctx = err.get("ctx") or {}
            if "expected" in ctx and str(ctx["expected"]) not in err["msg"]:
                allowed = f" (allowed: {ctx['expected']})"
            lines.append(f"  {loc}: {err['msg']}{allowed}")
        fields = ", ".join(sorted(model.model_fields))
        raise ConfigError(
            f"invalid parameters for step {step!r} (backend {backend!r}):\n"
            + "\n".join(lines)
            + f"\n  valid fields: {fields}"
        ) from None


@dataclass
class _Step:
    name: str
    backend_name: str
    backend: Backend


class Pipeline:
    """An ordered chain of backends; ``run`` never raises for a step's failure."""

    def __init__(self, steps: Sequence[tuple[str, str, Backend]]) -> None:
        self._steps = [_Step(name, backend_name, b) for name, backend_name, b in steps]

    @classmethod
    def build(
        cls,
        steps: Sequence[StepConfig],
        factories: Mapping[str, Callable[..., Any]],
        context: StepContext,
    ) -> Pipeline:
        """Build the chain from config steps and the registered factories."""
        built: list[tuple[str, str, Backend]] = []
        try:
            for i, step in enumerate(steps):
                name = step.name or f"{i}:{step.backend}"
                factory = lookup_factory("backend", step.backend, factories, f"in step {name!r}")
                params = validate_params(name, step.backend, factory, step.params)
                ctx = StepContext(
                    home=context.home,
                    threads=context.threads,
                    device=context.device,
                    step_name=name,
                    logger=context.logger.getChild(step.backend),
                )
                built.append((name, step.backend, factory(params, ctx)))
        except BaseException:
            for _, _, backend in built:
                _close_quietly(backend)
            raise
        return cls(built)

    @property
    def step_names(self) -> list[str]:
        """Names of the steps, in run order."""
        return [s.name for s in self._steps]

    @property
    def backend_names(self) -> list[str]:
        """Backend of each step, in run order."""
        return [s.backend_name for s in self._steps]

    @property
    def backends(self) -> list[Backend]:
        """The backend objects, in run order."""
        return [s.backend for s in self._steps]

    def run(self, frame: Frame, on_step: Callable[[str], None] | None = None) -> FrameResult:
        """Run every step on ``frame``; a failing step yields a ``FAILED`` result.

        ``on_step(name)`` is called before each step starts, so a caller that waits with
        a timeout can name the step that hangs.
        """
        upstream: FrameResult | None = None
        timings: dict[str, float] = {}
        image = np.asarray(frame.image)
        if image.ndim != 2:
            return failed_result(
                frame, "chain", f"expected a 2-D image, got shape {image.shape}", {}
            )
        for step in self._steps:
            if on_step is not None:
                on_step(step.name)
            result = self._segment_one(step, frame, upstream, timings)
            if result.status is FrameStatus.FAILED:
                return result
            upstream = result
        if upstream is None:
            return FrameResult(labels=empty_labels(frame.shape), timings_ms=timings)
        return upstream.replace(timings_ms=timings)

    def run_batch(
        self, frames: Sequence[Frame], on_step: Callable[[str], None] | None = None
    ) -> list[FrameResult]:
        """:meth:`run` for several frames; a step with ``segment_batch`` gets them at once.

        A backend may offer ``segment_batch(frames, upstreams)`` (the unet and cellpose
        steps do: frames share forward passes). Each step gets the frames still running;
        a step without it segments them one by one. When a batch call raises, that step
        runs frame by frame for the batch, so only the frame that fails is failed, with
        the message :meth:`run` would give. The results equal :meth:`run`'s, in order;
        a step's ``timings_ms`` is its batch time divided by the frames.
        """
        if len(frames) <= 1 or not any(
            callable(getattr(s.backend, "segment_batch", None)) for s in self._steps
        ):
            return [self.run(f, on_step) for f in frames]
        out: list[FrameResult | None] = [None] * len(frames)
        ups: list[FrameResult | None] = [None] * len(frames)
        timings: list[dict[str, float]] = [{} for _ in frames]
        live = []
        for i, frame in enumerate(frames):
            shape = np.asarray(frame.image).shape
            if len(shape) != 2:
                out[i] = failed_result(frame, "chain", f"expected a 2-D image, got shape {shape}")
            else:
                live.append(i)
        for step in self._steps:
            if on_step is not None:
                on_step(step.name)
            batch = getattr(step.backend, "segment_batch", None)
            done: dict[int, FrameResult] = {}
            if callable(batch) and len(live) > 1:
                t0 = time.perf_counter()
                try:
                    got = list(batch([frames[i] for i in live], [ups[i] for i in live]))
                    if len(got) != len(live):
                        raise ValueError(f"returned {len(got)} results for {len(live)} frames")
                    for i, r in zip(live, got, strict=True):
                        _check_result(step.name, frames[i], r)
                        done[i] = r
                except Exception as exc:
                    log.info(
                        "step %r: batch of %d failed (%r); frame by frame",
                        step.name,
                        len(live),
                        exc,
                    )
                    done = {}
                else:
                    ms = (time.perf_counter() - t0) * 1e3 / len(live)
                    for i in live:
                        timings[i][step.name] = ms
            for i in live:
                if i not in done:
                    r = self._segment_one(step, frames[i], ups[i], timings[i])
                    if r.status is FrameStatus.FAILED:
                        out[i] = r
                        continue
                    done[i] = r
                ups[i] = done[i]
            live = [i for i in live if out[i] is None]
        for i in live:
            up = ups[i]
            out[i] = (
                FrameResult(labels=empty_labels(frames[i].shape), timings_ms=timings[i])
                if up is None
                else up.replace(timings_ms=timings[i])
            )
        return [r for r in out if r is not None]

    def _segment_one(
        self, step: _Step, frame: Frame, upstream: FrameResult | None, timings: dict[str, float]
    ) -> FrameResult:
        """One step on one frame, timed into ``timings``; a failure gives a failed result."""
        t0 = time.perf_counter()
        try:
            result = step.backend.segment(frame, upstream)
            _check_result(step.name, frame, result)
        except Exception as exc:
            timings[step.name] = (time.perf_counter() - t0) * 1e3
            log.warning("step %r failed on frame %d: %r", step.name, frame.index, exc)
            msg = f"{type(exc).__name__}: {exc}"
            return failed_result(frame, step.name, msg, timings)
        timings[step.name] = (time.perf_counter() - t0) * 1e3
        return result

    def backend_of(self, step: str) -> str:
        """The backend name of step ``step`` (``step`` itself when there is none)."""
        for s in self._steps:
            if s.name == step:
                return s.backend_name
        return step

    def close(self) -> None:
        """Close every backend (errors are logged, never raised)."""
        for step in self._steps:
            _close_quietly(step.backend)


def _check_result(step: str, frame: Frame, result: FrameResult) -> None:
    if not isinstance(result, FrameResult):
        raise TypeError(f"step {step!r} returned {type(result).__name__}, not FrameResult")
    if result.labels.shape != frame.shape:
        raise ValueError(
            f"step {step!r} returned labels of shape {result.labels.shape}, expected {frame.shape}"
        )
    if result.labels.dtype != LABEL_DTYPE:
        raise TypeError(
            f"step {step!r} returned labels of dtype {result.labels.dtype}, not uint32"
        )


def failed_result(
    frame: Frame, step: str, message: str, timings: Mapping[str, float] | None = None, **extra: Any
) -> FrameResult:
    """The result of a frame that ``step`` could not segment (empty labels, the reason).

    ``extra`` goes into :attr:`FrameResult.extra` beside ``failed_step``.
    """
    return FrameResult(
        labels=empty_labels(frame.shape),
        status=FrameStatus.FAILED,
        error=message,
        timings_ms=dict(timings or {}),
        extra={"failed_step": step, **extra},
    )


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:
        log.exception("closing backend %r failed", backend)
