"""Built-in step ``kmeans``: unsupervised pixel classes, the seed's "traditional ML" row.

Each pixel is described by its intensity, a smoothed intensity and a local texture
measure (local standard deviation); K-means (scikit-learn, fixed seed) groups the
pixels into ``k`` classes. Clusters are renumbered by their mean intensity (class 0 the
darkest) so the same material gets the same class in every frame — K-means' own
cluster numbering is arbitrary; each frame's fit also starts from the previous frame's
centres. ``invert`` puts the brightest class first instead
(dark objects on a bright background, e.g. pores in a matrix).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi

from liveseg.hookspecs import Register, hookimpl
from liveseg.types import CLASS_DTYPE, LABEL_DTYPE, Frame, FrameResult, input_image

if TYPE_CHECKING:
    from liveseg.pipeline import StepContext

__all__ = ["KMeans", "KMeansParams", "kmeans_classes", "pixel_features"]


class KMeansParams(BaseModel):
    """Parameters of the ``kmeans`` step."""

    model_config = ConfigDict(extra="forbid")
    k: int = Field(default=2, ge=2, le=16, description="number of classes")
    sigma: float = Field(
        default=1.5, ge=0, description="smoothing of the smoothed-intensity feature"
    )
    texture_sigma: float = Field(default=3.0, gt=0, description="window of the texture feature")
    texture_weight: float = Field(default=0.5, ge=0, description="weight of texture vs intensity")
    sample: int = Field(default=20_000, ge=100, description="pixels sampled to fit the centres")
    invert: bool = Field(default=False, description="order classes bright to dark")
    class_names: list[str] | None = Field(default=None, description="names of classes 0..k-1")
    instances: bool = Field(default=True, description="label components of classes 1..k-1")
    min_area: int = Field(default=0, ge=0)
    seed: int = 0


def pixel_features(image: np.ndarray, p: KMeansParams) -> np.ndarray:
    """``(H*W, 3)`` float32 features: intensity, smoothed intensity, local std (texture)."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, (0.5, 99.5))
    img = (img - np.float32(lo)) / np.float32(max(float(hi - lo), 1e-6))
    smooth = ndi.gaussian_filter(img, p.sigma) if p.sigma > 0 else img
    mean = ndi.gaussian_filter(img, p.texture_sigma)
    var = ndi.gaussian_filter(img * img, p.texture_sigma) - mean * mean
    texture = np.sqrt(np.clip(var, 0, None)) * np.float32(p.texture_weight)
    return np.stack([img.ravel(), smooth.ravel(), texture.ravel()], axis=1)


def kmeans_classes(
    image: np.ndarray, p: KMeansParams, init: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The class map of ``image`` (``uint8``, ordered by mean intensity) and the centres.

    ``init`` (centres of the previous frame, in class order) starts the fit there with a
    single run instead of three random ones: faster, and a live series keeps its classes.
    """
    from sklearn.cluster import KMeans as SkKMeans

    feats = pixel_features(image, p)
    rng = np.random.default_rng(p.seed)
    n = feats.shape[0]
    fit = feats[rng.choice(n, min(p.sample, n), replace=False)]
    if init is not None and init.shape == (p.k, feats.shape[1]):
        km = SkKMeans(n_clusters=p.k, init=init, n_init=1, random_state=p.seed).fit(fit)
    else:
        km = SkKMeans(n_clusters=p.k, n_init=3, random_state=p.seed).fit(fit)
    order = np.argsort(km.cluster_centers_[:, 1])  # by smoothed intensity
    if p.invert:
        order = order[::-1]
    lut = np.empty(p.k, dtype=CLASS_DTYPE)
    lut[order] = np.arange(p.k, dtype=CLASS_DTYPE)
    # Nearest centre by hand: sklearn's predict re-validates the 262k x 3 array.
    d = ((feats[:, None, :] - km.cluster_centers_[None].astype(np.float32)) ** 2).sum(-1)
    classes = lut[np.argmin(d, axis=1)].reshape(np.shape(image))
    return classes, np.asarray(km.cluster_centers_[order], dtype=np.float32)


class KMeans:
    """Chain step: K-means pixel classes (plus components of the non-background classes)."""

    Params = KMeansParams

    def __init__(self, params: KMeansParams, context: StepContext) -> None:
        names = params.class_names or [f"class{i}" for i in range(params.k)]
        if len(names) != params.k:
            from liveseg.errors import ConfigError

            raise ConfigError(f"kmeans: {len(names)} class_names for k={params.k}")
        self.params = params
        self.names = tuple(names)
        self._centres: np.ndarray | None = None

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Cluster the upstream (or raw) image's pixels, starting from the last centres."""
        img = input_image(frame, upstream)
        classes, self._centres = kmeans_classes(img, self.params, self._centres)
        if self.params.instances:
            from liveseg.builtins.classes import components

            labels = components(classes > 0, self.params.min_area)
        else:
            labels = np.zeros(classes.shape, dtype=LABEL_DTYPE)
        return FrameResult(labels=labels, classes=classes, class_names=self.names, image=img)

    def close(self) -> None:
        """Nothing to release."""


@hookimpl
def register_backends(register: Register) -> None:
    """Register ``kmeans``."""
    register("kmeans", KMeans)
