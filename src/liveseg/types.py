"""Value types that travel along the hot path: frames in, results out.

They are frozen, slotted dataclasses: cheap to create on the worker thread, safe to hand
to other threads (the GUI, sinks) without copies, and impossible to mutate by accident
in a plugin.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

    import useq

__all__ = [
    "CLASS_DTYPE",
    "LABEL_DTYPE",
    "FinetuneResult",
    "Flag",
    "Frame",
    "FrameResult",
    "FrameStatus",
    "Proposal",
    "TrainItem",
    "empty_labels",
    "input_image",
    "label_ids",
    "shared_empty_labels",
]

LABEL_DTYPE = np.dtype(np.uint32)
"""Instance labels: 0 is background, 1..N are objects."""
CLASS_DTYPE = np.dtype(np.uint8)
"""Semantic class maps: 0 is background, 1..K index ``FrameResult.class_names``."""


class FrameStatus(enum.StrEnum):
    """What happened to a frame on its way through the chain."""

    OK = "ok"
    SKIPPED = "skipped"  # not segmented (``latest`` backlog policy); can be resegmented
    FAILED = "failed"  # a step raised; the error is in events.jsonl


@dataclass(frozen=True, slots=True)
class Frame:
    """One acquired (or offline) 2D image and where it came from.

    ``index`` is the frame's position in the run (0, 1, 2, … in acquisition order) and
    is the key that links images, labels, tables and events.
    """

    index: int
    image: np.ndarray
    event: useq.MDAEvent | None = None
    time_s: float = 0.0
    position: int = 0
    stage_xy: tuple[float, float] | None = None
    stage_z: float | None = None
    pixel_size_um: float = 1.0
    pixel_affine: tuple[float, float, float, float, float, float] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width in pixels."""
        return (int(self.image.shape[-2]), int(self.image.shape[-1]))


@dataclass(frozen=True, slots=True)
class FrameResult:
    """The output of one chain step (and, after the last step, of the chain).

    ``labels`` are instance labels (``uint32``, 0 = background). ``classes`` is an
    optional semantic class map (``uint8``) whose values index ``class_names`` (index 0
    is background). ``scores`` maps label id → confidence for backends that have one.
    ``image`` is the processed image a step hands downstream (e.g. the normalised image);
    ``None`` means "use the frame's raw image".
    """

    labels: np.ndarray
    classes: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    scores: Mapping[int, float] = field(default_factory=dict)
    image: np.ndarray | None = None
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    status: FrameStatus = FrameStatus.OK
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Number of objects (distinct non-zero labels)."""
        return int(label_ids(self.labels).size)

    def replace(self, **changes: Any) -> FrameResult:
        """Return a copy with some fields changed."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(changes)
        return FrameResult(**values)


def label_ids(labels: np.ndarray) -> np.ndarray:
    """The object ids present in ``labels`` (ascending, 0 excluded).

    Uses a histogram (linear time) when the ids are compact, as chain outputs are, and
    falls back to sorting for sparse ids; this runs on every frame.
    """
    flat = np.asarray(labels).ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(flat.max())
    if top == 0:  # an empty plane (a blank frame): no histogram needed
        return np.zeros(0, dtype=np.int64)
    if top <= 4 * flat.size + 1024:
        ids = np.flatnonzero(np.bincount(flat, minlength=1))
    else:
        ids = np.unique(flat).astype(np.int64)
    return ids[ids != 0]


def empty_labels(shape: tuple[int, int]) -> np.ndarray:
    """All-background label image of ``shape``."""
    return np.zeros(shape, dtype=LABEL_DTYPE)


@functools.lru_cache(maxsize=8)
def shared_empty_labels(shape: tuple[int, int]) -> np.ndarray:
    """One read-only all-background label image per ``shape``, shared by every caller.

    For results that only report "no labels" (skipped frames at camera rate): allocating
    and freeing a fresh plane per frame costs more than the rest of such a frame's path.
    """
    labels = empty_labels(shape)
    labels.flags.writeable = False
    return labels


def input_image(frame: Frame, upstream: FrameResult | None) -> np.ndarray:
    """The image a step should work on: the upstream step's output, else the raw frame."""
    if upstream is not None and upstream.image is not None:
        return upstream.image
    return frame.image


@dataclass(frozen=True, slots=True)
class Proposal:
    """A trigger's request to add an acquisition event, before selection.

    ``target_xy`` is the stage position (µm) the event is centred on, used for dedupe and
    stage limits; ``label`` is the object that caused it (0 when not object-bound).
    ``events`` is the whole sub-acquisition (e.g. a z-stack) when it is more than
    ``event``; it runs as one unit and is stored as one triggered series.
    """

    event: useq.MDAEvent
    source: str
    frame_index: int
    label: int = 0
    target_xy: tuple[float, float] | None = None
    reason: str = ""
    priority: int = 0
    events: tuple[useq.MDAEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Flag:
    """A frame marked for the retraining queue, by the operator or by a policy."""

    frame_index: int
    reason: str
    source: str = "operator"
    time_s: float = 0.0


@dataclass(frozen=True, slots=True)
class TrainItem:
    """One training example: an image, its instance labels, and where they are valid.

    ``valid`` (bool, same shape) marks the pixels the annotator vouched for; the loss
    ignores the rest, so an operator may correct only a region of interest.
    """

    image: np.ndarray
    labels: np.ndarray
    valid: np.ndarray | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class FinetuneResult:
    """What a backend's ``finetune`` produced: loadable weights plus the training record."""

    weights_path: str
    train_losses: tuple[float, ...] = ()
    val_losses: tuple[float, ...] = ()
    epochs: int = 0
    seconds: float = 0.0
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
