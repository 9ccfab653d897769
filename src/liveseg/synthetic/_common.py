"""Pieces every synthetic sample type shares: random ranges, placement, fields, noise.

Private to :mod:`liveseg.synthetic`; numpy/scipy only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

import numpy as np
from scipy import ndimage as ndi

Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class StyleBase:
    """What every sample type's style shares: a copy with some fields changed."""

    def replace(self, **changes: Any) -> Self:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def draw_range(rng: np.random.Generator, r: Range, log: bool = False) -> float:
    """One value from the range ``r`` (log-uniform with ``log``); ``r[0]`` if empty."""
    lo, hi = float(r[0]), float(r[1])
    if hi <= lo:
        return lo
    if log:
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return float(rng.uniform(lo, hi))


def place(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n: int,
    radii: np.ndarray,
    packing: float,
) -> list[tuple[float, float, float]]:
    """Rejection-sample centres so that centre distance >= packing * (r_i + r_j)."""
    h, w = shape
    placed: list[tuple[float, float, float]] = []
    pts = np.zeros((0, 3))
    for r in radii:
        for _ in range(30):
            cy = rng.uniform(-0.5 * r, h + 0.5 * r)
            cx = rng.uniform(-0.5 * r, w + 0.5 * r)
            if pts.shape[0]:
                d = np.hypot(pts[:, 0] - cy, pts[:, 1] - cx)
                if np.any(d < packing * (pts[:, 2] + r)):
                    continue
            placed.append((cy, cx, float(r)))
            pts = np.vstack([pts, [cy, cx, r]])
            break
        if len(placed) >= n:
            break
    return placed


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    std = float(field.std())
    out: np.ndarray = field / std if std > 0 else field
    return out


def illumination(rng: np.random.Generator, shape: tuple[int, int], depth: float) -> np.ndarray:
    """Smooth multiplicative field in [1 - depth, 1]: vignetting plus a tilt."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    scale = rng.uniform(0.6, 1.5) * max(h, w)
    vignette = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * scale**2))
    tilt = rng.uniform(-1, 1) * (yy / h - 0.5) + rng.uniform(-1, 1) * (xx / w - 0.5)
    field = vignette + 0.3 * tilt
    field = (field - field.min()) / max(float(field.max() - field.min()), 1e-6)
    out: np.ndarray = (1.0 - depth + depth * field).astype(np.float32)
    return out


def relabel(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Consecutive ids 1..N; drop objects below ``min_area`` and split fragments."""
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    lut = np.zeros(areas.size, dtype=np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    out: np.ndarray = lut[labels]
    # A nucleus cut in two by its neighbours keeps only its largest piece.
    objects = ndi.find_objects(out)
    for idx, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        mask = out[sl] == idx
        comp, n = ndi.label(mask)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            out[sl][mask & (comp != int(np.argmax(sizes)))] = 0
    return out


def quantise(rng: np.random.Generator, counts: np.ndarray, bits: int) -> np.ndarray:
    """Map photon counts to a camera encoding with a random gain and offset."""
    if bits == 32:
        return (counts * rng.uniform(0.001, 10.0) + rng.uniform(-1, 1)).astype(np.float32)
    full = float(2**bits - 1)
    peak = float(np.percentile(counts, 99.9)) + 1e-6
    # Use between 5 % and 90 % of the range (dim cameras and well-exposed ones).
    gain = rng.uniform(0.05, 0.9) * full / peak
    offset = rng.uniform(0, 0.05) * full
    values = np.clip(np.round(counts * gain + offset), 0, full)
    return values.astype(np.uint8 if bits == 8 else np.uint16)


def camera(
    rng: np.random.Generator,
    image: np.ndarray,
    photons: float,
    read_noise: float,
    bits: int,
) -> np.ndarray:
    """Poisson shot noise at ``photons`` per unit of ``image``, read noise, quantisation."""
    counts = rng.poisson(np.clip(image, 0, None) * photons).astype(np.float32)
    counts += rng.normal(0.0, read_noise, size=image.shape).astype(np.float32)
    return quantise(rng, counts, bits)


def seeded(seed: int, shape: tuple[int, int], kind: int) -> np.random.Generator:
    """The generator of one frame: the seed, the frame size and the sample type."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), shape[0], shape[1], kind]))


def outline_rim(
    rng: np.random.Generator, irregularity: float, spikes: int, spike_len: float
) -> np.ndarray:
    """Rows of (k, amplitude, phase) harmonics plus spike rows (-1, length, angle)."""
    ks = np.arange(2, 7, dtype=float)
    amps = rng.uniform(0, irregularity, size=ks.size) / ks * 2
    phases = rng.uniform(0, 2 * np.pi, size=ks.size)
    rows = [np.stack([ks, amps, phases], axis=1)]
    if spikes:
        rows.append(
            np.stack(
                [
                    np.full(spikes, -1.0),
                    rng.uniform(0.3, 1.0, spikes) * spike_len,
                    rng.uniform(0, 2 * np.pi, spikes),
                ],
                axis=1,
            )
        )
    out: np.ndarray = np.concatenate(rows)
    return out


def irregular_field(
    cy: float,
    cx: float,
    radius: float,
    elongation: float,
    angle: float,
    rim: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
) -> np.ndarray:
    """Normalised radius (< 1 inside) of a lobed outline with thin spikes (filopodia).

    Harmonic rows ``(k, amp, phase)`` bend the outline; spike rows ``(-1, length, angle)``
    add a protrusion about one pixel wide and ``length`` radii long.
    """
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    a, b = radius * np.sqrt(elongation), radius / np.sqrt(elongation)
    u = (dx * c + dy * s) / a
    v = (-dx * s + dy * c) / b
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    outline = np.ones_like(rho)
    for k, amp, phase in rim:
        if k > 0:
            outline += amp * np.cos(k * theta + phase)
    rho = rho / np.maximum(outline, 0.4)
    spikes = rim[rim[:, 0] < 0]
    if spikes.size:
        dist = np.hypot(dx, dy)
        polar = np.arctan2(dy, dx)
        for _, length, phi in spikes:
            # Angular half-width of about 0.8 px at every distance from the centre.
            d_ang = np.abs((polar - phi + np.pi) % (2 * np.pi) - np.pi)
            on_spike = (d_ang * dist < 0.8) & (dist < radius * (1.0 + length))
            rho = np.where(on_spike, np.minimum(rho, 0.95), rho)
    return rho


def assign(
    fields: list[tuple[tuple[slice, slice], np.ndarray]], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Label map where each pixel goes to the object whose field is lowest (< 1).

    Touching objects then share a seam where their normalised fields are equal: the
    straight or gently curved borders of packed cells. Returns (labels, best field).
    """
    labels = np.zeros(shape, dtype=np.int64)
    best = np.full(shape, np.inf, dtype=np.float32)
    for i, (sl, field) in enumerate(fields, start=1):
        lab, bst = labels[sl], best[sl]
        win = (field < 1.0) & (field < bst)
        lab[win] = i
        bst[win] = field[win]
    return labels, best


def boundaries(labels: np.ndarray) -> np.ndarray:
    """True on pixels whose 4-neighbour has another label (both sides of every seam)."""
    b = np.zeros(labels.shape, dtype=bool)
    dv = labels[1:, :] != labels[:-1, :]
    dh = labels[:, 1:] != labels[:, :-1]
    b[1:, :] |= dv
    b[:-1, :] |= dv
    b[:, 1:] |= dh
    b[:, :-1] |= dh
    return b
