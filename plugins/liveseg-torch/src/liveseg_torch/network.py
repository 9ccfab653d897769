"""The network: a small U-Net working at half resolution, sized for a CPU.

A stride-2 stem halves the frame at once (nuclei are 10-40 px across, so half resolution
keeps enough detail), then three or four levels of 3x3 convolutions with ``c``, ``2c``,
``4c`` (and ``8c``) channels follow, and the two output maps are upsampled bilinearly to
full resolution. No normalisation layers in a saved network: the input is
percentile-normalised, and batch statistics would make fine-tuning on a handful of crops
unstable. Pretraining may put BatchNorm after each convolution (``batch_norm=True``,
``pretrain --batch-norm``): it converges about four times faster, but ends at the same
accuracy after the full 12 000 steps (``docs/model-experiments.md``).
:func:`fold_batch_norm` folds the statistics into the convolutions, and checkpoints are
always saved folded, so inference and fine-tuning never see BatchNorm.

An optional fourth level (``levels=4``) works at 1/16 of the frame: it widens the
receptive field to whole crowded neighbourhoods and holds most of the parameters, but
costs little time because its maps are tiny. It did not raise AP@0.5 on the hard sets
(``docs/model-experiments.md``), so the shipped weights use three levels. Measured on the
2-core dev VM at 512x512 (forward pass only; ``benchmarks/model_speed.py`` end to end):
3 levels, 143 k parameters, 86 ms on 1 thread / 36 ms on 2; 4 levels, 623 k parameters,
87 ms / 46 ms; 3 levels at ``c = 24`` (322 k) 139 ms / 68 ms.

``decoder`` (:data:`DECODERS`) chooses how the decoder joins the skips: ``concat`` (the
original U-Net, the default, so checkpoints saved before the field load unchanged) or
``add`` (additive skips, about 0.65x the multiply-adds; ``benchmarks/model_speed.py``'s
``decoder_variants`` times both).

``full_res_head=True`` adds a light refinement head at full resolution for objects
thinner than the half-resolution maps can draw (rods 3-8 px wide, the ``bacteria``
model): one 3x3 convolution of the input at full resolution (8 channels) plus a 1x1
projection of the last decoder features, upsampled; their sum goes through one more
3x3 convolution (8 channels) and the 1x1 output convolution, so the maps keep
one-pixel seams. It adds 784 parameters and ~10% of the multiply-adds (end to end with
its full-resolution decoding, ~75% of the plain network's frames/s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DECODERS", "OUTPUTS", "NetConfig", "UNetLite", "fold_batch_norm"]

OUTPUTS = ("foreground_logit", "distance_logit")
"""Output channels, in order."""

_FR = 8
"""Channels of the full-resolution head (``NetConfig.full_res_head``)."""

DECODERS = ("concat", "add")
"""How a decoder level joins the upsampled coarse features with the encoder's skip.

``concat`` (the original design; checkpoints without the field load as it): concatenate
both, then a 3x3 convolution over ``3x`` the skip's width. ``add``: a 1x1 projection of
the coarse features to the skip's width (at the coarse resolution, before upsampling, so
it is cheap), added to the skip, then a 3x3 convolution at the skip's width. The two 3x3
decoder convolutions at 1/2 and 1/4 resolution were more than half of the network's
multiply-adds; ``add`` cuts them to a third (about 1.66 -> 1.07 GMAC at 512x512).
"""


@dataclass(frozen=True)
class NetConfig:
    """Architecture hyperparameters stored inside every checkpoint."""

    channels: int = 16
    in_channels: int = 1
    out_channels: int = len(OUTPUTS)
    levels: int = 3
    batch_norm: bool = False  # pretraining only; checkpoints are folded (fold_batch_norm)
    decoder: str = "concat"  # how skips join the decoder: DECODERS
    full_res_head: bool = False  # full-resolution refinement head (thin objects, rods)

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.levels not in (3, 4):
            raise ValueError(f"levels must be 3 or 4, got {self.levels}")
        if self.channels < 1:
            raise ValueError(f"channels must be positive, got {self.channels}")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (what the checkpoint stores)."""
        return asdict(self)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return int(2**self.levels)


def _conv(cin: int, cout: int, stride: int = 1, bn: bool = False) -> nn.Sequential:
    norm = [nn.BatchNorm2d(cout)] if bn else []
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), *norm, nn.ReLU(inplace=True))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0)


class UNetLite(nn.Module):  # type: ignore[misc,unused-ignore]
    """Half-resolution U-Net returning ``(N, 2, H, W)`` logits for ``(N, 1, H, W)`` input."""

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or NetConfig()
        c, bn = cfg.channels, cfg.batch_norm
        self.stem = _conv(cfg.in_channels, c, 2, bn)  # H/2
        self.enc1 = _conv(c, c, 1, bn)
        self.down2 = _conv(c, 2 * c, 2, bn)  # H/4
        self.enc2 = _conv(2 * c, 2 * c, 1, bn)
        self.down3 = _conv(2 * c, 4 * c, 2, bn)  # H/8
        self.enc3 = nn.Sequential(_conv(4 * c, 4 * c, 1, bn), _conv(4 * c, 4 * c, 1, bn))
        # A decoder level's input: the skip (add) or skip + upsampled coarse (concat),
        # the coarse features being twice the skip's width. Layers are created in the
        # same order as the shipped weights were trained with (seeded initialisation).
        add = cfg.decoder == "add"
        width = (lambda skip: skip) if add else (lambda skip: 3 * skip)
        if cfg.levels == 4:
            self.down4 = _conv(4 * c, 8 * c, 2, bn)  # H/16
            self.enc4 = nn.Sequential(_conv(8 * c, 8 * c, 1, bn), _conv(8 * c, 8 * c, 1, bn))
            self.dec3 = _conv(width(4 * c), 4 * c, 1, bn)
            if add:
                self.proj3 = nn.Conv2d(8 * c, 4 * c, 1)
        if add:
            self.proj2 = nn.Conv2d(4 * c, 2 * c, 1)
            self.proj1 = nn.Conv2d(2 * c, c, 1)
        self.dec2 = _conv(width(2 * c), 2 * c, 1, bn)
        self.dec1 = _conv(width(c), c, 1, bn)
        if cfg.full_res_head:
            self.fr_in = _conv(cfg.in_channels, _FR, 1, bn)  # H, from the input
            self.fr_proj = nn.Conv2d(c, _FR, 1)  # H/2, from the decoder
            self.fr_mix = _conv(_FR, _FR, 1, bn)
            self.head = nn.Conv2d(_FR, cfg.out_channels, 1)
        else:
            self.head = nn.Conv2d(c, cfg.out_channels, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's resolution (H and W must be multiples of ``multiple``)."""
        a = self.enc1(self.stem(x))
        b = self.enc2(self.down2(a))
        z = self.enc3(self.down3(b))
        if self.config.levels == 4:
            z = self.dec3(self._join(self.enc4(self.down4(z)), z, 3))
        u = self.dec2(self._join(z, b, 2))
        u = self.dec1(self._join(u, a, 1))
        if self.config.full_res_head:
            up = F.interpolate(self.fr_proj(u), scale_factor=2.0, mode="bilinear")
            return self.head(self.fr_mix(F.relu(self.fr_in(x) + up)))
        return F.interpolate(self.head(u), scale_factor=2.0, mode="bilinear", align_corners=False)

    def _join(self, coarse: torch.Tensor, skip: torch.Tensor, level: int) -> torch.Tensor:
        """Upsampled coarse features joined with the skip of decoder ``level`` (DECODERS)."""
        if self.config.decoder == "add":
            return _up(getattr(self, f"proj{level}")(coarse)) + skip
        return torch.cat([_up(coarse), skip], 1)


def fold_batch_norm(model: UNetLite) -> UNetLite:
    """The same function as ``model`` in eval mode, as a network without BatchNorm.

    Each BatchNorm's running statistics and affine parameters are folded into the
    convolution before it. A network without BatchNorm is returned unchanged.
    """
    if not model.config.batch_norm:
        return model
    plain = UNetLite(replace(model.config, batch_norm=False))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for name, block in model.named_modules():
            if isinstance(block, nn.Sequential) and isinstance(block[1], nn.BatchNorm2d):
                conv, bn = block[0], block[1]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                state[f"{name}.0.weight"] = conv.weight * scale.view(-1, 1, 1, 1)
                state[f"{name}.0.bias"] = (conv.bias - bn.running_mean) * scale + bn.bias
    plain.load_state_dict({k: state[k] for k in plain.state_dict()})
    plain.eval()
    return plain
