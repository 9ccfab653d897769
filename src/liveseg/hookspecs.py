"""The whole liveseg plugin contract: every hook, typed and documented.

Every hook is documented here and in the README (a test keeps the two in step); the
objects the hooks register are specified as Protocols in :mod:`liveseg.plugin_api`,
which is also where a plugin imports :data:`hookimpl` and the data types from.

pluggy calls implementations in reverse registration order, so nothing order-sensitive
is a plain hook call: backends, triggers, sinks and flag policies are *registered*
through a ``register`` callback and then run in the order the config lists them.

**One mechanism per job.** Triggers are ``register_triggers`` (chosen and ordered by the
config's ``triggers:``); ``propose_events`` is a thin adapter onto that same mechanism
for plugins that want to propose on every frame without a config entry (the host wraps
each implementing plugin in a :class:`liveseg.plugins.HookTrigger`, whose proposals pass
through the same selection). Flag policies are ``register_flag_policies`` (the config's
``flags:``); ``flag_frame`` is the same kind of thin adapter
(:class:`liveseg.plugins.HookFlagPolicy`). The adapters exist so that a one-function
plugin stays a one-function plugin; anything with parameters or state should register.

None of these hooks is ``firstresult``: every one collects (or notifies) all plugins.
Every call is guarded by the host, the ``register_*`` hooks included: an exception in
one implementation is logged, recorded (``PluginHost.errors``, the host's ``on_error``
callback, and ``events.jsonl`` with the frame it hit during a run), and the others still
run. A ``register_*`` implementation that raises contributes nothing (what it
registered before raising is dropped), so a half-registered plugin never runs.
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
"""``register(name, factory)`` (``register(name, source, description)`` for models):
the callback handed to every ``register_*`` hook."""


@hookspec
def register_backends(register: Register) -> None:
    """Register segmentation backend factories by name.

    Call ``register(name, factory)`` once per backend. ``factory(params, context)`` builds
    a :class:`liveseg.plugin_api.Backend` (``context`` is a
    :class:`~liveseg.plugin_api.StepContext`); if the factory has a ``Params`` attribute
    (a pydantic model) the step's ``params`` from the config are validated against it
    first. Called once per host, when the first chain or listing needs it. Collecting:
    every plugin's backends are registered; a name registered twice keeps the first and
    records an error naming both plugins.
    """


@hookspec
def register_triggers(register: Register) -> None:
    """Register smart-microscopy trigger factories by name.

    Same shape as :func:`register_backends`; ``factory(params, context)`` builds a
    :class:`liveseg.plugin_api.Trigger` (``context`` is a
    :class:`~liveseg.plugin_api.TriggerContext`). This is *the* trigger mechanism: the
    config's ``triggers:`` chooses and orders them, and their proposals and actions go
    through selection. Collecting.
    """


@hookspec
def register_sinks(register: Register) -> None:
    """Register result sink factories by name (same shape as :func:`register_backends`).

    ``factory(params, context)`` builds a :class:`liveseg.plugin_api.Sink`, enabled in
    the config as ``sinks: [{sink: NAME, params: {...}}]``. A sink gets ``setup(run)``
    once, ``frame(frame, result, objects)`` once for every frame whatever its status (live
    runs, ``segment``, ``batch``, ``resegment``) and ``finish(summary)`` at the end.
    Collecting.
    """


@hookspec
def register_flag_policies(register: Register) -> None:
    """Register automatic flag policy factories by name (same shape as the others).

    ``factory(params, context)`` builds a :class:`liveseg.plugin_api.FlagPolicy`, which
    decides from a frame's result whether it goes to the retraining queue. This is *the*
    flag mechanism (config ``flags:``); :func:`flag_frame` is a thin adapter onto it.
    Collecting.
    """


@hookspec
def register_trainers(register: Register) -> None:
    """Register fine-tuning functions by backend name (same shape as the others).

    ``register("unet", finetune)`` where ``finetune(base_weights, items, out_dir, *,
    epochs, learning_rate=None, seed=0, val_items=(), progress=True) -> FinetuneResult``
    trains a *copy* (:class:`liveseg.plugin_api.Trainer`): it writes new weights under
    ``out_dir`` and never modifies ``base_weights``. The retraining loop finds a model's
    trainer by its backend name. Collecting.
    """


@hookspec
def register_models(register: Register) -> None:
    """Register the models a plugin ships, so the core never names a plugin.

    Call ``register(name, path_or_loader, description)``: ``path_or_loader`` is a model
    directory (weights + ``model.json`` naming its backend) or a
    :class:`liveseg.plugin_api.ModelSource` (a callable returning one, called only when
    the model is first used). A spec naming ``name`` (e.g. ``params: {model: default}``)
    seeds the registry with it as ``name@1`` (alias ``prod``). A plugin that registers
    ``default`` provides the chain used when a config lists no steps: the backend its
    ``model.json`` names, with ``params: {model: default}``, then the size filter (so that
    backend takes a ``model`` parameter). Collecting; a name registered twice keeps the
    first and records an error.
    """


@hookspec
def measure_frame(frame: Frame, result: FrameResult) -> Mapping[str, np.ndarray] | None:
    """Add per-object measurement columns for one frame.

    Return a mapping of column name → 1-D array with one value per object, in ascending
    label order (the order of ``np.unique(labels)[1:]``), or ``None``. Called once per
    segmented frame (status ``ok``) on the worker thread, before any consumer sees it.
    Collecting: the columns of all plugins are merged into the objects table (and the
    ``objects`` every trigger and sink receives).
    """


@hookspec
def propose_events(
    frame: Frame, result: FrameResult, history: Sequence[Proposal]
) -> Sequence[Proposal] | None:
    """Propose new acquisition events from a segmented frame.

    A thin adapter onto :func:`register_triggers`: called for every base frame of a live
    run that was segmented (status ``ok``), on the worker thread, whether or not the
    config lists ``triggers:``, after the configured triggers. ``history`` holds the
    proposals already accepted in this run. Collecting: all proposals go through the
    same selection step (dedupe, rate limits, stage bounds) as the registered triggers'
    before anything is acquired.
    """


@hookspec
def flag_frame(frame: Frame, result: FrameResult) -> str | None:
    """Return a reason to put this frame in the retraining queue, or ``None``.

    A thin adapter onto :func:`register_flag_policies`: called for every live frame that
    was segmented (status ``ok``), on the worker thread, after the configured policies.
    Collecting: every non-``None`` reason becomes a flag whose source is the plugin.
    """


@hookspec
def frame_processed(frame: Frame, result: FrameResult) -> None:
    """Notification: ``frame`` is done (status ok, skipped or failed: ``result.status``).

    Called exactly once per frame, on the worker thread, in every entry point that
    segments frames. Keep it cheap: it runs before the next frame.
    """


@hookspec
def frame_flagged(frame: Frame, flag: Flag) -> None:
    """Notification: ``frame`` was flagged for retraining (by a policy or the operator).

    Called on the thread that flagged it (worker thread or GUI), after the frame is in
    the queue.
    """


@hookspec
def sequence_started(run_dir: str, config: Mapping[str, Any]) -> None:
    """Notification: a run (acquisition, segment, batch or resegment) starts ``run_dir``.

    ``config`` is the run's config as a plain mapping. Called once, before the first
    frame, on the thread that starts the run.
    """


@hookspec
def sequence_finished(run_dir: str, summary: Mapping[str, Any]) -> None:
    """Notification: the run in ``run_dir`` has ended; ``summary`` is what run.json records.

    Called once, after the last frame and the last sink, also when the run stopped early.
    """
