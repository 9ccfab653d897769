"""Entry point module (group ``liveseg``): registers the ``cellpose`` backend and trainer."""

from __future__ import annotations

from typing import Any

from liveseg.hookspecs import Register, hookimpl
from liveseg_cellpose import __version__
from liveseg_cellpose.backend import CellposeBackend

__all__ = ["__version__", "register_backends", "register_trainers"]


def _finetune(*args: Any, **kwargs: Any) -> Any:
    """Lazy door to :func:`liveseg_cellpose.finetune.finetune` (imports torch on call)."""
    from liveseg_cellpose.finetune import finetune

    return finetune(*args, **kwargs)


_finetune.__doc__ = "Fine-tune a Cellpose-SAM model (see liveseg_cellpose.finetune.finetune)."


@hookimpl
def register_backends(register: Register) -> None:
    """Register ``cellpose`` (Cellpose-SAM instance segmentation)."""
    register("cellpose", CellposeBackend)


@hookimpl
def register_trainers(register: Register) -> None:
    """Register the ``cellpose`` trainer used by the retraining loop."""
    register("cellpose", _finetune)
