"""Built-in step ``size_filter``: drop objects by area and, optionally, at the edge."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from liveseg.hookspecs import Register, hookimpl
from liveseg.types import LABEL_DTYPE, Frame, FrameResult, empty_labels

if TYPE_CHECKING:
    from liveseg.pipeline import StepContext


class SizeFilterParams(BaseModel):
    """Keep objects with ``min_area <= area <= max_area`` pixels."""

    model_config = ConfigDict(extra="forbid")
    min_area: int = Field(default=0, ge=0)
    max_area: int | None = Field(default=None, ge=1)
    drop_edge: bool = False
    relabel: bool = True


def filter_labels(labels: np.ndarray, p: SizeFilterParams) -> np.ndarray:
    """Remove objects outside the area range (and touching the edge, if asked)."""
    if labels.max() == 0:
        return labels.astype(LABEL_DTYPE, copy=False)
    areas = np.bincount(labels.ravel())
    keep = areas >= p.min_area
    if p.max_area is not None:
        keep &= areas <= p.max_area
    if p.drop_edge:
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        keep[edge] = False
    keep[0] = False
    if p.relabel:
        lut = np.zeros(areas.size, dtype=LABEL_DTYPE)
        lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=LABEL_DTYPE)
    else:
        lut = np.where(keep, np.arange(areas.size), 0).astype(LABEL_DTYPE)
    return lut[labels]


class SizeFilter:
    """Chain step: filters the upstream labels; keeps scores of surviving objects."""

    Params = SizeFilterParams

    def __init__(self, params: SizeFilterParams, context: StepContext) -> None:
        self.params = params

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Filter the upstream step's labels."""
        if upstream is None:
            return FrameResult(labels=empty_labels(frame.shape))
        old = upstream.labels
        new = filter_labels(old, self.params)
        scores = {}
        if upstream.scores:
            for old_id, score in upstream.scores.items():
                hit = new[old == old_id]
                if hit.size and hit[0] != 0:
                    scores[int(hit[0])] = score
        return upstream.replace(labels=new, scores=scores)

    def close(self) -> None:
        """Nothing to release."""


@hookimpl
def register_backends(register: Register) -> None:
    """Register ``size_filter``."""
    register("size_filter", SizeFilter)
