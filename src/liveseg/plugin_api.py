"""The public face of the liveseg plugin contract, in one module.

A plugin imports what it needs from here and nowhere else: the :data:`hookimpl` marker,
the data types a hook receives or returns (:class:`Frame`, :class:`FrameResult`,
:class:`Proposal`, …) and one :class:`~typing.Protocol` per extension kind. Each
protocol says what the object does, when liveseg calls it, on which thread, and what it
must not do.

=====================  ==========================  ===================================
extension kind         registered through          chosen by
=====================  ==========================  ===================================
:class:`Backend`       ``register_backends``       config ``pipeline.steps`` (ordered)
:class:`Trigger`       ``register_triggers``       config ``triggers`` (ordered)
:class:`FlagPolicy`    ``register_flag_policies``  config ``flags`` (ordered)
:class:`Sink`          ``register_sinks``          config ``sinks`` (ordered)
:class:`Trainer`       ``register_trainers``       the backend of the model being tuned
:class:`ModelSource`   ``register_models``         a model spec naming it
=====================  ==========================  ===================================

Every ``register_*`` hook hands the plugin a ``register`` callback (the pattern of
``llm``'s ``register_models``): ``register(name, factory)`` for the factory kinds and
``register(name, path_or_loader, description)`` for models. Factories are called as
``factory(params, context)``; when a factory has a ``Params`` attribute (a pydantic
model) the entry's ``params`` from the config are validated against it first, so a typo
is a one-line config error naming the field.

Every call into a plugin is guarded by the host: an exception is logged, recorded (in
``events.jsonl`` with the frame it hit during a run, and in
:attr:`liveseg.plugins.PluginHost.errors`), and the run carries on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from liveseg.hookspecs import Register, hookimpl
from liveseg.types import (
    FinetuneResult,
    Flag,
    Frame,
    FrameResult,
    FrameStatus,
    Proposal,
    TrainItem,
    input_image,
    label_ids,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    import numpy as np

__all__ = [
    "Action",
    "Backend",
    "BackendFactory",
    "FinetuneResult",
    "Flag",
    "FlagPolicy",
    "FlagPolicyFactory",
    "Frame",
    "FrameResult",
    "FrameStatus",
    "ModelSource",
    "Proposal",
    "Register",
    "SetInterval",
    "Sink",
    "SinkFactory",
    "SkipRest",
    "StepContext",
    "StopRun",
    "TrainItem",
    "Trainer",
    "Trigger",
    "TriggerContext",
    "TriggerFactory",
    "TriggerState",
    "hookimpl",
    "input_image",
    "label_ids",
]


# -- contexts handed to factories ---------------------------------------------------------
@dataclass(frozen=True)
class StepContext:
    """What a backend, flag policy or sink factory may need besides its own parameters.

    ``home`` is the liveseg data directory (model registry, queue); ``threads`` and
    ``device`` say how much of the machine the object may use; ``step_name`` is the
    config entry's name; ``logger`` is a child of the ``liveseg`` logger to log through
    (never configure the root logger). ``backends`` are the backend factories of the
    run's plugin host, for an object that builds a backend of its own (the
    ``disagreement`` flag policy's second opinion), so that it honours the run's
    allow/deny lists; ``None`` when the caller has no host.
    """

    home: Path
    threads: int = 1
    device: str | None = None
    step_name: str = ""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("liveseg"))
    backends: Mapping[str, BackendFactory] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class TriggerContext:
    """What a trigger factory may need besides its own parameters."""

    name: str
    channel_group: str = "Channel"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("liveseg"))


# -- backends -----------------------------------------------------------------------------
@runtime_checkable
class Backend(Protocol):
    """One step of the segmentation chain.

    When
        ``segment`` is called once per frame, in the order the config lists the steps;
        ``upstream`` is the previous step's result (``None`` for the first step).
        ``close`` is called once when the session or batch ends.
    Thread
        A worker thread (or worker process), never the acquisition thread. The object
        is used by one thread at a time.
    Must
        Return a :class:`FrameResult` whose ``labels`` have the frame's height and
        width and dtype ``uint32`` (0 = background, 1..N objects); anything else marks
        the frame ``failed``.
    Must not
        Modify ``frame.image`` or ``upstream``'s arrays in place, touch the microscope,
        or keep frames beyond the call. Raising is allowed: the frame is marked
        ``failed`` with the message and the run goes on.
    """

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Segment ``frame``; ``upstream`` is the previous step's result (or None)."""
        ...

    def close(self) -> None:
        """Release models, files and devices; called once when the session ends."""
        ...


class BackendFactory(Protocol):
    """``factory(params, context) -> Backend``; an optional ``Params`` validates params.

    Called once per chain step, on the thread that builds the session, before the first
    frame. Loading weights belongs here, not in ``segment``.
    """

    def __call__(self, params: Any, context: StepContext) -> Backend:
        """Build the backend for one step."""
        ...


# -- triggers -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SkipRest:
    """Action: skip the remaining base events of ``position`` at time point ``t``."""

    position: int
    t: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SetInterval:
    """Action: set the timelapse interval (seconds); ``None`` restores the sequence's own."""

    interval_s: float | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StopRun:
    """Action: end the run cleanly after the current event (pending frames still finish)."""

    reason: str = ""


Action: TypeAlias = SkipRest | SetInterval | StopRun
"""What a trigger may return besides proposals: change the base acquisition."""


@dataclass
class TriggerState:
    """Cumulative run state a trigger may read (owned by the trigger controller).

    ``accepted`` holds every accepted proposal of the run (the dedupe history). Triggers
    read it; only the controller writes it.
    """

    frames: int = 0
    objects_total: int = 0
    triggered_series: int = 0
    interval_s: float | None = None
    time_s: float = 0.0
    accepted: list[Proposal] = field(default_factory=list)
    counts_by_position: dict[int, int] = field(default_factory=dict)

    def numbers(self) -> dict[str, float]:
        """The cumulative names conditions may use."""
        return {
            "frames": self.frames,
            "objects_total": self.objects_total,
            "triggered_series": self.triggered_series,
            "time_s": self.time_s,
            "fast": 0.0 if self.interval_s is None else 1.0,
        }


@runtime_checkable
class Trigger(Protocol):
    """A smart-microscopy trigger, built by ``factory(params, context: TriggerContext)``.

    When
        ``propose`` is called once for every *base* frame of a live run after it was
        segmented and measured (``result.status`` may be ``failed``; most triggers return
        nothing then), in the order the config lists the triggers. Plugin
        ``propose_events`` hooks are adapted into this same list
        (:class:`liveseg.plugins.HookTrigger`).
    Thread
        The worker thread that processed the frame.
    Answer
        :class:`Proposal` objects and/or :data:`Action` objects, or ``None``. Proposals
        go through the selection step (dedupe, rate limits, stage bounds) before
        anything is acquired; every accepted and rejected proposal is recorded.
    Must not
        Drive the microscope or sleep: a trigger only proposes. ``objects`` are the
        measured columns (one value per object, ascending label) and ``state`` is
        read-only. A class attribute ``gates = True`` makes the queue wait for the first
        frame of each (position, time point) before acquiring the rest of it, so that an
        action such as :class:`SkipRest` can take effect.
    """

    def propose(
        self,
        frame: Frame,
        result: FrameResult,
        objects: Mapping[str, np.ndarray],
        state: TriggerState,
    ) -> Sequence[Proposal | Action] | None:
        """Proposals and actions for one segmented frame."""
        ...


class TriggerFactory(Protocol):
    """``factory(params, context) -> Trigger``; an optional ``Params`` validates params."""

    def __call__(self, params: Any, context: TriggerContext) -> Trigger:
        """Build one configured trigger."""
        ...


# -- flag policies ------------------------------------------------------------------------
@runtime_checkable
class FlagPolicy(Protocol):
    """An automatic flag policy: which frames go to the retraining queue by themselves.

    When
        ``check`` is called once for every frame that was segmented successfully
        (status ``ok``), after measurement, in the order the config lists the policies.
        Plugin ``flag_frame`` hooks are adapted into this same list
        (:class:`liveseg.plugins.HookFlagPolicy`).
    Thread
        The worker thread that processed the frame. A policy may keep state (a rolling
        window); each session builds its own, so nothing is shared between runs.
    Answer
        A short human-readable reason to flag the frame, or ``None``.
    Must not
        Write to the queue itself or modify the frame or result; the session records
        the flag, copies the frame into the queue and notifies ``frame_flagged``.
    """

    def check(self, frame: Frame, result: FrameResult) -> str | None:
        """A reason to flag ``frame`` for retraining, or ``None``."""
        ...


class FlagPolicyFactory(Protocol):
    """``factory(params, context) -> FlagPolicy``; an optional ``Params`` validates params."""

    def __call__(self, params: Any, context: StepContext) -> FlagPolicy:
        """Build one configured flag policy."""
        ...


# -- sinks --------------------------------------------------------------------------------
@runtime_checkable
class Sink(Protocol):
    """A result consumer enabled in the config as ``sinks: [{sink: NAME, params: {...}}]``.

    When
        ``setup(run)`` once before the first frame; ``frame(frame, result, objects)``
        exactly once for **every** frame whatever its status (``ok``, ``skipped``,
        ``failed``; check ``result.status``), in live runs, ``segment``, ``batch`` and
        ``resegment``; ``finish(summary)`` once at the end, also when the run stopped
        early. ``run`` holds ``run_dir`` (str), ``config`` (the run's config as a plain
        mapping), ``chain`` (backend names in run order) and ``entry_point`` (``run``,
        ``segment``, ``batch`` or ``resegment``). ``objects`` are the measured columns,
        one value per object in ascending label order (empty for skipped and failed
        frames). ``summary`` is what ``run.json`` records at the end.
    Thread
        The worker thread that processed the frame (never the acquisition thread); one
        thread at a time per sink.
    Must not
        Block for long (a slow sink delays every later frame), modify its arguments,
        or assume it is the only sink. Raising is allowed: the error is recorded with
        the frame and the run goes on.
    """

    def setup(self, run: Mapping[str, Any]) -> None:
        """Prepare for a run (open files under ``run["run_dir"]``, …)."""
        ...

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Consume one frame's result (any status)."""
        ...

    def finish(self, summary: Mapping[str, Any]) -> None:
        """The run is over: flush and close."""
        ...


class SinkFactory(Protocol):
    """``factory(params, context) -> Sink``; an optional ``Params`` validates params."""

    def __call__(self, params: Any, context: StepContext) -> Sink:
        """Build one configured sink."""
        ...


# -- trainers -----------------------------------------------------------------------------
class Trainer(Protocol):
    """A fine-tuning function, registered by backend name (``register("unet", finetune)``).

    When
        By ``liveseg retrain`` (and the GUI's retrain), once per fine-tune, for the
        model whose card names this backend.
    Thread
        The caller's thread (a CLI process or a GUI worker); never during acquisition.
    Must
        Train a *copy*: write new weights under ``out_dir`` and return their path in a
        :class:`FinetuneResult`. ``val_items`` (maybe empty) are for early stopping and
        reporting, never for gradient steps.
    Must not
        Modify ``base_weights`` or anything else outside ``out_dir``, or load weights by
        running pickled code.
    """

    def __call__(
        self,
        base_weights: Path,
        items: Sequence[TrainItem],
        out_dir: Path,
        *,
        epochs: int,
        learning_rate: float | None = None,
        seed: int = 0,
        val_items: Sequence[TrainItem] = (),
        progress: bool = True,
    ) -> FinetuneResult:
        """Fine-tune a copy of ``base_weights`` on ``items``."""
        ...


# -- models -------------------------------------------------------------------------------
@runtime_checkable
class ModelSource(Protocol):
    """A loader for a model a plugin ships: ``register(name, loader, description)``.

    A plugin registers either a model directory (``weights + model.json``; a path) or a
    loader, a callable that returns such a directory (e.g. unpacking or fetching weights
    on first use).

    When
        Only when a model spec names this model and it is not yet in the registry: the
        registry then copies the directory in as ``name@1`` with alias ``prod``.
        Listing models (``liveseg plugins``) never calls it.
    Thread
        The caller's thread (building a chain step, ``liveseg models …``).
    Must
        Return the same directory every time (cache it) and hold a ``model.json`` that
        names the backend that loads it.
    Must not
        Return a directory that it later modifies: the registry copies the files once.
    """

    def __call__(self) -> str | os.PathLike[str]:
        """The directory holding the model's weights and ``model.json``."""
        ...
