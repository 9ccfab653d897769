"""Build cellpose networks: device choice, loading a weights file, random networks.

``cellpose.models.CellposeModel`` always builds the full Cellpose-SAM encoder (SAM ViT-L,
~300M parameters) and then loads the file with ``strict=False``. Two consequences this
module handles:

* a file whose keys do not match is loaded *silently* with random weights left in place;
  :func:`load_cellpose_model` checks every network parameter came from the file;
* a CPSAM network with a smaller SAM encoder (ViT-B, or the tiny one the tests build)
  cannot be loaded at all. The encoder's size is read from the file's tensor shapes and
  cellpose's ViT-L builder is swapped for one of that size while cellpose constructs the
  network, so every file goes through cellpose's own constructor and ``eval``.

torch, cellpose and segment_anything are imported here, never by ``liveseg``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from liveseg.errors import ModelError

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from cellpose.models import CellposeModel

__all__ = [
    "ARCHITECTURES",
    "EncoderSpec",
    "import_cellpose",
    "load_cellpose_model",
    "save_random_weights",
    "select_device",
]

log = logging.getLogger("liveseg.cellpose")


@dataclass(frozen=True, slots=True)
class EncoderSpec:
    """Size of a SAM image encoder (the arguments of ``segment_anything._build_sam``)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]


ARCHITECTURES: Mapping[str, EncoderSpec] = {
    "vit_l": EncoderSpec(1024, 24, 16, (5, 11, 17, 23)),  # Cellpose-SAM (cpsam)
    "vit_b": EncoderSpec(768, 12, 12, (2, 5, 8, 11)),
    "tiny": EncoderSpec(32, 2, 2, (1,)),  # tests: a real CPSAM, a few ms per tile
}
"""Encoder sizes :func:`save_random_weights` can build; ``vit_l`` is cpsam's."""

_BUILD_LOCK = threading.Lock()
_QUIET_LOGGERS = ("cellpose.vit", "cellpose.models")


def import_cellpose() -> Any:
    """Import ``cellpose.models`` without its CPDINO warning on every session start.

    cellpose 4 logs "Could not import CPDINO …" when the optional ``dinov3`` package is
    absent; liveseg only loads CPSAM-style files (and says so if given a DINO one).
    """
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import cellpose.models as cp_models
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return cp_models


def select_device(requested: str | None) -> torch.device:
    """Pick the torch device: ``None``/``"auto"`` → CUDA, else MPS, else CPU.

    Raises
    ------
    ModelError
        An explicit device that does not exist here (e.g. ``cuda`` on a PC without a
        working CUDA build), so the session fails at start and not at the first frame.
    """
    import torch

    if requested is None or requested.strip().lower() in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested.strip())
    except (RuntimeError, ValueError) as exc:
        raise ModelError(
            f"invalid device {requested!r}: {exc}; use auto, cpu, cuda, cuda:N or mps"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {requested!r} requested but CUDA is not available "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
                "use device: cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelError(
                f"device {requested!r} requested but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {requested!r} requested but MPS is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"device {requested!r} is not supported; use auto, cpu, cuda[:N] or mps")
    return device


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise ModelError(
            f"cannot read cellpose weights {path}: {exc!r}. Is it a model saved by "
            "cellpose 4 (or liveseg fine-tuning)?"
        ) from exc
    if not isinstance(state, Mapping):
        raise ModelError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def infer_encoder(state: Mapping[str, Any], path: Path) -> EncoderSpec:
    """Read the SAM encoder's size from a CPSAM state dict's tensor shapes."""
    if "W2" not in state:
        raise ModelError(
            f"{path} is not a cellpose 4 model (no 'W2' tensor): cellpose 3 models and "
            "other networks cannot be loaded by Cellpose-SAM"
        )
    if "encoder.cls_token" in state:
        raise ModelError(
            f"{path} is a Cellpose-DINO (cpdino) model; liveseg supports the Cellpose-SAM "
            "architecture (cpsam and models fine-tuned from it)"
        )
    depth = 0
    while f"encoder.blocks.{depth}.attn.qkv.weight" in state:
        depth += 1
    if depth == 0:
        raise ModelError(f"{path} has no SAM encoder blocks; not a Cellpose-SAM model")
    embed_dim = int(state["encoder.blocks.0.attn.qkv.weight"].shape[1])
    head_dim = int(state["encoder.blocks.0.attn.rel_pos_h"].shape[1])
    # Global-attention blocks carry relative positions for the full 64x64 token grid
    # (127 rows); windowed ones for a 14x14 window (27 rows).
    global_idx = tuple(
        i for i in range(depth) if int(state[f"encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) > 27
    )
    return EncoderSpec(embed_dim, depth, embed_dim // head_dim, global_idx)


@contextlib.contextmanager
def _encoder_builder(spec: EncoderSpec) -> Iterator[None]:
    """Make cellpose's ``CPSAM()`` build a SAM encoder of size ``spec`` (lock held)."""
    import cellpose.vit as cp_vit
    from segment_anything.build_sam import _build_sam

    if spec == ARCHITECTURES["vit_l"]:
        yield
        return
    registry = cp_vit.sam_model_registry
    original = registry["vit_l"]

    def build(checkpoint: str | None = None) -> Any:
        return _build_sam(
            encoder_embed_dim=spec.embed_dim,
            encoder_depth=spec.depth,
            encoder_num_heads=spec.num_heads,
            encoder_global_attn_indexes=list(spec.global_attn_indexes),
            checkpoint=checkpoint,
        )

    registry["vit_l"] = build
    try:
        yield
    finally:
        registry["vit_l"] = original


def load_cellpose_model(
    path: Path, device: torch.device, *, bfloat16: bool = False
) -> CellposeModel:
    """Construct ``cellpose.models.CellposeModel`` from an existing weights file.

    Parameters
    ----------
    path
        A CPSAM-architecture state dict (cpsam, a cellpose fine-tune, or a liveseg one).
    device
        From :func:`select_device`.
    bfloat16
        Run the network in bfloat16 (cellpose's default; fast on GPUs, slow on most CPUs).

    Raises
    ------
    ModelError
        Unreadable file, not a cellpose 4 CPSAM model, or parameters missing from it.
    """
    state = _read_state_dict(path)
    spec = infer_encoder(state, path)
    cp_models = import_cellpose()
    import torch

    dtype = torch.bfloat16 if bfloat16 else torch.float32
    with _BUILD_LOCK, _encoder_builder(spec):
        try:
            model = cp_models.CellposeModel(
                pretrained_model=str(path), device=device, use_bfloat16=bfloat16
            )
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelError(f"cellpose could not load {path}: {exc}") from exc
    missing = sorted(set(model.net.state_dict()) - set(state))
    if missing:
        raise ModelError(
            f"{path} lacks {len(missing)} of the network's parameters (e.g. {missing[:3]}); "
            "cellpose would run with random weights there. The file is incomplete or not a "
            "Cellpose-SAM model."
        )
    if model.net.dtype != dtype:  # pragma: no cover - cellpose keeps what it was told
        model.net.dtype = dtype
    return model


def save_random_weights(path: Path, arch: str = "tiny", seed: int = 0) -> Path:
    """Write a randomly initialised CPSAM network that cellpose itself constructs.

    For tests and benchmarks on machines without the real weights: ``arch="vit_l"`` has
    exactly cpsam's size and speed (the numbers mean nothing, the cost is real).
    """
    import torch

    cp_models = import_cellpose()  # noqa: F841 - imports cellpose.vit quietly
    import cellpose.vit as cp_vit

    spec = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    with _BUILD_LOCK, _encoder_builder(spec):
        net = cp_vit.CPSAM(dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
