"""Per-frame numbers of a class map: what a frames table, a trigger or a report reads.

:func:`frame_summary` flattens a result's class map into named scalars — the area
fraction and component count of every class, and, where the classes say what the sample
is, the ASTM E112 grain size numbers (a ``boundary`` class: grains) or the porosity
report (a ``pore`` class). Keys are dotted (``class_fraction.pore``) so a trigger
condition such as ``class_fraction.pore > 0.1`` can name them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from liveseg.builtins.classes import class_fractions, class_object_counts

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["frame_summary"]


def frame_summary(
    classes: np.ndarray | None,
    class_names: Sequence[str],
    labels: np.ndarray | None = None,
    pixel_size_um: float = 1.0,
) -> dict[str, float]:
    """Named per-frame scalars of a class map (empty without one).

    Parameters
    ----------
    classes : numpy.ndarray or None
        The class map (``FrameResult.classes``).
    class_names : sequence of str
        Its names (``FrameResult.class_names``).
    labels : numpy.ndarray, optional
        Instance labels (grains or pores) for the grain size / porosity numbers.
    pixel_size_um : float
        Pixel size; lengths are in µm, areas in µm².
    """
    if classes is None or not class_names:
        return {}
    out: dict[str, float] = {}
    for name, frac in class_fractions(classes, class_names).items():
        out[f"class_fraction.{name}"] = frac
    for name, n in class_object_counts(classes, class_names).items():
        out[f"class_objects.{name}"] = float(n)
    if labels is not None and "boundary" in class_names and np.any(labels):
        from liveseg.materials.grainsize import grain_size

        gs = grain_size(labels, pixel_size_um)
        out.update(
            {
                "grain.g_planimetric": gs.g_planimetric,
                "grain.g_intercept": gs.g_intercept,
                "grain.count": float(gs.n_grains),
                "grain.mean_area_um2": gs.mean_area_um2,
                "grain.mean_diameter_um": gs.mean_diameter_um,
            }
        )
    if "pore" in class_names:
        from liveseg.materials.porosity import porosity

        pores = labels if labels is not None else classes == class_names.index("pore")
        p = porosity(pores, pixel_size_um)
        out.update(
            {
                "pore.area_fraction": p.area_fraction,
                "pore.count": float(p.n_pores),
                "pore.mean_diameter_um": p.mean_diameter_um,
                "pore.mean_circularity": p.mean_circularity,
            }
        )
    return out
