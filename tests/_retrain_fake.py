"""A tiny trainable backend for retraining tests: one threshold learnt from labels.

Weights are JSON (``{"level": 0.6}``): the backend normalises the image to its 1-99.8
percentiles and labels connected components above ``level``. The trainer grid-searches
the level that maximises AP@0.5 on the training items, so "fine-tuning" really adapts the
model to the data it is given.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import ndimage as ndi

from liveseg import hookimpl
from liveseg.metrics import aggregate, average_precision
from liveseg.models import resolve_model
from liveseg.types import LABEL_DTYPE, FinetuneResult, FrameResult, input_image


def level_segment(image: np.ndarray, level: float) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, (1, 99.8))
    norm = (img - lo) / max(hi - lo, 1e-9)
    labels, _ = ndi.label(ndi.gaussian_filter(norm, 1.0) > level)
    return labels.astype(LABEL_DTYPE)


class LevelBackend:
    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str = "level@prod"

    def __init__(self, params, context):
        mv = resolve_model(params.model, context.home)
        self.level = float(json.loads(mv.weights_path.read_text())["level"])

    def segment(self, frame, upstream):
        return FrameResult(labels=level_segment(input_image(frame, upstream), self.level))

    def close(self):
        pass


def _score(items, level):
    return aggregate(
        average_precision(it.labels, level_segment(it.image, level), (0.5,)) for it in items
    ).ap[0.5]


def finetune(
    base_weights,
    items,
    out_dir,
    *,
    epochs,
    learning_rate=None,
    seed=0,
    val_items=(),
    progress=True,
):
    t0 = time.perf_counter()
    base = float(json.loads(Path(base_weights).read_text())["level"])
    grid = np.linspace(0.05, 0.95, max(epochs, 2))
    train_losses, val_losses, best = [], [], (_score(items, base), base)
    for level in grid:  # one "epoch" per candidate level
        s = _score(items, level)
        best = max(best, (s, float(level)))
        train_losses.append(1.0 - best[0])
        if val_items:
            val_losses.append(1.0 - _score(val_items, best[1]))
    out = Path(out_dir) / "weights.json"
    out.write_text(json.dumps({"level": best[1]}))
    return FinetuneResult(
        weights_path=str(out),
        train_losses=tuple(train_losses),
        val_losses=tuple(val_losses),
        epochs=epochs,
        seconds=time.perf_counter() - t0,
        hyperparameters={"grid": len(grid)},
    )


def worsen(
    base_weights,
    items,
    out_dir,
    *,
    epochs,
    learning_rate=None,
    seed=0,
    val_items=(),
    progress=True,
):
    """A trainer that makes the model worse (to test that it is not promoted)."""
    out = Path(out_dir) / "weights.json"
    out.write_text(json.dumps({"level": 0.99}))
    return FinetuneResult(weights_path=str(out), train_losses=(1.0,), epochs=1)


class LevelPlugin:
    def __init__(self, trainer=finetune):
        self.trainer = trainer

    @hookimpl
    def register_backends(self, register):
        register("level", LevelBackend)

    @hookimpl
    def register_trainers(self, register):
        register("level", self.trainer)
