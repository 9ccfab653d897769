"""The default chain: what runs when a config names no pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveseg.config import StepConfig

if TYPE_CHECKING:
    from collections.abc import Container

__all__ = ["CLASSICAL_STEPS", "default_steps"]

CLASSICAL_STEPS: tuple[StepConfig, ...] = (
    StepConfig(backend="normalize"),
    StepConfig(backend="threshold"),
    StepConfig(backend="size_filter", params={"min_area": 15}),
)


def default_steps(available: Container[str]) -> list[StepConfig]:
    """The shipped default model (``unet``) when installed, else the classical chain."""
    if "unet" in available:
        return [
            StepConfig(backend="unet", params={"model": "default"}),
            StepConfig(backend="size_filter", params={"min_area": 15}),
        ]
    return list(CLASSICAL_STEPS)
