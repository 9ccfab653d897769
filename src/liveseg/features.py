"""The ilastik-style multi-scale pixel feature bank of the traditional-ML tier.

ilastik's pixel classification describes every pixel by six filter families at a set of
Gaussian scales (0.3, 0.7, 1.0, 1.6, 3.5, 5.0 and 10 px by default) and trains a random
forest on them: Gaussian smoothing, Laplacian of Gaussian, Gaussian gradient magnitude,
difference of Gaussians (σ and 0.66 σ), structure-tensor eigenvalues (inner scale σ,
outer scale σ / 2) and Hessian-of-Gaussian eigenvalues. This module computes the same
families, vectorised, as one ``(n_features, H, W)`` float32 stack, so a forest can
classify a whole frame at once.

Speed matters because the stack is computed for every live frame: each scale costs one
Gaussian (derivatives come from central differences of the smoothed image, which at
σ ≥ 0.7 px differ from analytic Gaussian derivatives by far less than the forest's
split resolution), one extra Gaussian for the DoG and three small ones for the
structure tensor. Scales from 3.5 px up are computed on a 2×/4× block-averaged copy of
the image and upsampled, which keeps the large kernels cheap and changes the smooth
responses at those scales only marginally.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["FEATURE_FAMILIES", "ILASTIK_SCALES", "FeatureBank", "feature_stack"]

ILASTIK_SCALES: tuple[float, ...] = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
"""ilastik's default scales in pixels (without its 0.3 px raw-like scale)."""

FEATURE_FAMILIES: tuple[str, ...] = (
    "gaussian",
    "log",
    "gradient",
    "dog",
    "structure",
    "hessian",
)
"""Filter families; ``structure`` and ``hessian`` give two eigenvalue maps each."""

_WIDTH = {"gaussian": 1, "log": 1, "gradient": 1, "dog": 1, "structure": 2, "hessian": 2}


@dataclass(frozen=True, slots=True)
class FeatureBank:
    """Which filter families at which scales; stored in a model's ``model.json``.

    Parameters
    ----------
    scales : tuple of float
        Gaussian scales in pixels.
    families : tuple of str
        Members of :data:`FEATURE_FAMILIES`.
    raw : bool
        Also include the (normalised) image itself as a feature.
    """

    scales: tuple[float, ...] = (0.7, 1.6, 3.5, 5.0, 10.0)
    families: tuple[str, ...] = FEATURE_FAMILIES
    raw: bool = True

    def __post_init__(self) -> None:
        """Reject unknown families and non-positive scales early, with one line."""
        unknown = [f for f in self.families if f not in _WIDTH]
        if unknown:
            raise ValueError(
                f"unknown feature families {unknown}; known: {', '.join(FEATURE_FAMILIES)}"
            )
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"feature scales must be positive, got {self.scales}")

    @property
    def n_features(self) -> int:
        """Number of feature maps the bank produces."""
        return int(self.raw) + len(self.scales) * sum(_WIDTH[f] for f in self.families)

    def names(self) -> list[str]:
        """One name per feature map, in stack order (e.g. ``hessian1@3.5``)."""
        out = ["raw"] if self.raw else []
        for s in self.scales:
            for fam in self.families:
                if _WIDTH[fam] == 1:
                    out.append(f"{fam}@{s:g}")
                else:
                    out.extend(f"{fam}{k}@{s:g}" for k in (1, 2))
        return out

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly description."""
        return {"scales": list(self.scales), "families": list(self.families), "raw": self.raw}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureBank:
        """Inverse of :meth:`as_dict` (raises ``ValueError`` on a malformed entry)."""
        try:
            scales = tuple(float(s) for s in data["scales"])  # type: ignore[attr-defined]
            families = tuple(str(f) for f in data["families"])  # type: ignore[attr-defined]
            raw = bool(data.get("raw", True))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed feature bank {data!r}: {exc}") from None
        return cls(scales=scales, families=families, raw=raw)


def _eig2(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (larger, smaller) of the symmetric 2×2 field ``[[a, b], [b, c]]``."""
    half_trace = 0.5 * (a + c)
    root = np.sqrt(0.25 * (a - c) ** 2 + b * b)
    return half_trace + root, half_trace - root


def _downsample(img: np.ndarray, f: int) -> np.ndarray:
    """Block mean by ``f`` (edge rows/columns replicated to a multiple of ``f``)."""
    h, w = img.shape
    ph, pw = (-h) % f, (-w) % f
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw)), mode="edge")
    hh, ww = img.shape
    return img.reshape(hh // f, f, ww // f, f).mean(axis=(1, 3), dtype=np.float32)


def _up2(a: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear 2x upsampling of a map stack along ``axis`` (1 or 2), by slicing only.

    Each output pair sits at +-1/4 pixel around its source pixel, so it is 3/4 of that
    pixel plus 1/4 of the neighbour on its side (edges replicated). ``out`` (the right
    shape) receives the result without another copy.
    """
    shape = list(a.shape)
    shape[axis] *= 2
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    q = a * np.float32(0.25)

    def sl(idx: slice | int) -> tuple[slice | int, ...]:
        s: list[slice | int] = [slice(None), slice(None), slice(None)]
        s[axis] = idx
        return tuple(s)

    even, odd = out[sl(slice(0, None, 2))], out[sl(slice(1, None, 2))]
    np.multiply(a, np.float32(0.75), out=even)
    np.multiply(a, np.float32(0.75), out=odd)
    even[sl(slice(1, None))] += q[sl(slice(None, -1))]
    even[sl(0)] += q[sl(0)]
    odd[sl(slice(None, -1))] += q[sl(slice(1, None))]
    odd[sl(-1)] += q[sl(-1)]
    return out


def _upsample_into(maps: np.ndarray, f: int, out: np.ndarray) -> None:
    """Bilinear upsampling of ``maps`` (n, h, w) by ``f`` (a power of two) into ``out``."""
    cur = maps
    while f > 2:
        cur = _up2(_up2(cur, 1), 2)
        f //= 2
    rows = _up2(cur, 1)
    if rows.shape[1] >= out.shape[1] and 2 * rows.shape[2] == out.shape[2]:
        _up2(rows[:, : out.shape[1]], 2, out=out)
    else:
        out[...] = _up2(rows, 2)[:, : out.shape[1], : out.shape[2]]


def _diff(a: np.ndarray, axis: int) -> np.ndarray:
    """Central difference along ``axis`` (one-sided at the edges), like ``np.gradient``."""
    d = np.empty_like(a)
    if axis == 0:
        d[1:-1] = (a[2:] - a[:-2]) * np.float32(0.5)
        d[0] = a[1] - a[0]
        d[-1] = a[-1] - a[-2]
    else:
        d[:, 1:-1] = (a[:, 2:] - a[:, :-2]) * np.float32(0.5)
        d[:, 0] = a[:, 1] - a[:, 0]
        d[:, -1] = a[:, -1] - a[:, -2]
    return d


def _scale_features(img: np.ndarray, sigma: float, families: tuple[str, ...]) -> list[np.ndarray]:
    """The feature maps of one scale, on ``img`` at its own resolution."""
    g = ndi.gaussian_filter(img, sigma, mode="reflect", truncate=3.0)
    gy, gx = _diff(g, 0), _diff(g, 1)
    out: list[np.ndarray] = []
    if "hessian" in families or "log" in families:
        gyy, gyx, gxx = _diff(gy, 0), _diff(gy, 1), _diff(gx, 1)
    for fam in families:
        if fam == "gaussian":
            out.append(g)
        elif fam == "log":
            out.append((gxx + gyy) * np.float32(sigma**2))
        elif fam == "gradient":
            out.append(np.sqrt(gx * gx + gy * gy) * np.float32(sigma))
        elif fam == "dog":
            out.append(g - ndi.gaussian_filter(img, 0.66 * sigma, mode="reflect", truncate=3.0))
        elif fam == "structure":
            outer = max(0.5 * sigma, 0.5)
            sxx = ndi.gaussian_filter(gx * gx, outer, truncate=3.0)
            syy = ndi.gaussian_filter(gy * gy, outer, truncate=3.0)
            sxy = ndi.gaussian_filter(gx * gy, outer, truncate=3.0)
            e1, e2 = _eig2(sxx, sxy, syy)
            out.extend((e1 * np.float32(sigma**2), e2 * np.float32(sigma**2)))
        elif fam == "hessian":
            e1, e2 = _eig2(gxx, gyx, gyy)
            out.extend((e1 * np.float32(sigma**2), e2 * np.float32(sigma**2)))
    return out


def feature_stack(image: np.ndarray, bank: FeatureBank | None = None) -> np.ndarray:
    """Compute the feature maps of ``image`` as one ``(n_features, H, W)`` float32 stack.

    The image is first normalised to its 1st-99th percentile range, so a model trained
    on one exposure applies to another. Derivative features are scaled by σ (γ = 1
    normalisation, as in scale-space theory) so scales are comparable.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image of any real dtype.
    bank : FeatureBank, optional
        Families and scales; the default bank when omitted.

    Returns
    -------
    numpy.ndarray
        Float32 array of shape ``(bank.n_features, H, W)``, in :meth:`FeatureBank.names`
        order.
    """
    bank = bank or FeatureBank()
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"feature_stack needs a 2-D image, got shape {img.shape}")
    lo, hi = np.percentile(img[::2, ::2], (1.0, 99.0))  # a quarter of the pixels suffices
    img = (img - np.float32(lo)) / np.float32(max(float(hi - lo), 1e-6))
    shape = (int(img.shape[0]), int(img.shape[1]))
    stack = np.empty((bank.n_features, *shape), dtype=np.float32)
    k = 0
    if bank.raw:
        stack[0] = img
        k = 1
    pyramid: dict[int, np.ndarray] = {1: img}
    for sigma in bank.scales:
        factor = 1
        while sigma / (factor * 2) >= 1.6 and min(shape) // (factor * 2) >= 16:
            factor *= 2
        if factor not in pyramid:
            pyramid[factor] = _downsample(img, factor)
        maps = _scale_features(pyramid[factor], sigma / factor, bank.families)
        n = len(maps)
        if factor == 1:
            for m in maps:
                stack[k] = m
                k += 1
        else:
            _upsample_into(np.stack(maps), factor, stack[k : k + n])
            k += n
    return stack
