"""The training loop shared by pretraining and fine-tuning.

Samples are normalised once, targets computed once; each step draws random crops with
flips / 90-degree rotations and a mild intensity jitter. The loss is a masked sum of a
binary cross-entropy on the foreground and a mean squared error on the normalised
distance; pixels outside an item's ``valid`` region (and padding) weigh zero. For the
``foreground+interior`` representation (thin rods) the second map is the interior and
its loss is a binary cross-entropy too (``INTERIOR_WEIGHT``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from liveseg_torch.inference import prepare_image
from liveseg_torch.representation import FG_INTERIOR, NORMDIST, interior_targets, targets

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from liveseg_torch.network import UNetLite

__all__ = [
    "DISTANCE_WEIGHT",
    "INTERIOR_WEIGHT",
    "Sample",
    "make_sample",
    "masked_loss",
    "train_steps",
]

DISTANCE_WEIGHT = 2.0
"""Weight of the distance MSE relative to the foreground BCE."""

INTERIOR_WEIGHT = 2.0
"""Weight of the interior BCE relative to the foreground BCE (``foreground+interior``)."""


@dataclass(frozen=True)
class Sample:
    """A training image ready for cropping: normalised input, targets, valid mask."""

    image: np.ndarray  # float32, normalised
    foreground: np.ndarray  # float32 0/1
    distance: np.ndarray  # float32 0..1 (the interior map for FG_INTERIOR)
    valid: np.ndarray  # float32 0/1
    representation: str = NORMDIST


def make_sample(
    image: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    normalize: tuple[float, float] = (1.0, 99.8),
    representation: str = NORMDIST,
) -> Sample:
    """Normalise ``image`` and compute ``representation``'s targets from ``labels``."""
    img = prepare_image(image, *normalize)
    lab = np.asarray(labels)
    if lab.shape != img.shape:
        raise ValueError(f"labels shape {lab.shape} does not match image shape {img.shape}")
    fg, dist = interior_targets(lab) if representation == FG_INTERIOR else targets(lab)
    if valid is None:
        v = np.ones(img.shape, dtype=np.float32)
    else:
        if np.shape(valid) != img.shape:
            raise ValueError(f"valid shape {np.shape(valid)} does not match image {img.shape}")
        v = np.asarray(valid, dtype=bool).astype(np.float32)
    return Sample(img, fg, dist, v, representation)


def _crop(
    rng: np.random.Generator, s: Sample, size: int, jitter: bool, noise: float = 0.0
) -> np.ndarray:
    """A random augmented crop as a (4, size, size) array: image, fg, dist, valid.

    ``noise`` > 0: half the crops get extra Gaussian noise of a standard deviation drawn
    up to ``noise`` (in normalised units, 1 = the frame's 1-99.8 % range), so the network
    sees each frame at lower photon counts too.
    """
    stack = np.stack([s.image, s.foreground, s.distance, s.valid])
    h, w = stack.shape[1:]
    if h < size or w < size:  # pad small images; padding is invalid (valid = 0)
        stack = np.pad(stack, ((0, 0), (0, max(0, size - h)), (0, max(0, size - w))))
        h, w = stack.shape[1:]
    y0 = int(rng.integers(0, h - size + 1))
    x0 = int(rng.integers(0, w - size + 1))
    crop = stack[:, y0 : y0 + size, x0 : x0 + size]
    crop = np.rot90(crop, int(rng.integers(0, 4)), axes=(1, 2))
    if rng.random() < 0.5:
        crop = crop[:, :, ::-1]
    crop = np.array(crop, dtype=np.float32)
    if jitter:
        crop[0] = crop[0] * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
    if noise > 0 and rng.random() < 0.5:
        crop[0] += rng.normal(0.0, rng.uniform(0.0, noise), crop[0].shape).astype(np.float32)
    return crop


def masked_loss(
    logits: torch.Tensor, target: torch.Tensor, representation: str = NORMDIST
) -> torch.Tensor:
    """Loss of ``(N, 2, H, W)`` logits against ``(N, 3, H, W)`` fg / dist / valid targets."""
    fg, dist, valid = target[:, 0], target[:, 1], target[:, 2]
    denom = valid.sum().clamp_min(1.0)
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], fg, reduction="none")
    if representation == FG_INTERIOR:
        inner = F.binary_cross_entropy_with_logits(logits[:, 1], dist, reduction="none")
        return ((bce + INTERIOR_WEIGHT * inner) * valid).sum() / denom
    mse = (torch.sigmoid(logits[:, 1]) - dist) ** 2
    return ((bce + DISTANCE_WEIGHT * mse) * valid).sum() / denom


def train_steps(
    model: UNetLite,
    samples: Sequence[Sample],
    *,
    steps: int,
    batch_size: int,
    crop: int,
    learning_rate: float,
    seed: int,
    jitter: bool = True,
    noise: float = 0.0,
    warmup: int = 50,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place for ``steps`` Adam steps (cosine decay); return losses.

    Deterministic for a given ``seed`` and thread count: crops come from a numpy
    generator seeded with ``seed`` and no stochastic layer exists. ``noise``: see
    :func:`_crop` (0: none, the draws of earlier runs unchanged).
    """
    if not samples:
        raise ValueError("no training samples")
    m = model.config.multiple
    crop = -(-int(crop) // m) * m  # the network needs sides that are multiples of m
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.train()
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)

    def lr_at(i: int) -> float:
        if i < warmup:
            return learning_rate * (i + 1) / warmup
        frac = (i - warmup) / max(1, steps - warmup)
        return float(learning_rate * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * frac))))

    losses: list[float] = []
    for i in range(steps):
        idx = rng.integers(0, len(samples), size=batch_size)
        batch = np.stack([_crop(rng, samples[j], crop, jitter, noise) for j in idx])
        x = torch.from_numpy(batch[:, :1]).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(batch[:, 1:])
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        loss = masked_loss(model(x), y, samples[0].representation)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        losses.append(value)
        if on_step is not None:
            on_step(i, value)
    model.eval()
    return losses


def evaluate_loss(model: UNetLite, samples: Sequence[Sample]) -> float:
    """Mean masked loss over whole samples (padded to the network's multiple)."""
    if not samples:
        return float("nan")
    m = model.config.multiple
    total = 0.0
    model.eval()
    with torch.inference_mode():
        for s in samples:
            h, w = s.image.shape
            ph, pw = (-h) % m, (-w) % m
            stack = np.stack([s.image, s.foreground, s.distance, s.valid])
            stack = np.pad(stack, ((0, 0), (0, ph), (0, pw)))
            x = torch.from_numpy(stack[None, :1].copy())
            y = torch.from_numpy(stack[None, 1:].copy())
            total += float(masked_loss(model(x), y, s.representation))
    return total / len(samples)
