"""Whole cells in fluorescence: dim textured cytoplasm around a bright nucleus.

What a cytoplasm stain (or a cytoplasmic fluorescent protein) with some nuclear signal
looks like in a widefield image of a confluent or spreading culture:

- cells are irregular, lobed territories several times wider than their nucleus, with a
  few thin filopodia-like protrusions; at high density they touch along long, gently
  curved borders (each pixel belongs to the cell whose outline is "closest", so
  neighbours share a seam);
- the cytoplasm is much dimmer than the nucleus (5-45 % of it), textured (granules,
  fibres), brighter near the nucleus and fading towards the edge; the seam between two
  touching cells is often a little darker (membrane dip) but need not be;
- the nucleus sits off-centre inside its cell and is labelled as part of the cell;
- uneven illumination, haze, blur, shot and read noise and 8-16 bit encodings as for
  :mod:`liveseg.synthetic.nuclei`.

Labels are whole cells (cytoplasm plus nucleus), which is what a ``cyto``-type model
segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from liveseg.synthetic._common import (
    Range,
    StyleBase,
    assign,
    boundaries,
    camera,
    draw_range,
    illumination,
    irregular_field,
    outline_rim,
    place,
    relabel,
    seeded,
    smooth_noise,
)

__all__ = ["CELL_STYLES", "CellStyle", "generate_cells"]


@dataclass(frozen=True)
class CellStyle(StyleBase):
    """Ranges of the whole-cell generator (sizes in pixels, brightness vs. the nucleus).

    Attributes
    ----------
    density : Range
        Cells per 10 000 px².
    radius : Range
        Mean cell radius of a frame (cells vary by 25 % around it).
    packing : Range
        Minimum centre distance over the summed radii; below 1 cells overlap and are cut
        into touching neighbours along a shared seam.
    elongation, irregularity : Range
        Long/short axis ratio and outline lobing (harmonics 2-6).
    filopodia : Range
        Mean number of thin protrusions per cell.
    nucleus_fraction : Range
        Nucleus radius relative to its cell.
    cytoplasm : Range
        Cytoplasm brightness relative to the nucleus.
    texture : Range
        Strength of the granular cytoplasm texture.
    seam_dip : Range
        Darkening along the seams between touching cells (0 = none).
    background, illumination, blur, photons, read_noise : Range
        As in :class:`liveseg.synthetic.SyntheticStyle`.
    bit_depths : tuple of int
        Encodings to draw from (8, 12, 16 or 32 for float).
    min_area : int
        Smaller objects are dropped from the labels.
    confluent : float
        Probability that a frame is a confluent monolayer: its density is drawn from the
        upper half of ``density`` and its packing from the lower half of ``packing``, so
        crowded cells that touch along long borders are common in training rather than
        the rare corner of two independent draws. 0 draws nothing (frames are the same
        as without the option).
    """

    density: Range = (1.0, 9.0)
    radius: Range = (12.0, 34.0)
    packing: Range = (0.45, 1.1)
    elongation: Range = (1.0, 2.5)
    irregularity: Range = (0.05, 0.45)
    filopodia: Range = (0.0, 6.0)
    nucleus_fraction: Range = (0.3, 0.5)
    cytoplasm: Range = (0.06, 0.45)
    texture: Range = (0.1, 0.7)
    seam_dip: Range = (0.0, 0.5)
    background: Range = (0.01, 0.1)
    illumination: Range = (0.0, 0.7)
    blur: Range = (0.5, 2.3)
    photons: Range = (25.0, 3000.0)
    read_noise: Range = (0.5, 6.0)
    bit_depths: tuple[int, ...] = (8, 12, 16, 32)
    min_area: int = 30
    confluent: float = 0.0


CELL_STYLES: dict[str, CellStyle] = {
    # Broad ranges (revised in issue 14's third session: denser, dimmer, more lobed,
    # blurrier, noisier than before) and 40 % confluent frames.
    "train": CellStyle(confluent=0.4),
    # For choosing between runs (seed 1), never trained on: the crowded, dim, low-photon
    # end of the train ranges. Not the held-out test style, and other seeds.
    "val": CellStyle(
        density=(5.0, 9.0),
        packing=(0.45, 0.75),
        cytoplasm=(0.06, 0.3),
        texture=(0.3, 0.7),
        seam_dip=(0.0, 0.25),
        illumination=(0.2, 0.7),
        blur=(0.8, 2.3),
        photons=(25.0, 400.0),
        read_noise=(1.5, 6.0),
    ),
    # Held out: crowded, touching along long borders, dimmer cytoplasm, hardly any seam
    # dip, more lobed and spiky outlines, fewer photons.
    "test": CellStyle(
        density=(4.0, 7.0),
        radius=(14.0, 26.0),
        packing=(0.5, 0.7),
        elongation=(1.3, 2.2),
        irregularity=(0.25, 0.4),
        filopodia=(2.0, 5.0),
        cytoplasm=(0.12, 0.3),
        texture=(0.3, 0.6),
        seam_dip=(0.0, 0.15),
        illumination=(0.3, 0.6),
        blur=(1.0, 2.0),
        photons=(40.0, 300.0),
        read_noise=(2.0, 5.0),
    ),
}
"""Presets: ``train`` (what the ``cells`` model learns from), ``val`` (to choose with)
and ``test`` (held out)."""


def generate_cells(
    seed: int,
    shape: tuple[int, int] = (256, 256),
    style: str | CellStyle = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """One whole-cell fluorescence frame and its ``uint32`` whole-cell labels.

    Parameters
    ----------
    seed : int
        Same seed, shape and style give the same frame.
    shape : tuple of int
        Height and width.
    style : str or CellStyle
        A preset of :data:`CELL_STYLES` or a style.
    """
    st = CELL_STYLES[style] if isinstance(style, str) else style
    h, w = int(shape[0]), int(shape[1])
    rng = seeded(seed, (h, w), 2)
    dens_range, pack_range = st.density, st.packing
    if st.confluent > 0 and rng.random() < st.confluent:
        dens_range = (0.5 * (dens_range[0] + dens_range[1]), dens_range[1])
        pack_range = (pack_range[0], 0.5 * (pack_range[0] + pack_range[1]))
    density = draw_range(rng, dens_range)
    r_mean = draw_range(rng, st.radius)
    packing = draw_range(rng, pack_range)
    elong_max = draw_range(rng, st.elongation)
    irregular = draw_range(rng, st.irregularity)
    n_filo = draw_range(rng, st.filopodia)
    nuc_frac = draw_range(rng, st.nucleus_fraction)
    cyto = draw_range(rng, st.cytoplasm)
    texture = draw_range(rng, st.texture)
    dip = draw_range(rng, st.seam_dip)
    background = draw_range(rng, st.background)
    illum = draw_range(rng, st.illumination)
    blur = draw_range(rng, st.blur)
    photons = draw_range(rng, st.photons, log=True)
    read_noise = draw_range(rng, st.read_noise)
    bits = int(rng.choice(np.asarray(st.bit_depths)))

    n = max(1, int(rng.poisson(density * h * w / 1e4)))
    radii = np.sort(np.clip(r_mean * (1 + 0.25 * rng.standard_normal(n)), 6.0, None))[::-1]
    centres = place(rng, (h, w), n, radii, packing)

    fields: list[tuple[tuple[slice, slice], np.ndarray]] = []
    nuclei: list[tuple[tuple[slice, slice], np.ndarray, float]] = []
    for cy, cx, r in centres:
        elong = float(rng.uniform(1.0, elong_max))
        angle = float(rng.uniform(0, np.pi))
        rim = outline_rim(rng, irregular, int(rng.poisson(n_filo)), spike_len=0.6)
        reach = r * np.sqrt(elong) * 2.0 + 4
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, h)
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        sl = (slice(y0, y1), slice(x0, x1))
        fields.append((sl, irregular_field(cy, cx, r, elong, angle, rim, yy, xx)))
        # The nucleus: a smooth ellipse, off-centre, well inside the cell.
        off = rng.uniform(0, 0.35) * r
        phi = rng.uniform(0, 2 * np.pi)
        nr = r * nuc_frac * rng.uniform(0.85, 1.15)
        nf = irregular_field(
            cy + off * np.sin(phi),
            cx + off * np.cos(phi),
            nr,
            float(rng.uniform(1.0, 1.5)),
            float(rng.uniform(0, np.pi)),
            outline_rim(rng, 0.05, 0, 0.0),
            yy,
            xx,
        )
        nuclei.append((sl, nf, float(rng.lognormal(0.0, 0.3))))

    labels, best = assign(fields, (h, w))
    labels = relabel(labels, st.min_area)
    cell = labels > 0

    # Cytoplasm: per-cell brightness, brighter towards the middle, granular texture.
    per_cell = np.concatenate([[0.0], cyto * rng.lognormal(0.0, 0.35, int(labels.max()))])
    signal = per_cell[labels].astype(np.float32)
    signal *= np.clip(1.15 - 0.45 * np.clip(best, 0, 1) ** 2, 0.3, None)
    tex = 0.5 * smooth_noise(rng, (h, w), 0.8) + 0.5 * smooth_noise(rng, (h, w), 2.5)
    signal *= np.clip(1.0 + texture * tex, 0.15, None)
    if dip > 0:
        seams = ndi.gaussian_filter(boundaries(labels).astype(np.float32) * cell, 0.8)
        signal *= np.clip(1.0 - dip * 2.0 * seams, 0.2, 1.0)

    # Nuclei on top; the mask below keeps all signal inside the cells (whole-cell labels).
    for sl, nf, bright in nuclei:
        inside = 1.0 / (1.0 + np.exp(-np.clip((1.0 - nf) * 6.0, -30, 30)))
        region = signal[sl]
        np.maximum(region, (bright * inside).astype(np.float32), out=region)
    signal *= cell

    haze = background * (1.0 + 0.3 * smooth_noise(rng, (h, w), max(h, w) / 16))
    image = (signal + np.clip(haze, 0, None)) * illumination(rng, (h, w), illum)
    image = ndi.gaussian_filter(image, blur)
    return camera(rng, image, photons, read_noise, bits), labels
