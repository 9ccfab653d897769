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
    """A pymmcore-plus ``Sample`` for ``sim`` plus its object list.

    A ``grains`` sample is a section bitmap: it has no point objects.
    """
    if sim.kind == "grains":
        from liveseg.materials.sample import grain_sample

        return grain_sample(sim.seed, sim.extent_um)[0], []
    from pymmcore_plus.experimental.simulate import Point, RenderConfig, Sample

    objs = sample_objects(sim)
    points = [Point(x, y, intensity=round(200 * i), radius=r) for x, y, r, i in objs]
    sample = Sample(points, config=RenderConfig(random_seed=sim.seed))
    return sample, objs


def count_check(
    objects: list[tuple[float, float, float, float]],
    frames: list[tuple[tuple[float, float], float, tuple[int, int], int]],
) -> dict[str, float]:
    """Compare per-frame counts of objects clear of the edge with the simulated truth.

    ``frames`` holds (stage xy µm, pixel size µm, (height, width), detected count of
    objects not touching the edge). Objects cut by the field's border are excluded from
    both sides: whether a sliver is detected is not a segmentation error.
    """
    if not frames:
        return {}
    truth, found = [], []
    for (sx, sy), px, (h, w), detected in frames:
        hw, hh = w * px / 2, h * px / 2
        n = sum(1 for x, y, r, _ in objects if abs(x - sx) + r < hw and abs(y - sy) + r < hh)
        truth.append(n)
        found.append(detected)
    t, f = np.array(truth, float), np.array(found, float)
    return {
        "frames": float(len(frames)),
        "true_objects_per_frame": float(t.mean()),
        "detected_objects_per_frame": float(f.mean()),
        "mean_abs_count_error": float(np.abs(f - t).mean()),
        "frames_exact": float(np.mean(f == t)),
    }
