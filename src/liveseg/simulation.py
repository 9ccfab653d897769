"""Simulated samples for the demo camera: nuclei-like objects at known stage positions.

pymmcore-plus's ``experimental.simulate`` renders these objects into every snapped image
wherever the stage is, so tests can check counts and stage coordinates against truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from liveseg.config import SimulationConfig

__all__ = ["make_sample", "sample_objects"]


def sample_objects(sim: SimulationConfig) -> list[tuple[float, float, float, float]]:
    """(x µm, y µm, radius µm, intensity 0-1) of every object, explicit or seeded."""
    objs = [(o.x, o.y, o.radius, o.intensity) for o in sim.objects]
    if sim.n_objects:
        rng = np.random.default_rng(sim.seed)
        half = sim.extent_um / 2
        placed: list[tuple[float, float, float, float]] = []
        tries = 0
        while len(placed) < sim.n_objects and tries < sim.n_objects * 200:
            tries += 1
            r = float(rng.uniform(*sim.radius_um))
            # Whole-µm centres: the renderer places objects on the pixel grid.
            x, y = (
                float(np.round(rng.uniform(-half, half))),
                float(np.round(rng.uniform(-half, half))),
            )
            if all((x - px) ** 2 + (y - py) ** 2 > (r + pr + 3) ** 2 for px, py, pr, _ in placed):
                placed.append((x, y, r, float(rng.uniform(0.6, 1.0))))
        objs.extend(placed)
    return objs


def make_sample(sim: SimulationConfig) -> tuple[Any, list[tuple[float, float, float, float]]]:
    """A pymmcore-plus ``Sample`` for ``sim`` plus its object list."""
    from pymmcore_plus.experimental.simulate import Point, RenderConfig, Sample

    objs = sample_objects(sim)
    points = [Point(x, y, intensity=round(200 * i), radius=r) for x, y, r, i in objs]
    sample = Sample(points, config=RenderConfig(random_seed=sim.seed))
    return sample, objs
