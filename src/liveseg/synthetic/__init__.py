"""Seeded synthetic microscope frames with exact instance labels, one module per sample type.

The generators train the shipped deep models, feed tests with realistic frames, and let
anyone look at domain shift by switching sample type or style. Everything is
numpy/scipy: importing this package never loads torch.

Sample types (:data:`SAMPLE_TYPES`), each with a ``train`` style and a harder held-out
``test`` style (other seeds, harder settings):

- ``nuclei`` (:mod:`liveseg.synthetic.nuclei`): fluorescent nuclei; its styles are
  ``train`` and ``test_hard`` (plus ``sparse``, ``low_snr``, ``inverted``);
- ``cells`` (:mod:`liveseg.synthetic.cells`): whole cells in fluorescence, dim textured
  cytoplasm around a bright nucleus, touching along long borders;
- ``bacteria`` (:mod:`liveseg.synthetic.bacteria`): rod-shaped bacteria in phase contrast
  (dark bodies, bright halos) and brightfield (low contrast), colonies and sparse fields;
- ``transmitted`` (:mod:`liveseg.synthetic.transmitted`): eukaryotic cells and emulsion
  droplets in brightfield / oblique / DIC-like transmitted light.

Examples
--------
>>> from liveseg.synthetic import generate, generate_sample
>>> image, labels = generate(0, shape=(128, 128))
>>> image.shape == labels.shape
True
>>> rods, rod_labels = generate_sample("bacteria", 0, (128, 128), split="test")
>>> rod_labels.dtype
dtype('uint32')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveseg.synthetic.bacteria import (
    BACTERIA_STYLES,
    BacteriaStyle,
    bacteria_conditions,
    generate_bacteria,
)
from liveseg.synthetic.cells import CELL_STYLES, CellStyle, generate_cells
from liveseg.synthetic.nuclei import (
    STYLES,
    SyntheticStyle,
    generate,
    generate_batch,
    get_style,
    iter_dataset,
)
from liveseg.synthetic.transmitted import (
    TRANSMITTED_STYLES,
    TransmittedStyle,
    generate_transmitted,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    import numpy as np

__all__ = [
    "BACTERIA_STYLES",
    "CELL_STYLES",
    "PRESETS",
    "SAMPLE_TYPES",
    "STYLES",
    "TRANSMITTED_STYLES",
    "BacteriaStyle",
    "CellStyle",
    "SyntheticStyle",
    "TransmittedStyle",
    "bacteria_conditions",
    "generate",
    "generate_bacteria",
    "generate_batch",
    "generate_cells",
    "generate_sample",
    "generate_transmitted",
    "get_style",
    "iter_dataset",
    "iter_samples",
]

SAMPLE_TYPES: dict[str, str] = {
    "nuclei": "fluorescent nuclei (DNA stain, H2B-FP)",
    "cells": "whole cells in fluorescence (cytoplasm stain around a bright nucleus)",
    "bacteria": "rod-shaped bacteria in phase contrast or brightfield",
    "transmitted": "eukaryotic cells and droplets in brightfield / DIC-like light",
}
"""Sample type -> one-line description; :func:`generate_sample` takes these names."""

PRESETS: dict[str, Mapping[str, object]] = {
    "nuclei": STYLES,
    "cells": CELL_STYLES,
    "bacteria": BACTERIA_STYLES,
    "transmitted": TRANSMITTED_STYLES,
}
"""Sample type -> its style presets (``train``, ``test``...; ``val`` where it has one)."""


def generate_sample(
    kind: str,
    seed: int,
    shape: tuple[int, int] = (256, 256),
    split: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """One frame of sample type ``kind``: its ``train`` or held-out ``test`` style.

    Parameters
    ----------
    kind : str
        A key of :data:`SAMPLE_TYPES`.
    seed : int
        Same kind, seed, shape and split give the same frame.
    shape : tuple of int
        Height and width.
    split : str
        ``"train"`` or ``"test"`` (for ``nuclei``, ``test`` is ``test_hard``), or any
        other preset name of that type.
    """
    if kind == "nuclei":
        return generate(seed, shape, "test_hard" if split == "test" else split)
    if kind == "cells":
        return generate_cells(seed, shape, split)
    if kind == "bacteria":
        return generate_bacteria(seed, shape, split)
    if kind == "transmitted":
        return generate_transmitted(seed, shape, split)
    raise ValueError(f"unknown sample type {kind!r}; known: {', '.join(SAMPLE_TYPES)}")


def iter_samples(
    kind: str,
    n: int,
    seed: int = 0,
    shape: tuple[int, int] = (256, 256),
    split: str = "train",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``n`` frames of ``kind``; frame ``i`` uses seed ``seed * 1_000_003 + i``."""
    for i in range(n):
        yield generate_sample(kind, seed * 1_000_003 + i, shape, split)
