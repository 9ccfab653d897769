"""Built-in smart-microscopy triggers.

``visit_objects``, ``skip_if_empty``, ``adaptive_interval`` and ``stop_when``. Each is
a class with a pydantic ``Params`` model, built as ``factory(params, context)`` and
called on the worker thread for every segmented base frame through ``propose(frame,
result, objects, state)`` (see :class:`liveseg.triggers.Trigger`).
Conditions are :func:`liveseg.triggers.compile_condition` expressions over the measured
columns (``area_um2``, ``mean_intensity``, …) and the frame-level names in
:data:`liveseg.triggers.FRAME_NAMES` (``count``, ``frame_median``, ``objects_total``, …).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from liveseg.hookspecs import Register, hookimpl
from liveseg.triggers import (
    SetInterval,
    SkipRest,
    StopRun,
    compile_condition,
    frame_namespace,
)
from liveseg.types import FrameStatus, Proposal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import useq

    from liveseg.triggers import Action, TriggerContext, TriggerState
    from liveseg.types import Frame, FrameResult


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _holds(value: Any) -> bool:
    """A condition's value as one yes/no: arrays hold when any element does."""
    arr = np.asarray(value)
    return bool(arr.any()) if arr.ndim else bool(arr)


class VisitObjectsParams(_Params):
    """Which objects to visit and what to acquire, centred on each."""

    filter: str = Field(
        default="area_um2 > 0",
        description="condition on the measured columns, e.g. "
        "'area_um2 > 80 and mean_intensity > 1.5 * frame_median'",
    )
    exclude_edge: bool = Field(
        default=True, description="skip objects touching the image edge (centroid biased)"
    )
    max_objects: int | None = Field(default=None, ge=1, description="per frame, largest first")
    z_range_um: float = Field(default=0.0, ge=0, description="z-stack range around the focus")
    z_step_um: float = Field(default=1.0, gt=0)
    channels: list[str] = Field(
        default_factory=list, description="channel presets (empty: current channel)"
    )
    exposure_ms: float | None = Field(default=None, gt=0)
    roi: tuple[int, int] | None = Field(
        default=None,
        description="camera ROI (width, height) px centred on the object; rounded down to even",
    )
    priority: int = 0


class VisitObjects:
    """Acquire a sub-acquisition (z-stack, channels, exposure) centred on each object.

    The target is the object's centroid in stage coordinates (``centroid_x_um``,
    ``centroid_y_um`` from :func:`liveseg.coords.pixel_to_stage`), so the object lands in
    the centre of every triggered frame.
    """

    Params = VisitObjectsParams

    def __init__(self, params: VisitObjectsParams, context: TriggerContext) -> None:
        self.params = params
        self.name = context.name
        self.channel_group = context.channel_group
        self.condition = compile_condition(params.filter)
        n = round(params.z_range_um / params.z_step_um)
        self.z_offsets = [(i - n / 2) * params.z_step_um for i in range(n + 1)]

    def propose(
        self,
        frame: Frame,
        result: FrameResult,
        objects: Mapping[str, np.ndarray],
        state: TriggerState,
    ) -> Sequence[Proposal | Action] | None:
        """One proposal per matching object."""
        labels = objects.get("label")
        if result.status is not FrameStatus.OK or labels is None or len(labels) == 0:
            return None
        n = len(labels)
        ns = frame_namespace(frame, objects, state, result)
        mask = np.broadcast_to(np.asarray(self.condition(ns), dtype=bool), (n,)).copy()
        if self.params.exclude_edge and "touches_edge" in objects:
            mask &= ~np.asarray(objects["touches_edge"], dtype=bool)
        idx = np.flatnonzero(mask)
        if self.params.max_objects is not None and "area_px" in objects:
            idx = idx[np.argsort(-np.asarray(objects["area_px"])[idx], kind="stable")]
            idx = idx[: self.params.max_objects]
        out: list[Proposal | Action] = []
        for i in idx:
            x = float(objects["centroid_x_um"][i])
            y = float(objects["centroid_y_um"][i])
            events = self._events(frame, x, y)
            out.append(
                Proposal(
                    event=events[0],
                    events=tuple(events),
                    source=self.name,
                    frame_index=frame.index,
                    label=int(labels[i]),
                    target_xy=(x, y),
                    reason=f"{self.params.filter}",
                    priority=self.params.priority,
                )
            )
        return out

    def _events(self, frame: Frame, x: float, y: float) -> list[useq.MDAEvent]:
        import useq

        z0 = frame.stage_z
        if z0 is None and frame.event is not None:
            z0 = frame.event.z_pos
        offsets = self.z_offsets if z0 is not None else [0.0]
        channels: list[str | None] = list(self.params.channels) or [None]
        metadata: dict[str, Any] = {}
        if self.params.roi is not None:
            w, h = self.params.roi
            # Even sizes keep the ROI centred on the sensor, hence on the object.
            metadata["liveseg_roi"] = [max(2, w - w % 2), max(2, h - h % 2)]
        events = []
        for ci, ch in enumerate(channels):
            for zi, dz in enumerate(offsets):
                index = {"p": frame.position, "c": ci, "z": zi}
                events.append(
                    useq.MDAEvent(
                        index=index,
                        x_pos=x,
                        y_pos=y,
                        z_pos=None if z0 is None else z0 + dz,
                        channel=None
                        if ch is None
                        else {"config": ch, "group": self.channel_group},
                        exposure=self.params.exposure_ms,
                        metadata=metadata,
                    )
                )
        return events


class SkipIfEmptyParams(_Params):
    """The minimum object count a position needs to be acquired further."""

    min_count: int = Field(default=1, ge=1)
    filter: str | None = Field(
        default=None, description="count only objects matching this condition (e.g. size)"
    )


class SkipIfEmpty:
    """When a position's count is below ``min_count``, skip the rest of its time point.

    ``gates = True``: the queue waits for the first frame of every (position, time point)
    to be segmented before acquiring the rest of it, so the skip takes effect. That costs
    one segmentation latency per position and time point.
    """

    Params = SkipIfEmptyParams
    gates = True

    def __init__(self, params: SkipIfEmptyParams, context: TriggerContext) -> None:
        self.params = params
        self.condition = compile_condition(params.filter) if params.filter else None

    def propose(
        self,
        frame: Frame,
        result: FrameResult,
        objects: Mapping[str, np.ndarray],
        state: TriggerState,
    ) -> Sequence[Proposal | Action] | None:
        """A :class:`SkipRest` for an (almost) empty field."""
        if result.status is not FrameStatus.OK:
            return None
        count = len(objects.get("label", ()))
        if self.condition is not None and count:
            ns = frame_namespace(frame, objects, state, result)
            count = int(np.count_nonzero(np.broadcast_to(self.condition(ns), (count,))))
        if count >= self.params.min_count:
            return None
        t = int(frame.event.index.get("t", 0)) if frame.event is not None else 0
        return [SkipRest(frame.position, t, f"count {count} < {self.params.min_count}")]


class AdaptiveIntervalParams(_Params):
    """When to image fast, and how quickly to fall back."""

    condition: str = Field(description="frame-level condition, e.g. 'count >= 10'")
    fast_interval_s: float = Field(gt=0)
    slow_interval_s: float | None = Field(
        default=None, gt=0, description="None: the sequence's own interval"
    )
    release_frames: int = Field(
        default=3, ge=1, description="frames the condition must fail before switching back"
    )
    position: int | None = Field(default=None, description="only frames of this position")


class AdaptiveInterval:
    """Switch the timelapse to ``fast_interval_s`` while a condition holds.

    It switches back to ``slow_interval_s`` after the condition has failed on
    ``release_frames`` consecutive evaluated frames.
    """

    Params = AdaptiveIntervalParams

    def __init__(self, params: AdaptiveIntervalParams, context: TriggerContext) -> None:
        self.params = params
        self.condition = compile_condition(params.condition)
        self.fast = False
        self.misses = 0

    def propose(
        self,
        frame: Frame,
        result: FrameResult,
        objects: Mapping[str, np.ndarray],
        state: TriggerState,
    ) -> Sequence[Proposal | Action] | None:
        """A :class:`SetInterval` when the state changes."""
        p = self.params
        if result.status is not FrameStatus.OK:
            return None
        if p.position is not None and frame.position != p.position:
            return None
        if _holds(self.condition(frame_namespace(frame, objects, state, result))):
            self.misses = 0
            if not self.fast:
                self.fast = True
                return [SetInterval(p.fast_interval_s, f"{p.condition} holds")]
            return None
        if self.fast:
            self.misses += 1
            if self.misses >= p.release_frames:
                self.fast = False
                self.misses = 0
                why = f"{p.condition} failed on {p.release_frames} frames"
                return [SetInterval(p.slow_interval_s, why)]
        return None


class StopWhenParams(_Params):
    """The cumulative condition that ends the run."""

    condition: str = Field(description="e.g. 'objects_total >= 500'")


class StopWhen:
    """End the run cleanly once a (cumulative) condition holds."""

    Params = StopWhenParams

    def __init__(self, params: StopWhenParams, context: TriggerContext) -> None:
        self.params = params
        self.condition = compile_condition(params.condition)

    def propose(
        self,
        frame: Frame,
        result: FrameResult,
        objects: Mapping[str, np.ndarray],
        state: TriggerState,
    ) -> Sequence[Proposal | Action] | None:
        """A :class:`StopRun` once the condition holds."""
        if _holds(self.condition(frame_namespace(frame, objects, state, result))):
            return [StopRun(f"{self.params.condition} held at frame {frame.index}")]
        return None


@hookimpl
def register_triggers(register: Register) -> None:
    """Register the built-in triggers."""
    register("visit_objects", VisitObjects)
    register("skip_if_empty", SkipIfEmpty)
    register("adaptive_interval", AdaptiveInterval)
    register("stop_when", StopWhen)
