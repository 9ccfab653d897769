"""Fine-tuning API for the retraining loop (registered as the ``unet`` trainer).

It trains a *copy* of a checkpoint on corrected frames and writes the result (weights +
``model.json``) into a new directory; the base weights file is only read.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

import liveseg_torch
from liveseg.types import FinetuneResult, TrainItem
from liveseg_torch.train import evaluate_loss, make_sample, train_steps
from liveseg_torch.weights import (
    DEFAULT_CARD,
    default_weights_path,
    load_checkpoint,
    save_checkpoint,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["WEIGHTS_NAME", "finetune"]

WEIGHTS_NAME = "weights.pt"
"""File name of the fine-tuned weights inside ``out_dir``."""


def _resolve_base(base_weights: str | Path) -> Path:
    if str(base_weights) in ("default", ""):
        return default_weights_path()
    path = Path(base_weights).expanduser()
    if path.is_dir():
        for name in (WEIGHTS_NAME, "default.pt"):
            if (path / name).is_file():
                return path / name
    return path


def finetune(
    base_weights: str | Path,
    items: Sequence[TrainItem],
    out_dir: str | Path,
    *,
    epochs: int,
    learning_rate: float | None = None,
    seed: int = 0,
    val_items: Sequence[TrainItem] = (),
    progress: bool = True,
    batch_size: int = 8,
    crop: int = 128,
) -> FinetuneResult:
    """Fine-tune a copy of ``base_weights`` on ``items`` and save it under ``out_dir``.

    Parameters
    ----------
    base_weights : str or Path
        ``"default"`` (the shipped weights), a ``.pt`` file, or a model directory holding
        ``weights.pt``. Never modified.
    items : sequence of TrainItem
        Images with instance labels; pixels where ``valid`` is False do not count.
    out_dir : str or Path
        Receives ``weights.pt`` and ``model.json`` (created if missing).
    epochs : int
        Passes over the data; one epoch draws as many random crops of ``crop`` pixels as
        it takes to cover the items' total area once (at least one batch).
    learning_rate : float, optional
        Peak learning rate; default 1e-3 (a third of the pretraining rate).
    seed : int
        Seeds crops and augmentation: same inputs + seed + thread count -> same weights.
    val_items : sequence of TrainItem
        Scored (masked loss) after every epoch; not trained on.
    progress : bool
        Show a tqdm bar with the running loss.
    batch_size, crop : int
        Crops per step and crop side in pixels.

    Returns
    -------
    liveseg.types.FinetuneResult
        Weights path, per-epoch mean train loss and val loss (after each epoch; the loss
        before training is ``hyperparameters["val_loss_before"]``), timing and
        hyperparameters.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not items:
        raise ValueError("finetune needs at least one training item")
    t0 = time.perf_counter()
    lr = 1e-3 if learning_rate is None else float(learning_rate)
    base = _resolve_base(base_weights)
    ckpt = load_checkpoint(base)  # a fresh in-memory copy; the file is only read
    norm = (ckpt.normalize.get("low", 1.0), ckpt.normalize.get("high", 99.8))
    rep = ckpt.representation
    samples = [make_sample(it.image, it.labels, it.valid, norm, rep) for it in items]
    vals = [make_sample(it.image, it.labels, it.valid, norm, rep) for it in val_items]
    area = sum(s.image.size for s in samples)
    steps_per_epoch = max(1, math.ceil(area / (crop * crop) / batch_size))
    total = steps_per_epoch * epochs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / WEIGHTS_NAME
    if weights_path.resolve() == base.resolve():
        raise ValueError(f"out_dir {str(out)!r} holds the base weights; choose another")

    bar = tqdm(total=total, desc="fine-tuning", disable=not progress)
    step_losses: list[float] = []
    train_losses: list[float] = []
    val_losses: list[float] = []
    val_before = evaluate_loss(ckpt.model, vals) if vals else None
    # One cosine schedule over all epochs; train epoch by epoch to score val in between.
    rng_seed = np.random.SeedSequence(seed)
    for epoch in range(epochs):
        epoch_seed = int(rng_seed.spawn(1)[0].generate_state(1)[0])

        def on_step(i: int, loss: float, epoch: int = epoch) -> None:
            step_losses.append(loss)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")

        losses = train_steps(
            ckpt.model,
            samples,
            steps=steps_per_epoch,
            batch_size=batch_size,
            crop=crop,
            learning_rate=lr * (0.5 * (1 + math.cos(math.pi * epoch / epochs)) * 0.9 + 0.1),
            seed=epoch_seed,
            warmup=0,
            on_step=on_step,
        )
        train_losses.append(float(np.mean(losses)))
        if vals:
            val_losses.append(evaluate_loss(ckpt.model, vals))
    bar.close()

    seconds = time.perf_counter() - t0
    hyper: dict[str, Any] = {
        "epochs": epochs,
        "learning_rate": lr,
        "seed": seed,
        "batch_size": batch_size,
        "crop": crop,
        "steps": total,
        "threads": torch.get_num_threads(),
        "val_loss_before": val_before,
    }
    ckpt.meta = {
        **{k: v for k, v in ckpt.meta.items() if k != "card"},
        "parent": str(base),
        "finetune": hyper,
    }
    ckpt.weights_dtype = "float32"  # a fine-tuned clone keeps every update, even of half weights
    save_checkpoint(ckpt, weights_path)
    parent_card: dict[str, Any] = {}
    if (base.parent / DEFAULT_CARD).is_file():
        try:
            parent_card = json.loads((base.parent / DEFAULT_CARD).read_text())
        except (OSError, ValueError):
            parent_card = {}
    card = {
        "description": f"fine-tuned from {parent_card.get('name', base.name)}",
        "backend": "unet",
        "weights": WEIGHTS_NAME,
        "format": "liveseg-torch/unet",
        "version": liveseg_torch.__version__,
        "parent": str(base),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": parent_card.get("architecture", ckpt.model.config.as_dict()),
        "representation": parent_card.get("representation", {}),
        **({"step_params": parent_card["step_params"]} if "step_params" in parent_card else {}),
        "decode": ckpt.decode,
        "training_items": [
            {
                "name": it.name,
                "shape": list(np.shape(it.image)),
                "objects": int(len(np.unique(it.labels)) - (1 if (it.labels == 0).any() else 0)),
                "valid_fraction": float(np.mean(it.valid)) if it.valid is not None else 1.0,
            }
            for it in items
        ],
        "val_items": len(vals),
        "hyperparameters": hyper,
        "train_losses": train_losses,
        "val_losses": val_losses,
        "seconds": round(seconds, 2),
    }
    (out / DEFAULT_CARD).write_text(json.dumps(card, indent=2) + "\n")
    return FinetuneResult(
        weights_path=str(weights_path),
        train_losses=tuple(train_losses),
        val_losses=tuple(val_losses),
        epochs=epochs,
        seconds=seconds,
        hyperparameters=hyper,
    )
