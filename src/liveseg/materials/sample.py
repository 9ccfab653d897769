"""A simulated grain sample for the demo camera (pymmcore-plus ``experimental.simulate``).

The demo camera renders sample objects at stage coordinates; a polished section is one
large bitmap (a :func:`~liveseg.materials.generate.grain_section`) laid on the stage,
so a live run moving the stage sees different grains with known truth. Wiring it into
``liveseg.simulation.make_sample`` is one branch there (see the README section
"Semantic segmentation and materials").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from liveseg.materials.generate import Section, grain_section

__all__ = ["grain_sample"]


def grain_sample(
    seed: int = 0, extent_um: float = 1024.0, size_px: int = 1024, pixel_size_um: float = 1.0
) -> tuple[Any, Section]:
    """A pymmcore-plus ``Sample`` showing a generated grain section, and the section.

    The section is ``size_px`` square, centred on the stage origin and ``extent_um``
    wide; grain diameters are drawn in section pixels, so with ``extent_um == size_px``
    they are in µm as well.
    """
    from pymmcore_plus.experimental.simulate import Bitmap, RenderConfig, Sample

    sec = grain_section(seed, (size_px, size_px), style="train", pixel_size_um=pixel_size_um)
    img8 = (np.asarray(sec.image, np.float32) / 4095.0 * 255).clip(0, 255).astype(np.uint8)
    half = extent_um / 2
    bitmap = Bitmap((-half, -half), img8, bitmap_scale=extent_um / size_px)
    # pymmcore-plus 0.18 groups objects by ``intensity``, which Bitmap lacks: its pixels
    # carry their own grey levels, so it joins the full-scale group.
    bitmap.intensity = 255  # type: ignore[attr-defined]
    # Its PIL backend pastes the bitmap; the cv2 one has no bitmap drawing.
    return Sample([bitmap], config=RenderConfig(random_seed=seed, backend="pil")), sec
