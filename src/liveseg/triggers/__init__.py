"""Smart microscopy: acquisition events driven by what the chain detects.

One concept per module, in the order a frame meets them:

* :mod:`~liveseg.triggers.controller` — :class:`TriggerController`, on the worker
  thread after a frame is segmented and measured (the frame processor's
  ``TriggerConsumer``): asks every trigger for proposals and actions, selects, records,
  hands accepted work to the queue.
* :mod:`~liveseg.triggers.conditions` — the safe condition language of trigger
  parameters (:func:`compile_condition`, :func:`frame_namespace`).
* :mod:`~liveseg.triggers.selection` — :func:`select`: stage limits, dedupe, rate limits.
* :mod:`~liveseg.triggers.scheduler` — :class:`TriggerQueue`, the event source the MDA
  runner iterates: base sequence and triggered sub-acquisitions interleaved.
* :mod:`~liveseg.triggers.roi` — the camera ROI of triggered events via ``MDAEvent.roi``.

The trigger contract (:class:`Trigger`, :class:`TriggerContext`, :class:`TriggerState`,
the actions) lives in :mod:`liveseg.plugin_api` and is re-exported here; the
``propose_events`` adapter is :class:`liveseg.plugins.HookTrigger`; triggered images are
stored by :class:`liveseg.store.TriggeredStore`.
"""

from __future__ import annotations

from liveseg.plugin_api import (
    Action,
    SetInterval,
    SkipRest,
    StopRun,
    Trigger,
    TriggerContext,
    TriggerState,
)
from liveseg.triggers.conditions import (
    FRAME_NAMES,
    Condition,
    compile_condition,
    frame_namespace,
)
from liveseg.triggers.controller import TriggerController, build_trigger_controller
from liveseg.triggers.scheduler import TriggerQueue
from liveseg.triggers.selection import select

__all__ = [
    "FRAME_NAMES",
    "Action",
    "Condition",
    "SetInterval",
    "SkipRest",
    "StopRun",
    "Trigger",
    "TriggerContext",
    "TriggerController",
    "TriggerQueue",
    "TriggerState",
    "build_trigger_controller",
    "compile_condition",
    "frame_namespace",
    "select",
]
