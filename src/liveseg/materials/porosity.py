"""Porosity measurements (after ASTM E1382-style automated image analysis, PoreSpy's basics).

From a pore mask (or a class map and the pore class) and the pixel size: the area
fraction, the pore count, the pore size distribution (equivalent-circle diameters) and
each pore's circularity ``4π A / P²`` (1 for a disc, smaller for irregular pores).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Porosity", "porosity"]


@dataclass(frozen=True, slots=True)
class Porosity:
    """The porosity report of one image (lengths µm, areas µm²)."""

    area_fraction: float
    n_pores: int
    mean_diameter_um: float
    diameter_quantiles_um: tuple[float, float, float]
    mean_circularity: float

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly dict."""
        return asdict(self)


def porosity(pores: np.ndarray, pixel_size_um: float = 1.0) -> Porosity:
    """Measure a pore mask (bool) or pore instance labels (pores touching the edge count).

    Circularity uses skimage's perimeter (a 4-connected contour estimate) and is
    reported for pores of at least 20 px, where a pixel contour says something.
    """
    from skimage.measure import regionprops

    arr = np.asarray(pores)
    labels = ndi.label(arr > 0)[0] if arr.dtype == bool else arr.astype(np.int64)
    frac = float(np.count_nonzero(labels)) / max(labels.size, 1)
    props = regionprops(labels)
    if not props:
        return Porosity(frac, 0, math.nan, (math.nan, math.nan, math.nan), math.nan)
    areas = np.array([p.area for p in props], float)
    diam = 2 * np.sqrt(areas / math.pi) * pixel_size_um
    circ = [4 * math.pi * p.area / p.perimeter**2 for p in props if p.area >= 20 and p.perimeter]
    q = np.quantile(diam, (0.25, 0.5, 0.75))
    return Porosity(
        area_fraction=frac,
        n_pores=len(props),
        mean_diameter_um=float(diam.mean()),
        diameter_quantiles_um=(float(q[0]), float(q[1]), float(q[2])),
        mean_circularity=float(np.mean(circ)) if circ else math.nan,
    )
