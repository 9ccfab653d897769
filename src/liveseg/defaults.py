"""The default chain: what runs when a config names no pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveseg.config import StepConfig

if TYPE_CHECKING:
    from collections.abc import Container, Mapping

    from liveseg.plugins import RegisteredModel

__all__ = ["CLASSICAL_STEPS", "default_steps"]

CLASSICAL_STEPS: tuple[StepConfig, ...] = (
    StepConfig(backend="normalize"),
    StepConfig(backend="threshold"),
    StepConfig(backend="size_filter", params={"min_area": 15}),
)


def default_steps(
    available: Container[str], models: Mapping[str, RegisteredModel] | None = None
) -> list[StepConfig]:
    """The model a plugin ships as ``default`` when its backend is installed, else classical.

    ``models`` are the shipped models of the run's plugin host (``host.models()``); without
    it the default discovery is asked (:func:`liveseg.plugins.shipped_models`). The core
    names no plugin: whichever plugin registers ``default`` through ``register_models``
    (liveseg-torch does) provides the chain, run as ``backend(model=default)`` followed
    by the built-in size filter.
    """
    if models is None:
        from liveseg.plugins import shipped_models

        models = shipped_models().entries()
    entry = models.get("default")
    backend = entry.backend() if entry is not None else ""
    if backend and backend in available:
        return [
            StepConfig(backend=backend, params={"model": "default"}),
            StepConfig(backend="size_filter", params={"min_area": 15}),
        ]
    return list(CLASSICAL_STEPS)
