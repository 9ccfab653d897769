"""The whole liveseg plugin contract.

Every hook is documented here and in the README (a test keeps the two in step). pluggy
calls implementations in reverse registration order, so nothing order-sensitive is a
plain hook call: backends, triggers, sinks and flag policies are *registered* through a
callback and then run in the order the config lists them.

None of these hooks is ``firstresult``: every one collects (or notifies) all plugins.
Every call is guarded by the host: an exception in one implementation is logged,
recorded in ``events.jsonl`` with the frame it hit, and the others still run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import numpy as np

    from liveseg.types import Flag, Frame, FrameResult, Proposal

PROJECT_NAME = "liveseg"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[..., None]
"""``register(name, factory)``: the callback handed to every ``register_*`` hook."""


@hookspec
def register_backends(register: Register) -> None:
    """Register segmentation backend factories by name.

    Call ``register(name, factory)`` once per backend. ``factory(params, context)`` builds
    a :class:`liveseg.pipeline.Backend`; if the factory has a ``Params`` attribute (a
    pydantic model) the step's ``params`` from the config are validated against it first.
    Collecting: every plugin's backends are registered; a duplicate name is an error.
    """


@hookspec
def register_triggers(register: Register) -> None:
    """Register smart-microscopy trigger factories by name.

    Same shape as :func:`register_backends`. A trigger turns a segmented frame into
    :class:`liveseg.types.Proposal` objects; the config lists which triggers run.
    """


@hookspec
def register_sinks(register: Register) -> None:
    """Register result sink factories by name (same shape as :func:`register_backends`).

    A sink receives every processed frame and its result (e.g. writing extra tables).
    """


@hookspec
def register_flag_policies(register: Register) -> None:
    """Register automatic flag policy factories by name (same shape as the others).

    A policy decides from a frame's result whether it goes to the retraining queue.
    """


@hookspec
def register_trainers(register: Register) -> None:
    """Register fine-tuning functions by backend name (same shape as the others).

    ``register("unet", finetune)`` where ``finetune(base_weights, items, out_dir, *,
    epochs, learning_rate=None, seed=0, val_items=(), progress=True) -> FinetuneResult``
    trains a *copy*: it writes new weights under ``out_dir`` and never modifies
    ``base_weights``. The retraining loop finds a model's trainer by its backend name.
    """


@hookspec
def measure_frame(frame: Frame, result: FrameResult) -> Mapping[str, np.ndarray] | None:
    """Add per-object measurement columns for one frame.

    Return a mapping of column name → 1-D array with one value per object, in ascending
    label order (the order of ``np.unique(labels)[1:]``), or ``None``. Collecting: the
    columns of all plugins are merged into the objects table.
    """


@hookspec
def propose_events(
    frame: Frame, result: FrameResult, history: Sequence[Proposal]
) -> Sequence[Proposal] | None:
    """Propose new acquisition events from a segmented frame.

    ``history`` holds the proposals already accepted in this run. Collecting: all
    proposals go through the selection step (dedupe, rate limits, stage bounds) before
    anything is acquired.
    """


@hookspec
def flag_frame(frame: Frame, result: FrameResult) -> str | None:
    """Return a reason to put this frame in the retraining queue, or ``None``.

    Collecting: every non-``None`` reason becomes a flag.
    """


@hookspec
def frame_processed(frame: Frame, result: FrameResult) -> None:
    """Notification: ``frame`` went through the whole chain (ok, skipped or failed)."""


@hookspec
def frame_flagged(frame: Frame, flag: Flag) -> None:
    """Notification: ``frame`` was flagged for retraining."""


@hookspec
def sequence_started(run_dir: str, config: Mapping[str, Any]) -> None:
    """Notification: a run (acquisition, resegment or batch) starts writing ``run_dir``."""


@hookspec
def sequence_finished(run_dir: str, summary: Mapping[str, Any]) -> None:
    """Notification: the run in ``run_dir`` has finished; ``summary`` is in run.json."""
