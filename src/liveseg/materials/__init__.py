"""Materials science: generated grain and pore sections, ASTM E112 grain size, porosity.

``liveseg.materials`` is pure numpy/scipy (scikit-learn only when a shipped model is
rebuilt); nothing here is imported by ``import liveseg``.
"""

from __future__ import annotations

from liveseg.materials.generate import (
    GRAIN_CLASSES,
    GRAIN_STYLES,
    PORE_CLASSES,
    PORE_STYLES,
    GrainStyle,
    PoreStyle,
    Section,
    grain_section,
    porous_section,
)
from liveseg.materials.grainsize import GrainSize, grain_size, intercept_g, planimetric_g
from liveseg.materials.porosity import Porosity, porosity
from liveseg.materials.summary import frame_summary

__all__ = [
    "GRAIN_CLASSES",
    "GRAIN_STYLES",
    "PORE_CLASSES",
    "PORE_STYLES",
    "GrainSize",
    "GrainStyle",
    "PoreStyle",
    "Porosity",
    "Section",
    "frame_summary",
    "grain_section",
    "grain_size",
    "intercept_g",
    "planimetric_g",
    "porosity",
    "porous_section",
]
