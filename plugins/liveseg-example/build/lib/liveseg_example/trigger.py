"""The ``visit_brightest`` trigger: one extra image centred on the brightest object.

A trigger is built once per run as ``VisitBrightest(params, context)`` and asked
``propose(frame, result, objects, state)`` for every segmented base frame of a live run,
on a worker thread. It only proposes: selection (dedupe, rate limits, stage limits)
decides what is acquired, and every decision is recorded in ``events.jsonl``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from liveseg.plugin_api import FrameStatus, Proposal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from liveseg.plugin_api import Action, Frame, FrameResult, TriggerContext, TriggerState

__all__ = ["VisitBrightest", "VisitBrightestParams"]


class VisitBrightestParams(BaseModel):
    """Parameters of ``visit_brightest``."""

    model_config = ConfigDict(extra="forbid")
    min_peak: float = Field(default=0.0, description="propose only above this peak intensity")
    column: str = Field(default="example_peak", description="the objects column to rank by")
    exposure_ms: float | None = Field(default=None, gt=0, description="None: the frame's own")


class VisitBrightest:
    """Proposes imaging the brightest object of each frame, centred in the field."""

    Params = VisitBrightestParams
    gates = False  # True would hold the rest of a time point until this frame is seen

    def __init__(self, params: VisitBrightestParams, context: TriggerContext) -> None:
        self.params = params
        self.name = context.name

    def propose(
        self,
        frame: Frame,
        result: FrameResult,
        objects: Mapping[str, np.ndarray],
        state: TriggerState,
    ) -> Sequence[Proposal | Action] | None:
        """One proposal for the brightest object, or ``None``."""
        import useq

        values = objects.get(self.params.column)
        if result.status is not FrameStatus.OK or values is None or len(values) == 0:
            return None
        if "centroid_x_um" not in objects or frame.event is None:
            return None  # offline frames have no stage to move
        i = int(np.argmax(values))
        peak = float(values[i])
        if peak < self.params.min_peak:
            return None
        x, y = float(objects["centroid_x_um"][i]), float(objects["centroid_y_um"][i])
        event = useq.MDAEvent(
            index={"p": frame.position},
            x_pos=x,
            y_pos=y,
            z_pos=frame.stage_z if frame.stage_z is not None else frame.event.z_pos,
            channel=frame.event.channel,
            exposure=self.params.exposure_ms or frame.event.exposure,
        )
        return [
            Proposal(
                event=event,
                source=self.name,
                frame_index=frame.index,
                label=int(objects["label"][i]),
                target_xy=(x, y),
                reason=f"brightest object (peak {peak:.0f})",
            )
        ]
