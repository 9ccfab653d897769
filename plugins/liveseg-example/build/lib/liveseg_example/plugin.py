"""The entry point module (group ``liveseg``): every hook of liveseg-example.

Importing it must stay cheap (no heavy imports at module level): ``liveseg plugins`` and
every run import all installed plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from liveseg.plugin_api import FrameStatus, Register, hookimpl, label_ids
from liveseg_example.backend import SpotsBackend
from liveseg_example.sink import JsonlSink
from liveseg_example.trigger import VisitBrightest

if TYPE_CHECKING:
    from collections.abc import Mapping

    from liveseg.plugin_api import Frame, FrameResult

__all__ = ["measure_frame", "register_backends", "register_sinks", "register_triggers"]


@hookimpl
def register_backends(register: Register) -> None:
    """``spots``: a chain step (``pipeline.steps: [{backend: spots}]``)."""
    register("spots", SpotsBackend)


@hookimpl
def register_sinks(register: Register) -> None:
    """``jsonl``: a result sink (``sinks: [{sink: jsonl}]``)."""
    register("jsonl", JsonlSink)


@hookimpl
def register_triggers(register: Register) -> None:
    """``visit_brightest``: a smart-microscopy trigger (``triggers: [{trigger: ...}]``)."""
    register("visit_brightest", VisitBrightest)


@hookimpl
def measure_frame(frame: Frame, result: FrameResult) -> Mapping[str, np.ndarray] | None:
    """``example_peak``: each object's brightest raw pixel, in ascending label order."""
    from scipy import ndimage as ndi

    if result.status is not FrameStatus.OK:
        return None
    ids = label_ids(result.labels)
    if ids.size == 0:
        return {"example_peak": np.zeros(0, np.float64)}
    peaks = ndi.maximum(np.asarray(frame.image), labels=result.labels, index=ids)
    return {"example_peak": np.asarray(peaks, dtype=np.float64)}
