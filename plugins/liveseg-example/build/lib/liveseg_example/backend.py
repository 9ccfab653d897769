"""The ``spots`` backend: smooth, Otsu threshold, label, drop small objects.

A backend is built once per chain step as ``SpotsBackend(params, context)`` and then
asked ``segment(frame, upstream)`` for every frame, on a worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from liveseg.plugin_api import FrameResult, input_image

if TYPE_CHECKING:
    from liveseg.plugin_api import Frame, StepContext

__all__ = ["SpotsBackend", "SpotsParams"]


class SpotsParams(BaseModel):
    """Parameters of the ``spots`` step (validated before the step is built)."""

    model_config = ConfigDict(extra="forbid")  # a typo in the config is an error
    sigma: float = Field(default=1.0, ge=0, description="Gaussian smoothing (pixels)")
    min_area: int = Field(default=10, ge=0, description="smallest object kept (pixels)")


class SpotsBackend:
    """Bright objects on a dark background, with no model to load."""

    Params = SpotsParams

    def __init__(self, params: SpotsParams, context: StepContext) -> None:
        self.params = params
        self.log = context.logger  # a child of the "liveseg" logger, per step

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Labels (``uint32``, 0 = background) of the frame, or of upstream's image."""
        from scipy import ndimage as ndi
        from skimage.filters import threshold_otsu

        image = np.asarray(input_image(frame, upstream), dtype=np.float32)
        if self.params.sigma > 0:
            image = ndi.gaussian_filter(image, self.params.sigma)
        if float(image.max()) <= float(image.min()):  # a flat frame has no objects
            return FrameResult(labels=np.zeros(image.shape, np.uint32))
        labels, n = ndi.label(image > threshold_otsu(image))
        if n and self.params.min_area > 1:
            areas = np.bincount(labels.ravel(), minlength=n + 1)
            small = areas < self.params.min_area
            small[0] = True
            labels[small[labels]] = 0
            # renumber 1..N, as every backend must
            keep = np.flatnonzero(~small)
            lut = np.zeros(n + 1, np.uint32)
            lut[keep] = np.arange(1, keep.size + 1, dtype=np.uint32)
            labels = lut[labels]
        return FrameResult(labels=labels.astype(np.uint32))

    def close(self) -> None:
        """Nothing to release (a model-backed backend frees its weights here)."""
