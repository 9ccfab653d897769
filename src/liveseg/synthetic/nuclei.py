"""Fluorescent nuclei: the first sample type, and the default model's training data.

The generator trains the default deep model, feeds tests with realistic frames, and lets
anyone look at domain shift by switching styles. Everything is numpy/scipy: importing this
module never loads torch.

A :class:`SyntheticStyle` holds *ranges*; every call to :func:`generate` draws one
concrete value from each range with its seeded generator, so one style already spans a
wide family of images (sparse to crowded, bright to photon-starved, 8 to 16 bit). The
same seed, shape and style always give the same image and labels.

What a frame contains:

- nuclei: ellipses with a wobbly outline (low-order Fourier harmonics), varied size,
  elongation, orientation, brightness, interior profile (dome or rim) and chromatin
  texture; touching nuclei share a boundary decided by whichever shape is "closer",
  which gives the straight seams of packed nuclei;
- mitotic figures (small, very bright, often bar-shaped) and apoptotic fragments (tiny
  bright clusters), both labelled;
- out-of-focus nuclei: dim, heavily blurred, *not* labelled (they are not in the focal
  plane an annotator would segment);
- uneven illumination, background offset and haze, optical blur, Poisson (shot) and
  Gaussian (read) noise, and quantisation to 8, 12 or 16 bits (or float).

Examples
--------
>>> from liveseg.synthetic import generate
>>> image, labels = generate(0, shape=(128, 128))
>>> image.shape == labels.shape
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from liveseg.synthetic._common import (
    Range,
    StyleBase,
    draw_range,
    illumination,
    place,
    quantise,
    relabel,
    smooth_noise,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "STYLES",
    "SyntheticStyle",
    "generate",
    "generate_batch",
    "get_style",
    "iter_dataset",
]


@dataclass(frozen=True)
class SyntheticStyle(StyleBase):
    """Ranges the generator draws from; one frame gets one value from each range.

    Sizes are in pixels, brightnesses relative to the median nucleus (1.0), densities in
    nuclei per 10 000 px². Use :meth:`replace` to derive a variant.

    Attributes
    ----------
    density : Range
        Nuclei per 10 000 px² (a 256² frame at 10 holds about 65 nuclei).
    radius : Range
        Mean nucleus radius of the frame; each nucleus varies around it by ``radius_cv``.
    radius_cv : float
        Coefficient of variation of radii within a frame.
    elongation : Range
        Long/short axis ratio, drawn per nucleus.
    wobble : Range
        Amplitude of outline irregularity (0 = perfect ellipse).
    packing : Range
        Minimum centre distance as a fraction of the two radii summed; below 1 nuclei
        overlap and are cut into touching neighbours (0.65 = dense, 1.1 = well apart).
    brightness_cv : Range
        Spread (lognormal sigma) of nucleus brightness within a frame.
    texture : Range
        Strength of multiplicative chromatin texture.
    edge_width : Range
        Softness of nucleus edges, in pixels.
    mitotic_fraction, apoptotic_fraction, out_of_focus_fraction : Range
        Fraction of extra objects of each kind, relative to the nucleus count.
    background : Range
        Background level relative to the median nucleus.
    illumination : Range
        Depth of the uneven-illumination field (0 = flat, 0.6 = corners at 40 %).
    blur : Range
        Sigma of the optical Gaussian blur, in pixels.
    photons : Range
        Expected photons at a median nucleus (log-uniform): 10 is very noisy, 3000 clean.
    read_noise : Range
        Gaussian read noise in photon units.
    bit_depths : tuple[int, ...]
        Output encodings to choose from: 8, 12 (in uint16), 16, or 32 for float32.
    invert : bool
        Dark objects on a bright background (a brightfield-like modality).
    min_area : int
        Objects smaller than this (after overlaps are cut) are dropped from the labels.
    """

    density: Range = (2.0, 20.0)
    radius: Range = (5.0, 16.0)
    radius_cv: float = 0.2
    elongation: Range = (1.0, 1.8)
    wobble: Range = (0.0, 0.12)
    packing: Range = (0.7, 1.15)
    brightness_cv: Range = (0.1, 0.5)
    texture: Range = (0.0, 0.35)
    edge_width: Range = (0.4, 1.5)
    mitotic_fraction: Range = (0.0, 0.08)
    apoptotic_fraction: Range = (0.0, 0.05)
    out_of_focus_fraction: Range = (0.0, 0.3)
    background: Range = (0.02, 0.3)
    illumination: Range = (0.0, 0.5)
    blur: Range = (0.5, 2.0)
    photons: Range = (10.0, 3000.0)
    read_noise: Range = (0.5, 5.0)
    bit_depths: tuple[int, ...] = (8, 12, 16, 32)
    invert: bool = False
    min_area: int = 8


STYLES: dict[str, SyntheticStyle] = {
    # Wide training distribution: sparse to crowded, clean to noisy, any bit depth.
    "train": SyntheticStyle(),
    # Held-out evaluation: crowded, densely touching, elongated, noisier, dimmer edges.
    "test_hard": SyntheticStyle(
        density=(12.0, 22.0),
        radius=(6.0, 13.0),
        radius_cv=0.3,
        elongation=(1.1, 2.0),
        wobble=(0.05, 0.15),
        packing=(0.68, 0.85),
        brightness_cv=(0.35, 0.6),
        texture=(0.2, 0.4),
        edge_width=(0.8, 1.6),
        mitotic_fraction=(0.03, 0.08),
        apoptotic_fraction=(0.02, 0.05),
        out_of_focus_fraction=(0.1, 0.3),
        background=(0.1, 0.3),
        illumination=(0.3, 0.6),
        blur=(1.0, 2.0),
        photons=(20.0, 200.0),
        read_noise=(2.0, 5.0),
    ),
    # Few, well separated, clean nuclei: what a classical threshold handles well.
    "sparse": SyntheticStyle(
        density=(1.0, 4.0),
        packing=(1.3, 2.0),
        photons=(300.0, 3000.0),
        out_of_focus_fraction=(0.0, 0.0),
        illumination=(0.0, 0.2),
    ),
    # Photon-starved frames for robustness checks.
    "low_snr": SyntheticStyle(photons=(3.0, 12.0), read_noise=(3.0, 8.0)),
    # A different modality: dark nuclei on a bright background (domain-shift checks).
    "inverted": SyntheticStyle(invert=True, background=(0.2, 0.5)),
}
"""Named presets; add a new modality by adding an entry (or pass a style directly)."""


def get_style(style: str | SyntheticStyle) -> SyntheticStyle:
    """Return the preset named ``style`` (or ``style`` itself when already a style)."""
    if isinstance(style, SyntheticStyle):
        return style
    try:
        return STYLES[style]
    except KeyError:
        names = ", ".join(sorted(STYLES))
        raise ValueError(f"unknown synthetic style {style!r}; presets: {names}") from None


@dataclass
class _Blob:
    cy: float
    cx: float
    a: float  # semi-axis along angle
    b: float  # semi-axis across
    angle: float
    harmonics: np.ndarray  # (k, amplitude, phase) rows
    brightness: float
    dome: float
    edge: float
    labelled: bool
    blur: float = 0.0


def _shape_field(blob: _Blob, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Normalised radius ``s`` (<1 inside the outline) on a pixel grid."""
    dy = yy - blob.cy
    dx = xx - blob.cx
    c, s = np.cos(blob.angle), np.sin(blob.angle)
    u = (dx * c + dy * s) / blob.a
    v = (-dx * s + dy * c) / blob.b
    rho = np.hypot(u, v)
    if blob.harmonics.size:
        theta = np.arctan2(v, u)
        rim = np.ones_like(rho)
        for k, amp, phase in blob.harmonics:
            rim += amp * np.cos(k * theta + phase)
        rho = rho / np.maximum(rim, 0.5)
    out: np.ndarray = rho
    return out


def _random_blob(
    rng: np.random.Generator,
    cy: float,
    cx: float,
    r: float,
    elong: float,
    wobble: float,
    brightness: float,
    edge: float,
    labelled: bool = True,
) -> _Blob:
    a = r * np.sqrt(elong)
    b = r / np.sqrt(elong)
    ks = np.arange(2, 5, dtype=float)
    amps = rng.uniform(0, wobble, size=ks.size) / ks * 2
    phases = rng.uniform(0, 2 * np.pi, size=ks.size)
    harmonics = np.stack([ks, amps, phases], axis=1) if wobble > 0 else np.zeros((0, 3))
    return _Blob(
        cy=cy,
        cx=cx,
        a=a,
        b=b,
        angle=float(rng.uniform(0, np.pi)),
        harmonics=harmonics,
        brightness=brightness,
        dome=float(rng.uniform(-0.25, 0.35)),
        edge=edge,
        labelled=labelled,
    )


def _render(
    blobs: list[_Blob],
    shape: tuple[int, int],
    signal: np.ndarray,
    labels: np.ndarray | None,
    best: np.ndarray | None,
    blur_each: bool = False,
) -> None:
    """Draw ``blobs`` into ``signal`` (max-composited) and, if given, ``labels``."""
    h, w = shape
    for i, blob in enumerate(blobs, start=1):
        reach = max(blob.a, blob.b) * 1.4 + 3 + 3 * blob.blur
        y0, y1 = max(int(blob.cy - reach), 0), min(int(blob.cy + reach) + 1, h)
        x0, x1 = max(int(blob.cx - reach), 0), min(int(blob.cx + reach) + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        s = _shape_field(blob, yy, xx)
        rmean = 0.5 * (blob.a + blob.b)
        inside = 1.0 / (1.0 + np.exp(-np.clip((1.0 - s) * rmean / blob.edge, -30, 30)))
        profile = blob.brightness * inside * (1.0 - blob.dome * np.minimum(s, 1.0) ** 2)
        if blur_each and blob.blur > 0:
            profile = ndi.gaussian_filter(profile, blob.blur)
        region = signal[y0:y1, x0:x1]
        np.maximum(region, profile.astype(np.float32), out=region)
        if labels is not None and best is not None and blob.labelled:
            lab = labels[y0:y1, x0:x1]
            bst = best[y0:y1, x0:x1]
            win = (s < 1.0) & (s < bst)
            lab[win] = i
            bst[win] = s[win]


def generate(
    seed: int,
    shape: tuple[int, int] = (256, 256),
    style: str | SyntheticStyle = "train",
    **overrides: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic fluorescence frame and its instance labels.

    Parameters
    ----------
    seed : int
        Seed of the frame; the same seed, shape and style give the same output.
    shape : tuple of int
        Height and width in pixels.
    style : str or SyntheticStyle
        A preset name from :data:`STYLES` or a style object.
    **overrides
        Fields of :class:`SyntheticStyle` to override (e.g. ``density=(20, 20)``).

    Returns
    -------
    image : numpy.ndarray
        ``uint8``, ``uint16`` (12- or 16-bit range) or ``float32``, as the style draws.
    labels : numpy.ndarray
        ``uint32`` instance labels, 0 = background, 1..N consecutive.
    """
    st = get_style(style)
    if overrides:
        st = st.replace(**overrides)
    h, w = int(shape[0]), int(shape[1])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), h, w]))

    # Frame-level draws.
    density = draw_range(rng, st.density)
    r_mean = draw_range(rng, st.radius)
    packing = draw_range(rng, st.packing)
    bcv = draw_range(rng, st.brightness_cv)
    texture = draw_range(rng, st.texture)
    edge = draw_range(rng, st.edge_width)
    elong_max = draw_range(rng, st.elongation)
    wobble = draw_range(rng, st.wobble)
    background = draw_range(rng, st.background)
    illum = draw_range(rng, st.illumination)
    blur = draw_range(rng, st.blur)
    photons = draw_range(rng, st.photons, log=True)
    read_noise = draw_range(rng, st.read_noise)
    bits = int(rng.choice(np.asarray(st.bit_depths)))

    # Nuclei.
    n = int(rng.poisson(density * h * w / 1e4))
    radii = np.clip(r_mean * (1 + st.radius_cv * rng.standard_normal(n)), 2.5, None)
    radii = np.sort(radii)[::-1]  # big first: packs better
    centres = place(rng, (h, w), n, radii, packing)
    blobs = [
        _random_blob(
            rng,
            cy,
            cx,
            r,
            elong=float(rng.uniform(1.0, elong_max)),
            wobble=wobble,
            brightness=float(rng.lognormal(0.0, bcv)),
            edge=edge,
        )
        for cy, cx, r in centres
    ]
    n_nuc = len(blobs)

    # Mitotic figures: small, bright, compact or bar-shaped (metaphase plates).
    n_mit = int(rng.binomial(n_nuc, draw_range(rng, st.mitotic_fraction))) if n_nuc else 0
    for _ in range(n_mit):
        r = max(2.5, r_mean * rng.uniform(0.35, 0.6))
        blobs.append(
            _random_blob(
                rng,
                rng.uniform(0, h),
                rng.uniform(0, w),
                r,
                elong=float(rng.uniform(1.0, 3.0)),
                wobble=0.05,
                brightness=float(rng.uniform(1.8, 4.0)),
                edge=max(0.4, edge * 0.6),
            )
        )
    # Apoptotic bodies: clusters of 2-4 tiny bright fragments.
    n_apo = int(rng.binomial(n_nuc, draw_range(rng, st.apoptotic_fraction))) if n_nuc else 0
    for _ in range(n_apo):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        for _ in range(int(rng.integers(2, 5))):
            r = rng.uniform(1.8, max(2.0, r_mean * 0.3))
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(1.5, 2.5) * r
            blobs.append(
                _random_blob(
                    rng,
                    cy + dist * np.sin(ang),
                    cx + dist * np.cos(ang),
                    r,
                    elong=1.2,
                    wobble=0.0,
                    brightness=float(rng.uniform(1.5, 3.0)),
                    edge=0.5,
                )
            )

    signal = np.zeros((h, w), dtype=np.float32)
    labels = np.zeros((h, w), dtype=np.int64)
    best = np.full((h, w), np.inf, dtype=np.float32)

    # Out-of-focus nuclei: dim and blurred, behind the in-focus ones, unlabelled.
    n_oof = int(rng.binomial(max(n_nuc, 1), draw_range(rng, st.out_of_focus_fraction)))
    oof = []
    for _ in range(n_oof):
        blob = _random_blob(
            rng,
            rng.uniform(0, h),
            rng.uniform(0, w),
            r_mean * rng.uniform(0.8, 1.4),
            elong=float(rng.uniform(1.0, 1.5)),
            wobble=0.05,
            brightness=float(rng.uniform(0.1, 0.35)),
            edge=2.0,
            labelled=False,
        )
        blob.blur = float(rng.uniform(3.0, 6.0))
        oof.append(blob)
    _render(oof, (h, w), signal, None, None, blur_each=True)
    _render(blobs, (h, w), signal, labels, best)

    # Chromatin texture (multiplicative, inside objects mostly matters).
    if texture > 0:
        tex = 0.6 * smooth_noise(rng, (h, w), 1.0) + 0.4 * smooth_noise(rng, (h, w), 2.5)
        signal *= np.clip(1.0 + texture * tex, 0.2, None)

    # Background haze, uneven illumination, optical blur.
    haze = background * (1.0 + 0.3 * smooth_noise(rng, (h, w), max(h, w) / 16))
    image = (signal + np.clip(haze, 0, None)) * illumination(rng, (h, w), illum)
    if blur > 0:
        image = ndi.gaussian_filter(image, blur)
    if st.invert:
        image = np.clip(1.0 + background - 0.7 * image, 0.0, None)

    # Noise: Poisson photon counts plus Gaussian read noise.
    counts = rng.poisson(np.clip(image, 0, None) * photons).astype(np.float32)
    counts += rng.normal(0.0, read_noise, size=(h, w)).astype(np.float32)

    out = quantise(rng, counts, bits)
    return out, relabel(labels, st.min_area)


def generate_batch(
    seeds: range | list[int],
    shape: tuple[int, int] = (256, 256),
    style: str | SyntheticStyle = "train",
    **overrides: Any,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generate one (image, labels) pair per seed."""
    return [generate(s, shape, style, **overrides) for s in seeds]


def iter_dataset(
    n: int,
    seed: int = 0,
    shape: tuple[int, int] = (256, 256),
    style: str | SyntheticStyle = "train",
    **overrides: Any,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``n`` frames whose seeds derive from ``seed`` (disjoint across datasets).

    Frame ``i`` uses seed ``seed * 1_000_003 + i``, so datasets with different ``seed``
    never share a frame for any realistic ``n``.
    """
    for i in range(n):
        yield generate(seed * 1_000_003 + i, shape, style, **overrides)
