"""Generated materials micrographs with exact class and instance truth.

Two kinds of sample, each drawn from a seed so any image can be regenerated:

- :func:`grain_section` — a polished-and-etched metallographic section: equiaxed grains
  (a relaxed random tessellation, warped so edges are not straight), each grain etched
  to its own grey level, dark grain boundaries of varied width, annealing twins (parallel
  bands of another grey level inside some grains; not boundaries, as ASTM E112 does not
  count them), polishing scratches, dark oxide inclusions, uneven illumination and
  camera noise. Classes ``grain`` (0), ``boundary`` (1), ``inclusion`` (2); instances are
  the grains as a gap-free tessellation (boundary pixels belong to the nearer grain).
- :func:`porous_section` — a porous material: a textured bright matrix with dark pores of
  log-normally distributed size and irregular shape. Classes ``matrix`` (0) and
  ``pore`` (1); instances are the pores.

Settings come in named styles (:data:`GRAIN_STYLES`, :data:`PORE_STYLES`) so tests can
train on one and hold out another.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from liveseg.types import CLASS_DTYPE, LABEL_DTYPE

__all__ = [
    "GRAIN_CLASSES",
    "GRAIN_STYLES",
    "PORE_CLASSES",
    "PORE_STYLES",
    "GrainStyle",
    "PoreStyle",
    "Section",
    "grain_section",
    "porous_section",
]

GRAIN_CLASSES: tuple[str, ...] = ("grain", "boundary", "inclusion")
PORE_CLASSES: tuple[str, ...] = ("matrix", "pore")

Range = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Section:
    """One generated image with its truth."""

    image: np.ndarray
    classes: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    pixel_size_um: float = 1.0


@dataclass(frozen=True, slots=True)
class GrainStyle:
    """Ranges each grain image draws from (pixels unless stated)."""

    grain_diameter: Range = (24.0, 48.0)
    boundary_width: Range = (1.0, 2.5)
    warp: Range = (0.5, 2.0)
    contrast: Range = (0.25, 0.5)
    twin_fraction: Range = (0.0, 0.3)
    scratches: Range = (0.0, 6.0)
    inclusions_per_mpx: Range = (0.0, 150.0)
    illumination: Range = (0.0, 0.3)
    noise: Range = (0.01, 0.04)
    blur: Range = (0.5, 1.0)

    def replace(self, **changes: Any) -> GrainStyle:
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class PoreStyle:
    """Ranges each porous image draws from (pixels unless stated)."""

    porosity: Range = (0.04, 0.2)
    pore_radius: Range = (3.0, 12.0)
    radius_sigma: float = 0.45
    irregularity: Range = (0.1, 0.35)
    matrix_texture: Range = (0.02, 0.08)
    pore_level: Range = (0.05, 0.3)
    illumination: Range = (0.0, 0.3)
    noise: Range = (0.01, 0.05)
    blur: Range = (0.6, 1.2)

    def replace(self, **changes: Any) -> PoreStyle:
        """A copy with some fields changed."""
        return replace(self, **changes)


GRAIN_STYLES: dict[str, GrainStyle] = {
    "train": GrainStyle(),
    # Held out: finer and coarser grains, wider boundaries, more artefacts.
    "test": GrainStyle(
        grain_diameter=(20.0, 56.0),
        boundary_width=(1.0, 3.0),
        twin_fraction=(0.1, 0.4),
        scratches=(2.0, 8.0),
        inclusions_per_mpx=(50.0, 250.0),
        illumination=(0.1, 0.4),
        noise=(0.02, 0.05),
    ),
}
PORE_STYLES: dict[str, PoreStyle] = {
    "train": PoreStyle(),
    "test": PoreStyle(porosity=(0.02, 0.25), pore_radius=(2.5, 15.0), noise=(0.02, 0.06)),
}


def _u(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise field."""
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / max(float(f.std()), 1e-9)


def _illumination(rng: np.random.Generator, shape: tuple[int, int], depth: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    cy, cx = rng.uniform(-0.5, 1.5, 2)
    fall = (yy - cy) ** 2 + (xx - cx) ** 2
    return 1.0 - depth * fall / max(float(fall.max()), 1e-9)


def _seeds(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> np.ndarray:
    """Hard-core random points (min distance 0.85 × spacing): equiaxed grains."""
    h, w = shape
    pad = spacing
    n = int((h + 2 * pad) * (w + 2 * pad) / (spacing**2 * 0.866))
    min_d2 = (0.85 * spacing) ** 2
    pts: list[tuple[float, float]] = []
    cand = rng.uniform((-pad, -pad), (h + pad, w + pad), size=(n * 30, 2))
    cell = 0.85 * spacing
    grid: dict[tuple[int, int], list[int]] = {}
    for y, x in cand:
        gy, gx = int(y // cell), int(x // cell)
        ok = True
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for j in grid.get((gy + dy, gx + dx), ()):
                    py, px = pts[j]
                    if (py - y) ** 2 + (px - x) ** 2 < min_d2:
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if ok:
            grid.setdefault((gy, gx), []).append(len(pts))
            pts.append((y, x))
            if len(pts) >= n:
                break
    return np.asarray(pts)


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids != 0]
    lut = np.zeros(int(labels.max()) + 1, dtype=LABEL_DTYPE)
    lut[ids] = np.arange(1, ids.size + 1, dtype=LABEL_DTYPE)
    return lut[labels]


def grain_section(
    seed: int,
    shape: tuple[int, int] = (512, 512),
    style: str | GrainStyle = "train",
    pixel_size_um: float = 1.0,
    **overrides: Any,
) -> Section:
    """Generate one etched grain section with class and grain truth.

    Parameters
    ----------
    seed : int
        Same seed, shape and style → same image.
    shape : tuple of int
        Height and width in pixels.
    style : str or GrainStyle
        A preset of :data:`GRAIN_STYLES` or a style object.
    pixel_size_um : float
        Recorded with the section (measurements report µm).
    **overrides
        :class:`GrainStyle` fields to override, e.g. ``grain_diameter=(30, 30)``.
    """
    from scipy.spatial import cKDTree

    st = GRAIN_STYLES[style] if isinstance(style, str) else style
    if overrides:
        st = st.replace(**overrides)
    h, w = int(shape[0]), int(shape[1])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), h, w, 7]))
    diameter = _u(rng, st.grain_diameter)
    pts = _seeds(rng, (h, w), spacing=diameter)
    warp = _u(rng, st.warp)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    wy = yy + warp * _smooth(rng, (h, w), diameter / 2)
    wx = xx + warp * _smooth(rng, (h, w), diameter / 2)
    _, nearest = cKDTree(pts).query(np.stack([wy.ravel(), wx.ravel()], axis=1))
    grains = _relabel(np.asarray(nearest, dtype=np.int64).reshape(h, w) + 1)
    # Boundaries: pixels within half the width of a neighbour with another id.
    edge = np.zeros((h, w), bool)
    edge[:-1] |= grains[:-1] != grains[1:]
    edge[1:] |= grains[:-1] != grains[1:]
    edge[:, :-1] |= grains[:, :-1] != grains[:, 1:]
    edge[:, 1:] |= grains[:, :-1] != grains[:, 1:]
    width = _u(rng, st.boundary_width)
    dist = ndi.distance_transform_edt(~edge)
    boundary = dist < width / 2
    n = int(grains.max())
    level = rng.uniform(0.5, 0.5 + 2 * _u(rng, st.contrast), n + 1).clip(0.3, 0.95)
    img = level[grains]
    # Twins: a parallel band of another etch level inside some grains.
    twin_p = _u(rng, st.twin_fraction)
    for g in np.flatnonzero(rng.random(n + 1) < twin_p):
        if g == 0:
            continue
        ang = rng.uniform(0, np.pi)
        proj = yy * np.sin(ang) + xx * np.cos(ang)
        inside = grains == g
        if not inside.any():
            continue
        c = float(np.median(proj[inside]))
        band = inside & (np.abs(proj - c) < rng.uniform(2, diameter / 5))
        img = np.where(band, level[g] + rng.choice((-1, 1)) * rng.uniform(0.1, 0.2), img)
    img = np.where(boundary, rng.uniform(0.05, 0.15), img)
    # Scratches: long faint straight lines, brighter or darker than the surface.
    for _ in range(int(rng.poisson(_u(rng, st.scratches)))):
        ang = rng.uniform(0, np.pi)
        off = rng.uniform(-0.5, 0.5) * max(h, w)
        d = np.abs((yy - h / 2) * np.cos(ang) - (xx - w / 2) * np.sin(ang) - off)
        img = img + rng.choice((-1, 1)) * rng.uniform(0.04, 0.1) * np.exp(-(d**2) / 0.8)
    # Inclusions: small dark round particles.
    classes = np.where(boundary, 1, 0).astype(CLASS_DTYPE)
    n_inc = int(rng.poisson(_u(rng, st.inclusions_per_mpx) * h * w / 1e6))
    for _ in range(n_inc):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.5, 3.5)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img = np.where(disc, 0.02, img)
        classes[disc] = 2
    img = ndi.gaussian_filter(img, _u(rng, st.blur)) * _illumination(
        rng, (h, w), _u(rng, st.illumination)
    )
    img = img + rng.normal(0, _u(rng, st.noise), (h, w))
    image = np.clip(img * 4095, 0, 4095).astype(np.uint16)
    return Section(image, classes, grains, GRAIN_CLASSES, pixel_size_um)


def porous_section(
    seed: int,
    shape: tuple[int, int] = (512, 512),
    style: str | PoreStyle = "train",
    pixel_size_um: float = 1.0,
    **overrides: Any,
) -> Section:
    """Generate one porous-material image with pore class and instance truth.

    Parameters are as for :func:`grain_section` (styles from :data:`PORE_STYLES`).
    Pores may touch; touching pores are one pore (one connected void), as a
    porosity measurement sees them.
    """
    st = PORE_STYLES[style] if isinstance(style, str) else style
    if overrides:
        st = st.replace(**overrides)
    h, w = int(shape[0]), int(shape[1])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), h, w, 11]))
    target = _u(rng, st.porosity)
    r_med = _u(rng, st.pore_radius)
    irr = _u(rng, st.irregularity)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    pore = np.zeros((h, w), bool)
    wobble = _smooth(rng, (h, w), 2.5)
    tries = 0
    while pore.mean() < target and tries < 5000:
        tries += 1
        r = float(np.clip(r_med * rng.lognormal(0, st.radius_sigma), 1.5, 6 * r_med))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        e = rng.uniform(1.0, 1.8)
        ang = rng.uniform(0, np.pi)
        y0, y1 = int(max(cy - 2 * e * r - 3, 0)), int(min(cy + 2 * e * r + 3, h))
        x0, x1 = int(max(cx - 2 * e * r - 3, 0)), int(min(cx + 2 * e * r + 3, w))
        if y1 <= y0 or x1 <= x0:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        u = dy * np.cos(ang) + dx * np.sin(ang)
        v = -dy * np.sin(ang) + dx * np.cos(ang)
        rho = np.sqrt((u / e) ** 2 + v**2) / r
        pore[y0:y1, x0:x1] |= rho + irr * wobble[y0:y1, x0:x1] * 0.5 < 1.0
    pore = ndi.binary_opening(pore)
    labels, _ = ndi.label(pore)
    labels = labels.astype(LABEL_DTYPE)
    classes = pore.astype(CLASS_DTYPE)
    matrix = 0.75 + _u(rng, st.matrix_texture) * _smooth(rng, (h, w), 1.5)
    level = _u(rng, st.pore_level)
    img = np.where(pore, level + 0.03 * _smooth(rng, (h, w), 3.0), matrix)
    img = ndi.gaussian_filter(img, _u(rng, st.blur)) * _illumination(
        rng, (h, w), _u(rng, st.illumination)
    )
    img = img + rng.normal(0, _u(rng, st.noise), (h, w))
    image = np.clip(img * 4095, 0, 4095).astype(np.uint16)
    return Section(image, classes, labels, PORE_CLASSES, pixel_size_um)
