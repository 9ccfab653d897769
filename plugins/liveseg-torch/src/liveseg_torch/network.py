"""The network: a small U-Net working at half resolution, sized for a CPU.

A stride-2 stem halves the frame at once (nuclei are 10-40 px across, so half resolution
keeps enough detail), then three or four levels of 3x3 convolutions with ``c``, ``2c``,
``4c`` (and ``8c``) channels follow, and the two output maps are upsampled bilinearly to
full resolution. No normalisation layers: the input is percentile-normalised, and batch
statistics would make fine-tuning on a handful of crops unstable.

An optional fourth level (``levels=4``) works at 1/16 of the frame: it widens the
receptive field to whole crowded neighbourhoods and holds most of the parameters, but
costs little time because its maps are tiny. It did not raise AP@0.5 on the hard sets
(``docs/model-experiments.md``), so the shipped weights use three levels. Measured on the
2-core dev VM at 512x512 (forward pass only; ``benchmarks/model_speed.py`` end to end):
3 levels, 143 k parameters, 86 ms on 1 thread / 36 ms on 2; 4 levels, 623 k parameters,
87 ms / 46 ms; 3 levels at ``c = 24`` (322 k) 139 ms / 68 ms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OUTPUTS", "NetConfig", "UNetLite"]

OUTPUTS = ("foreground_logit", "distance_logit")
"""Output channels, in order."""


@dataclass(frozen=True)
class NetConfig:
    """Architecture hyperparameters stored inside every checkpoint."""

    channels: int = 16
    in_channels: int = 1
    out_channels: int = len(OUTPUTS)
    levels: int = 3

    def __post_init__(self) -> None:
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


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU(inplace=True))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0)


class UNetLite(nn.Module):  # type: ignore[misc,unused-ignore]
    """Half-resolution U-Net returning ``(N, 2, H, W)`` logits for ``(N, 1, H, W)`` input."""

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or NetConfig()
        c = cfg.channels
        self.stem = _conv(cfg.in_channels, c, 2)  # H/2
        self.enc1 = _conv(c, c)
        self.down2 = _conv(c, 2 * c, 2)  # H/4
        self.enc2 = _conv(2 * c, 2 * c)
        self.down3 = _conv(2 * c, 4 * c, 2)  # H/8
        self.enc3 = nn.Sequential(_conv(4 * c, 4 * c), _conv(4 * c, 4 * c))
        if cfg.levels == 4:
            self.down4 = _conv(4 * c, 8 * c, 2)  # H/16
            self.enc4 = nn.Sequential(_conv(8 * c, 8 * c), _conv(8 * c, 8 * c))
            self.dec3 = _conv(12 * c, 4 * c)
        self.dec2 = _conv(6 * c, 2 * c)
        self.dec1 = _conv(3 * c, c)
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
            q = self.enc4(self.down4(z))
            z = self.dec3(torch.cat([_up(q), z], 1))
        u = self.dec2(torch.cat([_up(z), b], 1))
        u = self.dec1(torch.cat([_up(u), a], 1))
        return F.interpolate(self.head(u), scale_factor=2.0, mode="bilinear", align_corners=False)
