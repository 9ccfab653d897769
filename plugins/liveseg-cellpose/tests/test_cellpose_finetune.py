"""Fine-tuning through cellpose.train.train_seg, valid-region masking, the model card."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from liveseg.errors import ModelError
from liveseg.pipeline import StepContext
from liveseg.types import FinetuneResult, Frame, TrainItem
from liveseg_cellpose.finetune import INVALID, finetune, masked_seg_loss


def _item(seed: int, valid: np.ndarray | None = None) -> TrainItem:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    labels = np.zeros((96, 96), np.uint32)
    image = rng.normal(0.1, 0.02, (96, 96)).astype(np.float32)
    for i, (cy, cx) in enumerate(rng.uniform(15, 81, (6, 2))):
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < 8**2
        labels[disk] = i + 1
        image[disk] += 1.0
    return TrainItem(image=image, labels=labels, valid=valid, name=f"item{seed}")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_masked_loss_equals_cellpose_loss_when_all_valid() -> None:
    import torch
    from cellpose.train import _loss_fn_seg

    g = torch.Generator().manual_seed(0)
    lbl = torch.rand(2, 3, 16, 16, generator=g)
    lbl[:, 0] = (lbl[:, 0] > 0.5).float()
    y = torch.randn(2, 3, 16, 16, generator=g)
    ours = masked_seg_loss(lbl, y)
    theirs = _loss_fn_seg(lbl, y, torch.device("cpu"))
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_pixels_outside_valid_teach_nothing() -> None:
    import torch

    g = torch.Generator().manual_seed(1)
    lbl = torch.rand(1, 3, 16, 16, generator=g)
    lbl[:, 0] = (lbl[:, 0] > 0.5).float()
    lbl[:, 0, :, 8:] = INVALID
    y = torch.randn(1, 3, 16, 16, generator=g, requires_grad=True)
    masked_seg_loss(lbl, y).backward()
    assert y.grad is not None
    assert torch.all(y.grad[..., 8:] == 0) and torch.any(y.grad[..., :8] != 0)
    other = lbl.clone()
    other[:, 1:, :, 8:] = 99.0  # garbage flow targets where invalid
    yd = y.detach()
    assert float(masked_seg_loss(other, yd)) == pytest.approx(float(masked_seg_loss(lbl, yd)))


@pytest.mark.slow
def test_finetune_writes_loadable_weights_and_card_and_keeps_base(
    tiny_weights: Path, tmp_path: Path
) -> None:
    base_hash = _sha(tiny_weights)
    valid = np.zeros((96, 96), bool)
    valid[:, :60] = True
    out = tmp_path / "ft"
    result = finetune(
        tiny_weights,
        [_item(0, valid), _item(1)],
        out,
        epochs=3,
        seed=5,
        val_items=[_item(2)],
        progress=False,
    )
    assert isinstance(result, FinetuneResult)
    assert _sha(tiny_weights) == base_hash
    weights = Path(result.weights_path)
    assert weights == out / "weights.pt" and weights.is_file()
    assert _sha(weights) != base_hash
    assert len(result.train_losses) == 3 and all(math.isfinite(v) for v in result.train_losses)
    assert len(result.val_losses) == 2 and all(math.isfinite(v) for v in result.val_losses)
    card = json.loads((out / "model.json").read_text())
    assert card["backend"] == "cellpose" and card["weights"] == "weights.pt"
    assert card["base_weights_sha256"] == base_hash
    assert card["hyperparameters"]["learning_rate"] == 1e-5
    assert card["hyperparameters"]["seed"] == 5 and card["train_losses"]
    assert card["check_set"] == "validation" and "created" in card
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "weights.pt"]

    # the cellpose step loads it (through CellposeModel) from the model directory
    from liveseg_cellpose.backend import CellposeBackend, CellposeParams

    step = CellposeBackend(
        CellposeParams(model=str(out), warmup=False), StepContext(home=tmp_path)
    )
    try:
        res = step.segment(Frame(index=0, image=_item(3).image), None)
        assert res.labels.shape == (96, 96)
    finally:
        step.close()


def test_finetune_refuses_items_without_valid_pixels_and_in_place(
    tiny_weights: Path, tmp_path: Path
) -> None:
    nothing = np.zeros((96, 96), bool)
    with pytest.raises(ValueError, match="no training item has any valid pixel"):
        finetune(tiny_weights, [_item(0, nothing)], tmp_path / "a", epochs=1, progress=False)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "weights.pt").write_bytes(tiny_weights.read_bytes())
    with pytest.raises(ModelError, match="in place"):
        finetune(occupied / "weights.pt", [_item(0)], occupied, epochs=1, progress=False)
    with pytest.raises(ModelError, match="already holds"):
        finetune(tiny_weights, [_item(0)], occupied, epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        finetune(tiny_weights, [_item(0)], tmp_path / "b", epochs=0)
