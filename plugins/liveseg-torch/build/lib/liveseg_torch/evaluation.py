"""Accuracy on synthetic sets: the numbers the model card and benchmarks report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.metrics import aggregate, average_precision

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["DATASETS", "dataset", "score"]

DATASETS: dict[str, dict[str, Any]] = {
    # Frames the pretraining draws from (seed 0) -- never evaluated on.
    "train": {"style": "train", "seed": 0, "shape": (256, 256)},
    # Same style, other seed: picks the decoding thresholds after training.
    "val": {"style": "train", "seed": 1, "n": 16, "shape": (256, 256)},
    # Hard style, its own seed: compares architectures and training runs, so that the
    # test set below is never used to choose between them.
    "val_hard": {"style": "test_hard", "seed": 3, "n": 16, "shape": (256, 256)},
    # Held out: other seed and harder settings (dense, touching, noisier).
    "test_hard": {"style": "test_hard", "seed": 2, "n": 24, "shape": (256, 256)},
}
"""Named synthetic sets; seeds are disjoint (see :func:`liveseg.synthetic.iter_dataset`)."""


def dataset(name: str, n: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frames and labels of a named set (``n`` overrides its size)."""
    from liveseg.synthetic import iter_dataset

    spec = DATASETS[name]
    count = int(n if n is not None else spec.get("n", 16))
    return list(iter_dataset(count, spec["seed"], spec["shape"], spec["style"]))


def score(
    segment: Callable[[np.ndarray], np.ndarray],
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    thresholds: Sequence[float] = (0.5, 0.75, 0.9),
) -> dict[str, Any]:
    """Pooled AP / precision / recall / matched IoU of ``segment`` over ``pairs``."""
    results = [average_precision(lab, segment(img), thresholds) for img, lab in pairs]
    out = aggregate(results).as_dict()
    out["mean_image_ap@0.5"] = float(np.mean([r.ap[thresholds[0]] for r in results]))
    out["frames"] = len(pairs)
    return out
