"""Fine-tuning: lowers the loss, changes the output, respects valid masks, is seeded."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from liveseg.synthetic import generate
from liveseg.types import TrainItem
from liveseg_torch.finetune import finetune
from liveseg_torch.inference import Predictor
from liveseg_torch.train import evaluate_loss, make_sample
from liveseg_torch.weights import load_checkpoint


def _items(n=4, style="inverted"):
    # A shifted domain (dark nuclei on a bright background) the base model handles badly.
    return [
        TrainItem(*generate(500 + i, (128, 128), style, density=(10.0, 10.0)), name=f"i{i}")
        for i in range(n)
    ]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, default_ckpt_path):
    torch.set_num_threads(1)
    before = _digest(default_ckpt_path)
    items = _items()
    result = finetune(
        default_ckpt_path,
        items,
        tmp_path_factory.mktemp("ft"),
        epochs=6,
        learning_rate=3e-3,
        seed=7,
        val_items=items[:2],
        progress=False,
    )
    assert _digest(default_ckpt_path) == before  # base never written
    return result, items


def test_finetune_lowers_loss_and_changes_output(small_run, default_ckpt_path):
    result, items = small_run
    base = load_checkpoint(default_ckpt_path)
    tuned = load_checkpoint(result.weights_path)
    samples = [make_sample(it.image, it.labels) for it in items]
    assert evaluate_loss(tuned.model, samples) < 0.8 * evaluate_loss(base.model, samples)
    assert result.val_losses[-1] < result.hyperparameters["val_loss_before"]
    assert len(result.train_losses) == result.epochs == 6
    img = items[0].image
    p_base, _ = Predictor(base, device="cpu").maps(img)
    p_tuned, _ = Predictor(tuned, device="cpu").maps(img)
    assert np.mean(np.abs(p_base - p_tuned)) > 0.01


def test_finetune_writes_card(small_run):
    result, items = small_run
    from pathlib import Path

    card = json.loads((Path(result.weights_path).parent / "model.json").read_text())
    assert card["backend"] == "unet"
    assert Path(result.weights_path).name == card["weights"]
    assert len(card["training_items"]) == len(items)
    assert card["hyperparameters"]["seed"] == 7
    assert card["train_losses"] == list(result.train_losses)


def test_finetune_is_deterministic(tmp_path, default_ckpt_path):
    torch.set_num_threads(1)
    items = _items(2)
    a = finetune(default_ckpt_path, items, tmp_path / "a", epochs=2, seed=3, progress=False)
    b = finetune(default_ckpt_path, items, tmp_path / "b", epochs=2, seed=3, progress=False)
    c = finetune(default_ckpt_path, items, tmp_path / "c", epochs=2, seed=4, progress=False)
    sa = load_checkpoint(a.weights_path).model.state_dict()
    sb = load_checkpoint(b.weights_path).model.state_dict()
    sc = load_checkpoint(c.weights_path).model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_invalid_pixels_do_not_count(tmp_path, default_ckpt_path):
    """Labels outside the valid region must not change what is learned (bit for bit)."""
    torch.set_num_threads(1)
    img, lab = generate(42, (128, 128), "inverted", density=(12.0, 12.0))
    left = lab.copy()
    left[:, 60:] = 0  # objects end at column 60 in every variant: same targets on the left
    valid = np.zeros(lab.shape, bool)
    valid[:, :62] = True
    junk = left.copy()
    rng = np.random.default_rng(0)
    junk[:, 64:] = rng.integers(0, 3, size=(128, 64)) * (int(lab.max()) + 1)
    changed = left.copy()
    changed[changed == np.unique(left)[1]] = 0  # a control: one valid object removed
    kw = {"epochs": 2, "seed": 1, "progress": False}
    runs = {}
    for name, labels in {"left": left, "junk": junk, "changed": changed}.items():
        res = finetune(default_ckpt_path, [TrainItem(img, labels, valid)], tmp_path / name, **kw)
        runs[name] = load_checkpoint(res.weights_path).model.state_dict()
    assert all(torch.equal(runs["left"][k], runs["junk"][k]) for k in runs["left"])
    assert not all(torch.equal(runs["left"][k], runs["changed"][k]) for k in runs["left"])


def test_refuses_bad_arguments(tmp_path, default_ckpt_path):
    with pytest.raises(ValueError, match="epochs"):
        finetune(default_ckpt_path, _items(1), tmp_path, epochs=0, progress=False)
    with pytest.raises(ValueError, match="at least one"):
        finetune(default_ckpt_path, [], tmp_path, epochs=1, progress=False)
