"""Fine-tune a Cellpose-SAM model with ``cellpose.train.train_seg``.

The retraining loop calls :func:`finetune` for every backend the same way. What this
adds to a plain ``train_seg`` call, and why:

* **Valid regions.** ``train_seg`` has no pixel mask or weight: label 0 always teaches
  "background". An operator who corrected only part of a frame must not teach the model
  that everything else is empty. Each item is cropped to its valid region (plus context),
  its flows are computed from the full labels, and pixels outside ``valid`` get a
  cell-probability target of ``-1e4``. While ``train_seg`` runs, cellpose's loss
  (``cellpose.train._loss_fn_seg``) is replaced by one that drops every pixel whose
  (rotated, resized) target is negative; with everything valid it equals cellpose's loss.
* **Defaults that do not backfire.** Learning rate 1e-5 and weight decay 0.1 (cellpose's
  recommendation for Cellpose-SAM), images without objects are kept (they teach "nothing
  here" only where the operator said so), and the masked loss on validation items (or on
  the training items when there are none) is measured before and after training, so the
  registry's promotion step can refuse a model that got worse.
* **The base is never touched.** Weights are written to ``out_dir/weights.pt`` (a
  state dict cellpose and the ``cellpose`` backend load) with ``out_dir/model.json``; the
  base file's SHA-256 is checked unchanged afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
import warnings
from importlib.metadata import version as _version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import ModelError
from liveseg.types import FinetuneResult, TrainItem

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import torch

__all__ = ["DEFAULT_LEARNING_RATE", "INVALID", "finetune", "masked_seg_loss"]

log = logging.getLogger("liveseg.cellpose.train")

DEFAULT_LEARNING_RATE = 1e-5
"""cellpose's recommended fine-tuning rate for Cellpose-SAM; higher rates blank masks."""
INVALID = -1e4
"""Cell-probability target of pixels outside an item's valid region (see module doc)."""
WEIGHTS_NAME = "weights.pt"
_CONTEXT_PX = 32  # image context kept around a valid region's bounding box
_LOSS_LOCK = threading.Lock()


def masked_seg_loss(lbl: torch.Tensor, y: torch.Tensor, device: Any = None) -> torch.Tensor:
    """Cellpose's segmentation loss restricted to pixels whose target is valid.

    ``lbl`` is ``[B, 3, H, W]`` (cell probability, Y flow, X flow) as ``train_seg`` builds
    it, ``y`` the network output. Pixels with a negative cell-probability target (see
    :data:`INVALID`) do not contribute. With every pixel valid this equals
    ``cellpose.train._loss_fn_seg``: MSE of 5x the flows (halved) plus BCE of the
    probability.
    """
    import torch.nn.functional as F

    y = y.float()
    lbl = lbl.float()
    valid = (lbl[:, -3] >= 0).float()
    n = valid.sum().clamp_min(1.0)
    veci = 5.0 * lbl[:, -2:]
    mse = (((y[:, -3:-1] - veci) ** 2) * valid[:, None]).sum() / (2.0 * n) / 2.0
    target = (lbl[:, -3] > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(y[:, -1], target, reduction="none")
    return mse + (bce * valid).sum() / n


@contextlib.contextmanager
def _masked_loss() -> Iterator[None]:
    """Swap cellpose's loss for :func:`masked_seg_loss` while ``train_seg`` runs."""
    import cellpose.train as cp_train

    with _LOSS_LOCK:
        original = cp_train._loss_fn_seg
        cp_train._loss_fn_seg = masked_seg_loss
        try:
            yield
        finally:
            cp_train._loss_fn_seg = original


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _prepare_item(item: TrainItem, device: torch.device) -> tuple[np.ndarray, np.ndarray] | None:
    """Image (float32) and ``[4, H, W]`` flow targets cropped to the valid region.

    Returns ``None`` when no pixel is valid.
    """
    from cellpose import dynamics

    image = np.asarray(item.image, dtype=np.float32)
    labels = np.asarray(item.labels)
    if labels.shape != image.shape[-2:] and labels.shape != image.shape[:2]:
        raise ValueError(f"item {item.name!r}: labels {labels.shape} vs image {image.shape}")
    hw = labels.shape
    valid = np.ones(hw, bool) if item.valid is None else np.asarray(item.valid, bool)
    if valid.shape != hw:
        raise ValueError(f"item {item.name!r}: valid {valid.shape} vs labels {hw}")
    if not valid.any():
        return None
    flows = dynamics.labels_to_flows([labels.astype(np.int32, copy=True)], device=device)[0]
    flows[0][~valid] = 0
    flows[1][~valid] = INVALID
    flows[2:, ~valid] = 0
    rows, cols = np.nonzero(valid)
    r0 = max(0, int(rows.min()) - _CONTEXT_PX)
    r1 = min(hw[0], int(rows.max()) + 1 + _CONTEXT_PX)
    c0 = max(0, int(cols.min()) - _CONTEXT_PX)
    c1 = min(hw[1], int(cols.max()) + 1 + _CONTEXT_PX)
    if image.ndim == 3 and image.shape[:2] == hw:  # Y X C → C Y X as train_seg expects
        image = np.moveaxis(image, -1, 0)
    img = np.ascontiguousarray(image[..., r0:r1, c0:c1])
    return img, np.ascontiguousarray(flows[:, r0:r1, c0:c1])


def _loss_of(net: Any, data: Sequence[np.ndarray], flows: Sequence[np.ndarray]) -> float:
    """Mean masked loss of ``net`` on fixed (seeded) 256x256 views of the items."""
    import torch
    from cellpose import models as cp_models
    from cellpose import train as cp_train
    from cellpose.transforms import random_rotate_and_resize

    if not data:
        return float("nan")
    norm = {**cp_models.normalize_default, "normalize": True}
    imgs = cp_train._reshape_norm(list(data), normalize_params=norm)
    state = np.random.get_state()
    np.random.seed(1234)
    try:
        total = 0.0
        net.eval()
        for img, fl in zip(imgs, flows, strict=True):
            x, lbl = random_rotate_and_resize(
                [img], lbls=[fl[1:]], scale_range=0.0, bsize=256, device=net.device
            )[:2]
            with torch.no_grad():
                y = net(x.to(net.dtype))[0]
            total += float(masked_seg_loss(lbl, y))
    finally:
        np.random.set_state(state)
    return total / len(imgs)


class _Forward(logging.Handler):
    """Re-emit cellpose's training log lines on liveseg's logger (progress=True)."""

    def emit(self, record: logging.LogRecord) -> None:
        log.info("%s", record.getMessage())


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
    batch_size: int = 1,
    weight_decay: float = 0.1,
    device: str | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``base_weights`` on ``items``; write it under ``out_dir``.

    Parameters
    ----------
    base_weights
        The starting model: a weights file, or a cellpose name found in its cache
        (``cpsam``). Never modified.
    items
        Training images with instance labels and optional ``valid`` masks (pixels
        outside ``valid`` teach nothing).
    out_dir
        Receives ``weights.pt`` (loadable by ``CellposeModel(pretrained_model=…)`` and
        the ``cellpose`` step) and ``model.json``.
    epochs
        ``train_seg`` epochs; cellpose ramps the learning rate up over the first 10 and
        halves it over the last 50 of runs of 100+ (its recommendation is 100).
    learning_rate
        ``None`` → :data:`DEFAULT_LEARNING_RATE` (1e-5).
    seed
        Seeds torch and numpy (cellpose additionally reseeds numpy with the epoch index,
        so augmentations repeat across runs).
    val_items
        Held-out items; their masked loss before and after training is returned as
        ``val_losses = (base, fine_tuned)``. Without them the same is measured on the
        training items (a fit check, not a validation) and recorded as such.
    progress
        Forward cellpose's per-epoch log lines to the ``liveseg.cellpose.train`` logger.
    batch_size, weight_decay, device
        Passed to ``train_seg`` / :func:`liveseg_cellpose.net.select_device`.

    Returns
    -------
    FinetuneResult
        Weights path, per-epoch training losses, ``(base, final)`` validation losses.
    """
    import torch

    from liveseg_cellpose.net import import_cellpose, load_cellpose_model, select_device
    from liveseg_cellpose.weights import resolve_weights

    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    lr = DEFAULT_LEARNING_RATE if learning_rate is None else float(learning_rate)
    if not items:
        raise ValueError("finetune needs at least one training item")
    base_path = resolve_weights(str(base_weights), download=False)
    base_hash = _file_sha256(base_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / WEIGHTS_NAME
    if target.resolve() == base_path.resolve():
        raise ModelError(f"refusing to fine-tune {base_path} in place; choose another out_dir")
    if target.exists():
        raise ModelError(f"{out} already holds {WEIGHTS_NAME}; fine-tune into an empty directory")

    t_start = time.perf_counter()
    dev = select_device(device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    import_cellpose()
    from cellpose import train as cp_train

    prepared = [p for p in (_prepare_item(it, dev) for it in items) if p is not None]
    if not prepared:
        raise ValueError("no training item has any valid pixel")
    val_prepared = [p for p in (_prepare_item(it, dev) for it in val_items) if p is not None]
    check = val_prepared or prepared
    check_kind = "validation" if val_prepared else "training (no validation items)"
    data, flows = [p[0] for p in prepared], [p[1] for p in prepared]

    model = load_cellpose_model(base_path, dev, bfloat16=False)
    net = model.net
    loss_before = _loss_of(net, [c[0] for c in check], [c[1] for c in check])

    handler = _Forward() if progress else None
    train_log = logging.getLogger("cellpose.train")
    if handler is not None:
        train_log.addHandler(handler)
    staging = Path(tempfile.mkdtemp(prefix=".cellpose-train-", dir=out))
    try:
        with _masked_loss(), warnings.catch_warnings():
            # train_seg asks for float32 autocast, which torch refuses on CPU (and says so);
            # the network already is float32, so nothing is lost.
            warnings.filterwarnings(
                "ignore", message="In CPU autocast, but the target dtype is not supported"
            )
            saved, train_losses, _ = cp_train.train_seg(
                net,
                train_data=data,
                train_labels=flows,
                load_files=False,
                batch_size=batch_size,
                learning_rate=lr,
                n_epochs=epochs,
                weight_decay=weight_decay,
                normalize={"normalize": True},
                save_path=str(staging),
                save_every=max(epochs, 1),
                min_train_masks=0,
                model_name=WEIGHTS_NAME,
            )
        shutil.move(str(saved), target)
    finally:
        if handler is not None:
            train_log.removeHandler(handler)
        shutil.rmtree(staging, ignore_errors=True)
    loss_after = _loss_of(net, [c[0] for c in check], [c[1] for c in check])
    del model, net
    if _file_sha256(base_path) != base_hash:  # pragma: no cover - would be a cellpose bug
        raise ModelError(f"base weights {base_path} changed during fine-tuning")

    seconds = time.perf_counter() - t_start
    hyper = {
        "epochs": epochs,
        "learning_rate": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "seed": seed,
        "bsize": 256,
        "normalize": "percentile 1-99 per image (cellpose default)",
        "valid_regions": "masked loss; items cropped to valid bbox + 32 px context",
        "device": str(dev),
    }
    losses = tuple(float(v) for v in np.asarray(train_losses).ravel())
    improved = bool(loss_after < loss_before)
    card = {
        "backend": "cellpose",
        "weights": WEIGHTS_NAME,
        "base_model": str(base_weights),
        "base_weights": str(base_path),
        "base_weights_sha256": base_hash,
        "weights_sha256": _file_sha256(target),
        "hyperparameters": hyper,
        "train_losses": list(losses),
        "check_set": check_kind,
        "loss_base": loss_before,
        "loss_finetuned": loss_after,
        "improved": improved,
        "n_items": len(prepared),
        "n_val_items": len(val_prepared),
        "seconds": seconds,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "software": {"cellpose": _version("cellpose"), "torch": torch.__version__},
    }
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    if not improved:
        log.warning(
            "fine-tuned model's %s loss %.4f is not below the base model's %.4f; "
            "do not promote it without checking its masks",
            check_kind,
            loss_after,
            loss_before,
        )
    return FinetuneResult(
        weights_path=str(target),
        train_losses=losses,
        val_losses=(loss_before, loss_after),
        epochs=epochs,
        seconds=seconds,
        hyperparameters=hyper,
    )
