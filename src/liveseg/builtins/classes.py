"""Built-in step ``classes_to_instances``: objects from a class map, and class-map tables.

A semantic backend says *what* each pixel is (grain / boundary, pore / matrix); counts,
sizes and triggers need *objects*. This step turns the upstream class map into instance
labels either by connected components of the object classes, or — for tessellations
such as metal grains whose interiors touch through thin boundaries — by a watershed of
the object region seeded from boundary-free cores, so every grain comes out as one
object and the boundary pixels are shared out between their neighbours.

It also holds the class-map helpers the rest of liveseg (measurements, overlays,
triggers) can use: :class:`ClassTable` (names + colours) and :func:`class_fractions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi

from liveseg.errors import ConfigError
from liveseg.hookspecs import Register, hookimpl
from liveseg.types import LABEL_DTYPE, Frame, FrameResult

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from liveseg.pipeline import StepContext

__all__ = [
    "ClassTable",
    "ClassesToInstances",
    "ClassesToInstancesParams",
    "class_fractions",
    "class_object_counts",
    "classes_to_instances",
    "components",
    "fractions_column",
    "split_touching",
]

# A colour-blind-safe qualitative palette (Okabe-Ito), class 0 drawn transparent.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)


@dataclass(frozen=True, slots=True)
class ClassTable:
    """Names and RGBA colours of a class map's values (value ``i`` ↔ ``names[i]``).

    This is what a label store writes as OME-NGFF ``image-label`` ``colors`` and
    ``properties`` (class names), and what an overlay legend shows.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int, int], ...]

    @classmethod
    def default(cls, names: Sequence[str], background_alpha: int = 0) -> ClassTable:
        """The standard colours for ``names``; class 0 transparent unless asked."""
        colors = []
        for i in range(len(names)):
            r, g, b = _PALETTE[i % len(_PALETTE)] if i else _PALETTE[0]
            colors.append((r, g, b, background_alpha if i == 0 else 255))
        return cls(tuple(names), tuple(colors))

    def ngff_image_label(self) -> dict[str, object]:
        """The ``image-label`` metadata block (OME-NGFF 0.4/0.5) naming every class."""
        return {
            "version": "0.5",
            "colors": [
                {"label-value": i, "rgba": list(rgba)} for i, rgba in enumerate(self.colors)
            ],
            "properties": [{"label-value": i, "class": n} for i, n in enumerate(self.names)],
        }


def class_fractions(classes: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Area fraction of every class (``{name: fraction}``; fractions sum to 1)."""
    counts = np.bincount(np.asarray(classes).ravel(), minlength=len(names))[: len(names)]
    total = max(int(np.asarray(classes).size), 1)
    return {n: float(counts[i]) / total for i, n in enumerate(names)}


def class_object_counts(classes: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    """Number of connected components (8-connected) of every class."""
    cls = np.asarray(classes)
    eight = np.ones((3, 3), bool)
    return {n: int(ndi.label(cls == i, structure=eight)[1]) for i, n in enumerate(names)}


def components(mask: np.ndarray, min_area: int = 0) -> np.ndarray:
    """Connected components (4-connected) of ``mask`` as compact ``uint32`` labels."""
    labels, n = ndi.label(np.asarray(mask, bool))
    if n and min_area > 0:
        return _compact(labels, min_area)
    return labels.astype(LABEL_DTYPE)


def split_touching(mask: np.ndarray, min_distance: int = 4, min_area: int = 0) -> np.ndarray:
    """Components of ``mask`` with touching round objects split at their necks.

    Seeds are the regional maxima of the (slightly smoothed) distance to the background,
    at least ``min_distance`` px apart; a watershed of the negated distance within the
    mask assigns every pixel to a seed. Components without a seed keep one label.
    """
    from skimage.segmentation import watershed

    m = np.asarray(mask, bool)
    dist = ndi.gaussian_filter(ndi.distance_transform_edt(m), 1.0)
    window = ndi.maximum_filter(dist, size=2 * min_distance + 1)
    seeds, _ = ndi.label((dist >= window) & m & (dist > 1.0))
    labels = np.asarray(watershed(-dist, seeds, mask=m), dtype=np.int64)
    leftover, n_left = ndi.label(m & (labels == 0))
    if n_left:
        labels = np.where(leftover > 0, leftover + labels.max(), labels)
    return _compact(labels, min_area)


def _compact(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Renumber ids to 1..N, dropping objects under ``min_area`` px."""
    areas = np.bincount(labels.ravel())
    keep = areas >= max(min_area, 1)
    keep[0] = False
    lut = np.zeros(areas.size, dtype=LABEL_DTYPE)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=LABEL_DTYPE)
    return lut[labels]


def classes_to_instances(
    classes: np.ndarray,
    objects: Sequence[int],
    boundary: int | None = None,
    *,
    min_area: int = 0,
    seed_erosion: int = 1,
    fill_boundary: bool = True,
    split: bool = False,
    min_distance: int = 4,
) -> np.ndarray:
    """Instance labels from a class map.

    Parameters
    ----------
    classes : numpy.ndarray
        Class map (values are class indices).
    objects : sequence of int
        The class values that make up objects.
    boundary : int, optional
        The class value of boundaries between touching objects. With it, the cores of
        the object classes (eroded ``seed_erosion`` px) seed a watershed over the object
        and boundary pixels, so objects that touch through a boundary stay apart and
        the boundary is split between neighbours (``fill_boundary``). Without it:
        connected components.
    min_area : int
        Components/seeds smaller than this many pixels are dropped (noise).
    seed_erosion : int
        Erosion of the object region before seeding (breaks one-pixel bridges where the
        classifier missed a piece of boundary).
    fill_boundary : bool
        Give boundary pixels to the neighbouring objects (a tessellation without gaps,
        as grain-size measurement wants); otherwise they stay background.
    split : bool
        Without a boundary class: split touching round objects (nuclei, pores) at their
        necks by a distance-transform watershed (:func:`split_touching`).
    min_distance : int
        Minimum seed separation for ``split``.

    Returns
    -------
    numpy.ndarray
        ``uint32`` labels, 1..N.
    """
    cls = np.asarray(classes)
    obj = np.isin(cls, np.asarray(list(objects)))
    if boundary is None:
        return split_touching(obj, min_distance, min_area) if split else components(obj, min_area)
    from skimage.segmentation import watershed

    core = ndi.binary_erosion(obj, iterations=seed_erosion) if seed_erosion > 0 else obj
    seeds = components(core, min_area)
    if int(seeds.max()) == 0:
        return np.zeros(cls.shape, dtype=LABEL_DTYPE)
    region = obj | (cls == boundary) if fill_boundary else obj
    # Flood from the seeds by distance from the boundary-free area: the boundary ridge
    # is where two floods meet.
    dist = ndi.distance_transform_edt(~core)
    labels = watershed(dist, seeds, mask=region)
    return np.asarray(labels, dtype=LABEL_DTYPE)


class ClassesToInstancesParams(BaseModel):
    """Parameters of the ``classes_to_instances`` step (classes given by name)."""

    model_config = ConfigDict(extra="forbid")
    objects: list[str] | None = Field(
        default=None,
        description="classes that are objects (default: all but class 0 and boundary)",
    )
    boundary: str | None = Field(default=None, description="boundary class (watershed split)")
    min_area: int = Field(default=0, ge=0)
    seed_erosion: int = Field(default=1, ge=0)
    fill_boundary: bool = True
    split: bool = Field(default=False, description="split touching objects (no boundary class)")
    min_distance: int = Field(default=4, ge=1, description="seed separation for split")


class ClassesToInstances:
    """Chain step: instance labels from the upstream class map."""

    Params = ClassesToInstancesParams

    def __init__(self, params: ClassesToInstancesParams, context: StepContext) -> None:
        self.params = params

    def _values(self, names: Sequence[str]) -> tuple[list[int], int | None]:
        p = self.params
        wanted = [*(p.objects or []), *([p.boundary] if p.boundary else [])]
        missing = [n for n in wanted if n not in names]
        if missing:
            raise ConfigError(f"classes_to_instances: classes {missing} not in {list(names)}")
        bnd = names.index(p.boundary) if p.boundary else None
        if p.objects is not None:
            objs = [names.index(n) for n in p.objects]
        else:
            objs = [i for i in range(1, len(names)) if i != bnd]
        return objs, bnd

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Replace the upstream labels by instances of its class map."""
        if upstream is None or upstream.classes is None:
            raise ConfigError("classes_to_instances needs an upstream step that returns classes")
        objs, bnd = self._values(upstream.class_names)
        labels = classes_to_instances(
            upstream.classes,
            objs,
            bnd,
            min_area=self.params.min_area,
            seed_erosion=self.params.seed_erosion,
            fill_boundary=self.params.fill_boundary,
            split=self.params.split,
            min_distance=self.params.min_distance,
        )
        return upstream.replace(labels=labels, scores={})

    def close(self) -> None:
        """Nothing to release."""


def fractions_column(result: FrameResult) -> Mapping[str, float]:
    """Per-class area fractions of a result's class map (empty without one)."""
    if result.classes is None:
        return {}
    return class_fractions(result.classes, result.class_names)


@hookimpl
def register_backends(register: Register) -> None:
    """Register ``classes_to_instances``."""
    register("classes_to_instances", ClassesToInstances)
