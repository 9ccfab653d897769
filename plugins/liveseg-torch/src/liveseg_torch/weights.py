"""Checkpoint files: what they hold, how to save them, and loading with clear errors.

A checkpoint is a plain ``dict`` saved with :func:`torch.save` and read back with
``torch.load(path, weights_only=True)`` (no pickled code ever runs)::

    {"format": "liveseg-torch/unet", "format_version": 1,
     "arch": {...NetConfig...}, "representation": "foreground+normdist",
     "normalize": {"low": 1.0, "high": 99.8}, "decode": {...defaults...},
     "state_dict": {name: tensor}}

Tensors are float32, or float16 for weights stored at half size (``weights_dtype``
``float16``): they load into the float32 network, which then computes as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from liveseg.errors import ModelError
from liveseg_torch.network import NetConfig, UNetLite, fold_batch_norm
from liveseg_torch.representation import NORMDIST, REPRESENTATIONS

__all__ = [
    "DEFAULT_CARD",
    "FORMAT",
    "Checkpoint",
    "default_weights_path",
    "load_checkpoint",
    "save_checkpoint",
    "store_half",
]

FORMAT = "liveseg-torch/unet"
FORMAT_VERSION = 1
REPRESENTATION = NORMDIST
"""The representation of checkpoints that name none (all before ``foreground+interior``)."""
DEFAULT_CARD = "model.json"
_REGENERATE = "regenerate the default with `python -m liveseg_torch.pretrain --out DIR`"


def default_weights_path() -> Path:
    """The shipped weights inside the installed package."""
    return Path(str(resources.files("liveseg_torch") / "weights" / "default.pt"))


@dataclass
class Checkpoint:
    """A loaded (or about to be saved) model with its settings."""

    model: UNetLite
    normalize: dict[str, float] = field(default_factory=lambda: {"low": 1.0, "high": 99.8})
    decode: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    representation: str = REPRESENTATION
    weights_dtype: str = "float32"
    """How the file stores the weights: ``float32``, or ``float16`` (half the size)."""


def store_half(ckpt: Checkpoint) -> Checkpoint:
    """Mark ``ckpt`` to be saved as float16 and round its weights to match, in place.

    The network keeps float32 tensors holding float16 values: what the saved file will
    load as, so scores measured after this are the scores of the file.
    """
    with torch.no_grad():
        for tensor in ckpt.model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    ckpt.weights_dtype = "float16"
    return ckpt


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` to ``path`` (parents created) and return the path.

    A network trained with BatchNorm is saved folded (:func:`fold_batch_norm`); with
    ``ckpt.weights_dtype`` ``float16`` the weights are stored at half size.
    """
    if ckpt.weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights_dtype must be float32 or float16, not {ckpt.weights_dtype!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = fold_batch_norm(ckpt.model)
    dtype = torch.float16 if ckpt.weights_dtype == "float16" else torch.float32
    state = {
        k: v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu().clone()
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": model.config.as_dict(),
        "representation": ckpt.representation,
        "normalize": dict(ckpt.normalize),
        "decode": dict(ckpt.decode),
        "meta": json.loads(json.dumps(ckpt.meta)),  # plain JSON types only
        "state_dict": state,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True``).

    Raises
    ------
    liveseg.errors.ModelError
        When the file is missing, unreadable, corrupt, or not a liveseg-torch checkpoint;
        the message names the file, what is wrong and how to fix it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"weights file {str(path)!r} does not exist. Pass model='default' for the "
            f"shipped weights, a path to a .pt file, or a registry spec like 'nuclei@prod'."
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"weights file {str(path)!r} is corrupt or not a torch checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            f"Re-copy the file, re-run the fine-tuning that made it, or {_REGENERATE}."
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ModelError(
            f"weights file {str(path)!r} is not a liveseg-torch unet checkpoint "
            f"(format {found!r}, expected {FORMAT!r}). Was it made for another backend "
            f"(e.g. cellpose)? Use that backend, or {_REGENERATE}."
        )
    if int(raw.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"weights file {str(path)!r} has format version {raw.get('format_version')}, "
            f"newer than this liveseg-torch understands ({FORMAT_VERSION}); upgrade "
            f"liveseg-torch."
        )
    representation = str(raw.get("representation", REPRESENTATION))
    if representation not in REPRESENTATIONS:
        raise ModelError(
            f"weights file {str(path)!r} uses the representation {representation!r}, which "
            f"this liveseg-torch does not know ({', '.join(REPRESENTATIONS)}); upgrade "
            f"liveseg-torch."
        )
    try:
        config = NetConfig(**raw["arch"])
        model = UNetLite(config)
        stored = raw["state_dict"]
        half = any(v.dtype == torch.float16 for v in stored.values())
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
        )
    except Exception as exc:
        raise ModelError(
            f"weights file {str(path)!r} does not fit the liveseg-torch network "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}). The file is damaged or "
            f"from an incompatible version; {_REGENERATE}."
        ) from exc
    model.eval()
    return Checkpoint(
        model=model,
        normalize={k: float(v) for k, v in dict(raw.get("normalize", {})).items()}
        or {"low": 1.0, "high": 99.8},
        decode={k: float(v) for k, v in dict(raw.get("decode", {})).items()},
        meta=dict(raw.get("meta", {})),
        path=path,
        representation=representation,
        weights_dtype="float16" if half else "float32",
    )
