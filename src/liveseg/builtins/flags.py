"""Built-in automatic flag policies: which frames go to the retraining queue by themselves.

A policy is built once per session from its config entry (``flags: [{policy: NAME,
params: {...}}]``) and asked ``check(frame, result) -> reason | None`` for every
segmented frame, on the worker thread. Policies may keep state (the rolling window of
``count_outlier``); each session builds its own, so nothing is shared.

* ``low_confidence``: the backend's per-object scores (``FrameResult.scores``) say the
  model is unsure: the mean score, or the fraction of objects below ``threshold``.
* ``count_outlier``: the object count jumps away from the rolling median of the last
  ``window`` frames by more than ``max(rel × median, min_abs, k × MAD)``.
* ``disagreement``: a second backend (``threshold`` by default) segments the same frame;
  when the two agree poorly (matched IoU summed over pairs / the larger object count,
  so missed and extra objects count as zero) the frame is flagged.
* ``when``: a frame-level condition holds (``class_fraction.pore > 0.3``; the trigger
  condition language).
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from liveseg.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from liveseg.pipeline import Backend, StepContext
    from liveseg.types import Frame, FrameResult

__all__ = [
    "CountOutlier",
    "Disagreement",
    "FlagWhen",
    "LowConfidence",
    "agreement",
]

log = logging.getLogger("liveseg.flags")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LowConfidence:
    """Flag frames whose segmentation the backend itself is unsure about."""

    class Params(_Params):
        """Parameters of ``low_confidence``.

        ``threshold``: score below which an object is unsure; ``max_fraction``: flag
        when more than this fraction of objects is unsure, or the mean score is below
        ``threshold``; ``min_objects``: ignore frames with fewer scored objects.
        """

        threshold: float = Field(default=0.5, ge=0, le=1)
        max_fraction: float = Field(default=0.3, ge=0, le=1)
        min_objects: int = Field(default=1, ge=1)

    def __init__(self, params: Params | None = None, context: StepContext | None = None) -> None:
        self.params = params or self.Params()

    def check(self, frame: Frame, result: FrameResult) -> str | None:
        """A reason when scores are low, ``None`` otherwise (or without scores)."""
        p = self.params
        scores = np.array([float(v) for v in result.scores.values()], dtype=np.float64)
        if scores.size < p.min_objects:
            return None
        mean = float(scores.mean())
        unsure = float(np.mean(scores < p.threshold))
        if mean < p.threshold:
            return f"low confidence: mean score {mean:.2f} < {p.threshold:g}"
        if unsure > p.max_fraction:
            return (
                f"low confidence: {unsure:.0%} of {scores.size} objects score below "
                f"{p.threshold:g}"
            )
        return None


class CountOutlier:
    """Flag frames whose object count departs from the recent rolling median."""

    class Params(_Params):
        """Parameters of ``count_outlier``.

        ``window``: frames in the rolling median; ``min_history``: frames needed
        before any flag; a count is an outlier when ``|count − median|`` exceeds all of
        ``rel × median``, ``min_abs`` and ``k × MAD``.
        """

        window: int = Field(default=20, ge=3)
        min_history: int = Field(default=5, ge=2)
        rel: float = Field(default=0.5, ge=0)
        min_abs: int = Field(default=3, ge=0)
        k: float = Field(default=4.0, ge=0)

    def __init__(self, params: Params | None = None, context: StepContext | None = None) -> None:
        self.params = params or self.Params()
        self._counts: collections.deque[int] = collections.deque(maxlen=self.params.window)

    def check(self, frame: Frame, result: FrameResult) -> str | None:
        """A reason when the count is an outlier; the count joins the window either way."""
        p = self.params
        count = result.count
        reason = None
        if len(self._counts) >= p.min_history:
            hist = np.asarray(self._counts, dtype=np.float64)
            median = float(np.median(hist))
            mad = float(np.median(np.abs(hist - median)))
            limit = max(p.rel * median, float(p.min_abs), p.k * mad)
            if abs(count - median) > limit:
                reason = (
                    f"count outlier: {count} objects vs rolling median {median:g} "
                    f"(last {len(hist)} frames, tolerance ±{limit:g})"
                )
        self._counts.append(count)
        return reason


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of two label images: summed matched IoU / the larger object count.

    1.0 when identical, 0.0 when nothing overlaps; unmatched objects count as 0, so a
    model that misses half the objects scores at most 0.5. Two empty images agree (1.0).
    """
    from liveseg.metrics import match

    n_a = int(np.unique(a[a > 0]).size)
    n_b = int(np.unique(b[b > 0]).size)
    if max(n_a, n_b) == 0:
        return 1.0
    _, _, ious = match(a, b)
    return float(ious.sum()) / max(n_a, n_b)


class Disagreement:
    """Flag frames where a second backend disagrees with the chain's result."""

    class Params(_Params):
        """Parameters of ``disagreement``.

        ``backend``/``params``: the second opinion (any registered backend);
        ``min_agreement``: flag below this agreement (see :func:`agreement`).
        """

        backend: str = "threshold"
        params: dict[str, Any] = Field(default_factory=dict)
        min_agreement: float = Field(default=0.6, ge=0, le=1)

    def __init__(self, params: Params | None = None, context: StepContext | None = None) -> None:
        self.params = params or self.Params()
        self._context = context
        self._other: Backend | None = None

    def _backend(self) -> Backend:
        if self._other is None:
            from liveseg.assembly import build_host
            from liveseg.config import LivesegConfig
            from liveseg.home import resolve_home
            from liveseg.pipeline import StepContext, validate_params

            given = self._context.backends if self._context is not None else None
            factories = (
                dict(given) if given is not None else build_host(LivesegConfig()).backends()
            )
            name = self.params.backend
            if name not in factories:
                raise ValueError(
                    f"disagreement: unknown backend {name!r}; available: "
                    f"{', '.join(sorted(factories))}"
                )
            ctx = self._context or StepContext(home=resolve_home(None))
            params = validate_params("disagreement", name, factories[name], self.params.params)
            self._other = factories[name](params, ctx)
        return self._other

    def check(self, frame: Frame, result: FrameResult) -> str | None:
        """Segment ``frame`` with the second backend and compare."""
        other = self._backend().segment(frame, None)
        score = agreement(np.asarray(other.labels), np.asarray(result.labels))
        if score < self.params.min_agreement:
            return (
                f"disagreement with {self.params.backend!r}: agreement {score:.2f} < "
                f"{self.params.min_agreement:g} ({result.count} vs {other.count} objects)"
            )
        return None

    def close(self) -> None:
        """Close the second backend."""
        if self._other is not None:
            self._other.close()
            self._other = None


class FlagWhen:
    """Flag frames on which a frame-level condition holds.

    The condition language of the triggers (:mod:`liveseg.triggers.conditions`) over
    the frame's numbers: ``count``, the frame statistics and, for a chain that returns
    a class map, ``class_fraction.<class>``, ``class_objects.<class>``, ``grain.*`` and
    ``pore.*`` — e.g. ``class_fraction.pore > 0.3`` flags frames whose porosity looks
    wrong for the material, so an operator can correct them.
    """

    class Params(_Params):
        """Parameters of ``when``: ``condition`` (required) and an optional ``reason``."""

        condition: str = Field(description="e.g. 'class_fraction.pore > 0.3'")
        reason: str | None = Field(default=None, description="default: the condition")

    def __init__(self, params: FlagWhen.Params, context: StepContext) -> None:
        from liveseg.triggers.conditions import compile_condition

        self.params = params
        self.condition = compile_condition(params.condition)

    def check(self, frame: Frame, result: FrameResult) -> str | None:
        """The reason when the condition holds on this frame."""
        from liveseg.triggers.conditions import frame_namespace

        ns = frame_namespace(frame, {}, None, result)
        ns["count"] = result.count
        if bool(np.any(self.condition(ns))):
            return self.params.reason or f"{self.params.condition} holds"
        return None


@hookimpl
def register_flag_policies(register: Register) -> None:
    """Register ``low_confidence``, ``count_outlier``, ``disagreement`` and ``when``."""
    register("low_confidence", LowConfidence)
    register("count_outlier", CountOutlier)
    register("disagreement", Disagreement)
    register("when", FlagWhen)
