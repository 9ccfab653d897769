"""The ``cellpose`` chain step: Cellpose-SAM (cellpose 4) instance segmentation.

The model is resolved, loaded and warmed up when the session builds the chain, so a
missing weights file, a wrong device or a broken model fails *before* acquisition starts,
never at the first frame. ``segment`` then only runs ``CellposeModel.eval`` and turns its
output into liveseg's contract: ``uint32`` labels of the frame's shape and, per object,
the mean cell probability as its confidence score.

This module is imported when the plugin registers (``liveseg plugins``), so torch and
cellpose are imported inside methods only.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from liveseg.errors import ModelError
from liveseg.types import LABEL_DTYPE, Frame, FrameResult, input_image

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from liveseg.pipeline import StepContext

__all__ = ["CellposeBackend", "CellposeParams", "object_scores"]

log = logging.getLogger("liveseg.cellpose")

_RATE_WINDOW = 20  # frames in the rolling throughput estimate


class CellposeParams(BaseModel):
    """Parameters of the ``cellpose`` step (pixels unless stated).

    Defaults are cellpose 4's own, except ``normalize`` (``auto`` skips cellpose's
    percentile normalisation when an upstream step already handed a float image) and
    ``precision`` (``auto``: bfloat16 on CUDA, float32 on CPU/MPS where bfloat16 is slow).
    """

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        default="cpsam",
        description="cellpose name (cpsam, …), weights file path, or registry name@version",
    )
    model_dir: str | None = Field(
        default=None, description="cellpose model cache (default: $CELLPOSE_LOCAL_MODELS_PATH)"
    )
    download: bool = Field(
        default=True,
        description="download a missing built-in model at session start if the network answers",
    )
    device: str | None = Field(
        default=None, description="auto | cpu | cuda | cuda:N | mps (default: session device)"
    )
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    batch_size: int = Field(default=8, ge=1, description="256x256 tiles per forward pass")
    diameter: float | None = Field(
        default=None, gt=0, description="typical object diameter; rescales to cellpose's 30 px"
    )
    flow_threshold: float = Field(default=0.4, ge=0, description="max flow error; 0 disables")
    cellprob_threshold: float = Field(
        default=0.0, ge=-6, le=6, description="lower → more and larger objects"
    )
    min_size: int = Field(default=15, ge=-1, description="drop objects below this area; -1 off")
    max_size_fraction: float = Field(default=0.4, gt=0, le=1)
    channels: tuple[int, ...] | None = Field(
        default=None, description="up to 3 channel indices of a multichannel image, in order"
    )
    channel_axis: int | None = Field(default=None, description="channel axis of 3-D images")
    normalize: Literal["auto"] | bool = "auto"
    niter: int | None = Field(default=None, ge=1, description="flow dynamics iterations")
    tile_overlap: float = Field(default=0.1, ge=0, lt=0.5)
    augment: bool = Field(default=False, description="flip-averaged tiles (slower)")
    warmup: bool = Field(default=True, description="run one tile at session start")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads")

    @field_validator("channels")
    @classmethod
    def _at_most_three(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and not 1 <= len(v) <= 3:
            raise ValueError("cellpose uses 1 to 3 channels")
        return v


def object_scores(labels: np.ndarray, prob: np.ndarray) -> dict[int, float]:
    """Mean of ``prob`` over each object of ``labels`` (label id → mean)."""
    flat = labels.ravel()
    if flat.size == 0 or not flat.any():
        return {}
    sums = np.bincount(flat, weights=prob.ravel().astype(np.float64))
    counts = np.bincount(flat)
    ids = np.nonzero(counts)[0]
    ids = ids[ids != 0]
    return {int(i): float(sums[i] / counts[i]) for i in ids}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float32)))
    return out.astype(np.float32)


class CellposeBackend:
    """Chain step wrapping ``cellpose.models.CellposeModel`` (loaded once per session).

    Parameters
    ----------
    params
        Validated :class:`CellposeParams`.
    context
        The session's step context: ``home`` (registry), ``device`` and ``threads``.

    Raises
    ------
    ModelError
        Weights missing (with where cellpose looks and how to get them), unreadable, of
        the wrong architecture, or the device does not exist.
    """

    Params = CellposeParams

    def __init__(self, params: CellposeParams, context: StepContext) -> None:
        from liveseg_cellpose.net import load_cellpose_model, select_device
        from liveseg_cellpose.weights import resolve_weights

        self.params = params
        self.log = context.logger
        self.weights_path: Path = resolve_weights(
            params.model, home=context.home, model_dir=params.model_dir, download=params.download
        )
        import torch

        self.device = select_device(params.device or context.device)
        threads = params.threads or context.threads
        if self.device.type == "cpu" and threads:
            torch.set_num_threads(int(threads))
        if params.precision == "auto":
            bf16 = self.device.type == "cuda"
        else:
            bf16 = params.precision == "bfloat16"
        t0 = time.perf_counter()
        self._model: Any = load_cellpose_model(self.weights_path, self.device, bfloat16=bf16)
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self._lock = threading.Lock()
        self._recent_ms: deque[float] = deque(maxlen=_RATE_WINDOW)
        self._frames = 0
        self._total_ms = 0.0
        self.warmup_ms = 0.0
        if params.warmup:
            self._warm_up()
        self.log.info(
            "cellpose %s on %s (%s): loaded in %.0f ms, warm-up %.0f ms",
            self.weights_path,
            self.device,
            "bfloat16" if bf16 else "float32",
            self.load_ms,
            self.warmup_ms,
        )

    # -- inference --------------------------------------------------------------------
    def _prepare(self, img: np.ndarray) -> np.ndarray:
        """Return ``img`` as float32 Y x X x C with the selected channels."""
        p = self.params
        arr = np.asarray(img)
        if arr.ndim == 2:
            if p.channels not in (None, (0,)):
                raise ValueError(f"channels {p.channels} given but the image is single-channel")
            return arr.astype(np.float32, copy=False)[..., None]
        if arr.ndim != 3:
            raise ValueError(
                f"cellpose step expects a 2-D or 3-D (channel) image, got {arr.shape}"
            )
        axis = p.channel_axis if p.channel_axis is not None else int(np.argmin(arr.shape))
        arr = np.moveaxis(arr, axis, -1)
        if p.channels is not None:
            arr = arr[..., list(p.channels)]
        if arr.shape[-1] > 3:
            raise ValueError(
                f"image has {arr.shape[-1]} channels; choose up to 3 with the `channels` parameter"
            )
        return arr.astype(np.float32, copy=False)

    def _wants_normalize(self, upstream: FrameResult | None) -> bool:
        if self.params.normalize != "auto":
            return bool(self.params.normalize)
        handed = upstream.image if upstream is not None else None
        return not (handed is not None and np.issubdtype(handed.dtype, np.floating))

    def _eval(self, x: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
        """Run ``CellposeModel.eval`` on Y x X x C (or N x Y x X x C); masks and cellprob."""
        p = self.params
        # A dict, not a bool: cellpose writes a bool into its module-level defaults.
        norm = {"normalize": normalize, "norm3D": False}
        import torch

        # cellpose builds sparse tensors in its mask step; opting out of torch's invariant
        # checks explicitly (cellpose's own tensors are valid) keeps them fast and quiet.
        with self._lock, torch.sparse.check_sparse_tensor_invariants(enable=False):
            masks, flows, _ = self._model.eval(
                x,
                batch_size=p.batch_size,
                channel_axis=x.ndim - 1,
                normalize=norm,
                diameter=p.diameter,
                flow_threshold=p.flow_threshold,
                cellprob_threshold=p.cellprob_threshold,
                min_size=p.min_size,
                max_size_fraction=p.max_size_fraction,
                niter=p.niter,
                augment=p.augment,
                tile_overlap=p.tile_overlap,
            )
        return np.asarray(masks), np.asarray(flows[2])

    def _result(
        self, shape: tuple[int, int], img: np.ndarray, masks: np.ndarray, cellprob: np.ndarray
    ) -> FrameResult:
        if masks.shape != shape:
            raise ValueError(f"cellpose returned masks of shape {masks.shape}, expected {shape}")
        labels = masks.astype(LABEL_DTYPE, copy=False)
        scores = object_scores(labels, _sigmoid(cellprob))
        return FrameResult(labels=labels, scores=scores, image=img)

    def _record(self, ms: float, n: int) -> dict[str, Any]:
        per_frame = ms / n
        for _ in range(n):
            self._recent_ms.append(per_frame)
        self._frames += n
        self._total_ms += ms
        return {
            "cellpose_ms": per_frame,
            "backend_rate_fps": self.rate_fps,
            "device": str(self.device),
        }

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Segment the upstream (or raw) image of ``frame``.

        ``extra`` carries ``cellpose_ms`` (this frame) and ``backend_rate_fps`` (rolling
        mean over the last frames) so the session summary can state the model's rate.
        """
        img = input_image(frame, upstream)
        x = self._prepare(img)
        t0 = time.perf_counter()
        masks, cellprob = self._eval(x, self._wants_normalize(upstream))
        extra = self._record((time.perf_counter() - t0) * 1e3, 1)
        return self._result(frame.shape, img, masks, cellprob).replace(extra=extra)

    def segment_batch(
        self, frames: Sequence[Frame], upstreams: Sequence[FrameResult | None] | None = None
    ) -> list[FrameResult]:
        """Segment several same-shaped frames in one ``eval`` (tiles of all frames batched).

        On a GPU this keeps ``batch_size`` tiles per forward pass even for small frames;
        frames of different shapes fall back to one call each.
        """
        ups: Sequence[FrameResult | None] = upstreams or [None] * len(frames)
        if len(frames) != len(ups):
            raise ValueError("frames and upstreams differ in length")
        if not frames:
            return []
        imgs = [input_image(f, u) for f, u in zip(frames, ups, strict=True)]
        xs = [self._prepare(i) for i in imgs]
        norms = {self._wants_normalize(u) for u in ups}
        if len(frames) == 1 or len({x.shape for x in xs}) != 1 or len(norms) != 1:
            return [self.segment(f, u) for f, u in zip(frames, ups, strict=True)]
        t0 = time.perf_counter()
        masks, cellprob = self._eval(np.stack(xs), norms.pop())
        extra = self._record((time.perf_counter() - t0) * 1e3, len(frames))
        return [
            self._result(f.shape, img, masks[i], cellprob[i]).replace(extra=extra)
            for i, (f, img) in enumerate(zip(frames, imgs, strict=True))
        ]

    def _warm_up(self) -> None:
        """One 256x256 tile of synthetic blobs: first-call allocations happen now."""
        yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
        img = np.zeros((256, 256), np.float32)
        for cy, cx in ((64, 64), (64, 180), (180, 100), (170, 200)):
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 12.0**2))
        t0 = time.perf_counter()
        try:
            self._eval(img[..., None], True)
        except Exception as exc:
            raise ModelError(f"cellpose warm-up failed on {self.device}: {exc!r}") from exc
        self.warmup_ms = (time.perf_counter() - t0) * 1e3

    # -- reporting and lifecycle ------------------------------------------------------
    @property
    def rate_fps(self) -> float:
        """Frames per second over the last frames (0.0 before the first frame)."""
        if not self._recent_ms:
            return 0.0
        return 1e3 / (sum(self._recent_ms) / len(self._recent_ms))

    def stats(self) -> Mapping[str, Any]:
        """Throughput and provenance for the session summary / run.json."""
        mean_ms = self._total_ms / self._frames if self._frames else 0.0
        return {
            "backend": "cellpose",
            "weights": str(self.weights_path),
            "device": str(self.device),
            "frames": self._frames,
            "mean_ms": mean_ms,
            "rate_fps": (1e3 / mean_ms) if mean_ms else 0.0,
            "load_ms": self.load_ms,
            "warmup_ms": self.warmup_ms,
        }

    def close(self) -> None:
        """Drop the model and give GPU memory back."""
        model, self._model = getattr(self, "_model", None), None
        if model is None:
            return
        device = self.device
        del model
        gc.collect()
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
