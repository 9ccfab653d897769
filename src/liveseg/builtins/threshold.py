"""Built-in step ``threshold``: the honest rule-based baseline.

Gaussian smoothing, a global (Otsu) or local threshold, hole filling, then a
distance-transform seeded watershed to split touching objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi

from liveseg.builtins.normalize import normalize_image
from liveseg.hookspecs import Register, hookimpl
from liveseg.types import LABEL_DTYPE, Frame, FrameResult, input_image

if TYPE_CHECKING:
    from liveseg.pipeline import StepContext


class ThresholdParams(BaseModel):
    """Parameters of the classical chain (pixels unless stated)."""

    model_config = ConfigDict(extra="forbid")
    sigma: float = Field(default=1.5, ge=0, description="Gaussian smoothing")
    method: Literal["otsu", "local", "fixed"] = "otsu"
    value: float | None = Field(default=None, description="threshold for method=fixed")
    block_size: int = Field(default=51, ge=3, description="window for method=local (odd)")
    offset: float = 0.0
    min_distance: int = Field(default=5, ge=1, description="min seed separation")
    split: bool = Field(default=True, description="split touching objects by watershed")
    min_contrast: float = Field(
        default=0.05, ge=0, description="frames whose normalised range is below this are empty"
    )
    min_snr: float = Field(
        default=4.0,
        ge=0,
        description="foreground must exceed background by this many noise sigmas (else empty)",
    )


def threshold_segment(image: np.ndarray, p: ThresholdParams) -> np.ndarray:
    """Label objects of ``image`` (any dtype) with the classical chain."""
    from skimage.filters import threshold_local, threshold_otsu
    from skimage.segmentation import watershed

    img = np.asarray(image, dtype=np.float32)
    if img.size == 0 or float(img.max() - img.min()) <= 0:
        return np.zeros(img.shape, dtype=LABEL_DTYPE)
    norm = normalize_image(img, 0.5, 99.9)
    smooth = ndi.gaussian_filter(norm, p.sigma) if p.sigma > 0 else norm
    if float(np.percentile(smooth, 99.9) - np.percentile(smooth, 0.1)) < p.min_contrast:
        return np.zeros(img.shape, dtype=LABEL_DTYPE)
    if p.method == "otsu":
        mask = smooth > threshold_otsu(smooth) + p.offset
    elif p.method == "local":
        block = p.block_size | 1
        mask = smooth > threshold_local(smooth, block, offset=-p.offset)
        mask &= smooth > threshold_otsu(smooth) * 0.5
    else:
        if p.value is None:
            raise ValueError("method 'fixed' needs 'value'")
        mask = smooth > p.value
    mask = ndi.binary_fill_holes(ndi.binary_opening(mask, iterations=1))
    if not mask.any() or not _separates(norm, mask, p.min_snr):
        return np.zeros(img.shape, dtype=LABEL_DTYPE)
    if not p.split:
        labels, _ = ndi.label(mask)
        return labels.astype(LABEL_DTYPE)
    dist = ndi.distance_transform_edt(mask)
    dist = ndi.gaussian_filter(dist, 1.0)
    size = 2 * p.min_distance + 1
    peaks = (dist == ndi.maximum_filter(dist, size=size)) & mask & (dist > 1.0)
    markers, _ = ndi.label(peaks)
    labels = watershed(-dist, markers, mask=mask)
    # Objects with no seed (very small) keep their connected component.
    rest, n_rest = ndi.label(mask & (labels == 0))
    if n_rest:
        labels = np.where(rest > 0, rest + labels.max(), labels)
    return _relabel(labels)


def _separates(image: np.ndarray, mask: np.ndarray, min_snr: float) -> bool:
    """Whether foreground stands out of the background noise (pure noise does not)."""
    bg = image[~mask]
    if bg.size < 16 or min_snr <= 0:
        return True
    med = float(np.median(bg))
    sigma = 1.4826 * float(np.median(np.abs(bg - med)))
    if sigma <= 0:
        return True
    return (float(np.median(image[mask])) - med) / sigma >= min_snr


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids != 0]
    lut = np.zeros(int(labels.max()) + 1, dtype=LABEL_DTYPE)
    lut[ids] = np.arange(1, ids.size + 1, dtype=LABEL_DTYPE)
    return lut[labels]


class Threshold:
    """Chain step: classical threshold + watershed segmentation."""

    Params = ThresholdParams

    def __init__(self, params: ThresholdParams, context: StepContext) -> None:
        self.params = params

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Segment the upstream (or raw) image."""
        img = input_image(frame, upstream)
        return FrameResult(labels=threshold_segment(img, self.params), image=img)

    def close(self) -> None:
        """Nothing to release."""


@hookimpl
def register_backends(register: Register) -> None:
    """Register ``threshold``."""
    register("threshold", Threshold)
