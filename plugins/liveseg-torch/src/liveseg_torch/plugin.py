"""The liveseg plugin module: registers the ``unet`` backend and its trainer.

Importing this module is cheap (no torch); the backend imports torch when it is built.

Example chain step::

    - backend: unet
      params: {model: default, tile: 512, overlap: 32, runtime: auto}
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from liveseg.errors import ModelError
from liveseg.hookspecs import Register, hookimpl
from liveseg.types import FinetuneResult, Frame, FrameResult, TrainItem, input_image

if TYPE_CHECKING:
    from collections.abc import Sequence

    from liveseg.pipeline import StepContext

__all__ = ["SHIPPED_MODELS", "UnetBackend", "UnetParams", "finetune", "resolve_weights"]

log = logging.getLogger("liveseg.torch")

SHIPPED_MODELS: tuple[tuple[str, str, str], ...] = (
    ("nuclei", "", "nuclei in fluorescence (DNA stain, H2B-FP); the default model"),
    ("cells", "cells", "whole cells in fluorescence: cytoplasm stain around a bright nucleus"),
    ("bacteria", "bacteria", "rod-shaped bacteria in phase contrast or brightfield"),
    ("transmitted", "transmitted", "unstained cells and droplets in brightfield / DIC light"),
)
"""Shipped models: (name, folder under ``weights/``, one-line purpose); all synthetic-trained."""


class UnetParams(BaseModel):
    """Parameters of the ``unet`` step (pixels unless stated).

    Thresholds left at ``None`` use the values stored in the weights (chosen on a
    validation set when the model was trained).
    """

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        default="default",
        description="'default' (shipped weights), a weights file or model directory, "
        "or a registry spec like 'nuclei@prod'",
    )
    tile: int = Field(default=512, ge=32, le=8192, description="tile side for large frames")
    overlap: int = Field(default=32, ge=0, description="tile overlap, blended")
    prob_threshold: float | None = Field(default=None, gt=0, lt=1)
    seed_threshold: float | None = Field(default=None, gt=0, lt=1)
    min_size: int | None = Field(default=None, ge=0, description="smallest object kept")
    test_time_flips: bool = Field(default=False, description="average 4 flips (4x slower)")
    batch_size: int = Field(default=4, ge=1, description="tiles per forward pass")
    decode_scale: Literal[1, 2] = Field(
        default=2,
        description="2: watershed at half resolution (fast); 1: full resolution; "
        "unset: what the model's card records (step_params), else 2",
    )
    runtime: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description="auto: ONNX Runtime on the CPU when installed, torch on CUDA; "
        "onnx: ONNX Runtime (CPU); torch: always torch",
    )
    overlap_decode: bool = Field(
        default=False,
        description="in segment_batch, decode one pass on a second thread while the "
        "network runs the next (measured: no faster than ONNX Runtime on 2 threads)",
    )


def resolve_weights(spec: str, home: Path | None = None) -> Path:
    """Turn a ``model`` parameter into a weights file path.

    ``"default"`` is the shipped file, a shipped model's name (``nuclei``, ``cells``,
    ``bacteria``, ``transmitted``; :data:`SHIPPED_MODELS`) its weights, or, once that name
    is in ``home``'s registry (used by ``--model`` or retrained), its ``prod`` version, so a
    chain step's ``model: cells`` means what ``--model cells`` does; a spec with
    ``@`` goes to the model registry (:func:`liveseg.models.resolve_model`); anything
    else is a path (absolute, relative to the working directory, or relative to
    ``home``). A directory resolves to the ``weights.pt`` (or ``default.pt``) inside it.
    """
    from liveseg_torch.weights import default_weights_path

    if spec in ("", "default"):
        return default_weights_path()
    shipped = {name: folder for name, folder, _ in SHIPPED_MODELS}
    if spec in shipped and not (home is not None and (Path(home) / "models" / spec).is_dir()):
        folder = default_weights_path().parent / shipped[spec]
        return folder / "default.pt"
    if "@" in spec or spec in shipped:  # a shipped name once registered means its prod
        try:
            from liveseg.models import resolve_model  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ModelError(
                f"model {spec!r} is a registry spec, but the model registry "
                f"(liveseg.models) is not available in this installation: {exc}. "
                f"Pass a weights file path instead."
            ) from exc
        path = Path(resolve_model(spec, home=home).weights_path)
    else:
        path = Path(spec).expanduser()
        if not path.is_absolute() and not path.exists() and home is not None:
            path = Path(home) / path
    if path.is_dir():
        for name in ("weights.pt", "default.pt"):
            if (path / name).is_file():
                return path / name
        raise ModelError(f"model directory {str(path)!r} holds no weights.pt or default.pt")
    return path


def with_card_defaults(params: UnetParams, weights: Path) -> UnetParams:
    """``params``, what it leaves unset taken from the card's ``step_params``.

    The card beside ``weights`` records the settings its model was scored with (e.g.
    ``decode_scale: 1``), so a chain step naming a model runs it as ``--model`` does; an
    unreadable card or invalid values leave ``params`` as they are.
    """
    try:
        card = json.loads((weights.parent / "model.json").read_text(encoding="utf-8"))
        recorded = dict(card.get("step_params") or {})
        extra = {k: v for k, v in recorded.items() if k in UnetParams.model_fields}
        return UnetParams(**{**extra, **params.model_dump(exclude_unset=True)})
    except (OSError, ValueError, TypeError, AttributeError):
        return params


class UnetBackend:
    """Chain step: the default deep model (foreground + distance maps -> watershed).

    The weights load once when the step is built and serve every frame. ``scores`` holds
    each object's mean foreground probability.
    """

    Params = UnetParams

    def __init__(self, params: UnetParams, context: StepContext) -> None:
        import torch

        from liveseg_torch.inference import Predictor, resolve_device
        from liveseg_torch.runtime import OnnxEngine, choose_runtime, onnx_for_weights
        from liveseg_torch.weights import load_checkpoint

        self.logger = context.logger
        threads = int(context.threads) if context.threads and context.threads > 0 else 0
        if threads:
            torch.set_num_threads(threads)
        self.weights_path = resolve_weights(params.model, context.home)
        self.params = params = with_card_defaults(params, self.weights_path)
        ckpt = load_checkpoint(self.weights_path)
        device = resolve_device(context.device)
        runtime = choose_runtime(params.runtime, device.type)
        if params.runtime != "torch" and runtime == "torch" and device.type == "cpu":
            self.logger.warning(
                "unet: onnxruntime is not installed, so the network runs in torch "
                "(about 1.4x slower on a CPU); `pip install onnxruntime` to speed it up"
            )
        engine = None
        self.onnx_path: Path | None = None
        if runtime == "onnx":
            data, self.onnx_path = onnx_for_weights(ckpt, context.home)
            engine = OnnxEngine.from_bytes(data, threads=threads or 1)
        self.predictor: Any = Predictor(
            ckpt,
            device=str(device),
            tile=params.tile,
            overlap=params.overlap,
            batch_size=params.batch_size,
            test_time_flips=params.test_time_flips,
            decode_scale=params.decode_scale,
            engine=engine,
            overlap_decode=params.overlap_decode,
        )
        self.logger.info(
            "unet: loaded %s on %s with %s (%d threads)",
            self.weights_path,
            self.predictor.device,
            f"ONNX Runtime ({self.onnx_path})" if engine is not None else "torch",
            threads or torch.get_num_threads(),
        )

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Segment the upstream (or raw) image."""
        img = input_image(frame, upstream)
        t0 = time.perf_counter()
        labels, scores = self.predictor.predict(
            img,
            prob_threshold=self.params.prob_threshold,
            seed_threshold=self.params.seed_threshold,
            min_size=self.params.min_size,
        )
        return self._result(img, labels, scores, (time.perf_counter() - t0) * 1e3)

    def segment_batch(
        self, frames: Sequence[Frame], upstreams: Sequence[FrameResult | None] | None = None
    ) -> list[FrameResult]:
        """Segment several frames: same-shaped ones share forward passes.

        Up to ``batch_size`` frames go through the network at once, and (with
        ``overlap_decode``) one pass is decoded while the next runs. The labels are
        those :meth:`segment` gives each frame. ``unet_ms`` in ``extra`` is the batch's
        time divided by its frames.
        """
        ups: Sequence[FrameResult | None] = upstreams or [None] * len(frames)
        if len(frames) != len(ups):
            raise ValueError("frames and upstreams differ in length")
        imgs = [input_image(f, u) for f, u in zip(frames, ups, strict=True)]
        t0 = time.perf_counter()
        out = self.predictor.predict_batch(
            imgs,
            prob_threshold=self.params.prob_threshold,
            seed_threshold=self.params.seed_threshold,
            min_size=self.params.min_size,
        )
        ms = (time.perf_counter() - t0) * 1e3 / max(1, len(frames))
        return [
            self._result(img, labels, scores, ms)
            for img, (labels, scores) in zip(imgs, out, strict=True)
        ]

    def _result(self, img: Any, labels: Any, scores: dict[int, float], ms: float) -> FrameResult:
        return FrameResult(
            labels=labels,
            scores=scores,
            image=img,
            extra={
                "model": str(self.weights_path),
                "runtime": self.predictor.runtime,
                "unet_ms": ms,
            },
        )

    @staticmethod
    def prepare_model_dir(model_dir: Path) -> Path | None:
        """Write the ONNX export into a model directory being registered; its path.

        For the model registry: call it on a version's staging directory after its
        ``model.json`` is written and before the files are made read-only (see
        :func:`liveseg_torch.runtime.export_onnx`). Without ``onnxruntime`` nothing is
        written (``None``): the export is made at first use on a machine that has it.
        """
        from liveseg_torch.runtime import export_onnx, onnxruntime_available

        return export_onnx(model_dir) if onnxruntime_available() else None

    @staticmethod
    def export_bioimageio(
        model_dir: Path, out: Path, *, spec: str = "", make_zip: bool = False
    ) -> Path:
        """Write a BioImage Model Zoo package of a model directory; the rdf's path.

        For ``liveseg models export SPEC --format bioimageio``; see
        :func:`liveseg_torch.bioimageio.export_package`.
        """
        from liveseg_torch.bioimageio import export_package

        return export_package(model_dir, out, spec=spec, make_zip=make_zip)

    def close(self) -> None:
        """Drop the model (frees its memory, and GPU memory when on CUDA)."""
        if self.predictor is not None:
            self.predictor.close()
        self.predictor = None


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
) -> FinetuneResult:
    """Trainer of the ``unet`` backend; see :func:`liveseg_torch.finetune.finetune`."""
    from liveseg_torch.finetune import finetune as _finetune

    return _finetune(
        base_weights,
        items,
        out_dir,
        epochs=epochs,
        learning_rate=learning_rate,
        seed=seed,
        val_items=val_items,
        progress=progress,
    )


@hookimpl
def register_backends(register: Register) -> None:
    """Register the ``unet`` backend and ``bioimageio`` (imported Zoo packages)."""
    from liveseg_torch.zoo import ZooBackend

    register("unet", UnetBackend)
    register("bioimageio", ZooBackend)


@hookimpl
def register_trainers(register: Register) -> None:
    """Register ``finetune`` as the trainer of ``unet`` models."""
    register("unet", finetune)


@hookimpl
def register_models(register: Register) -> None:
    """Register the shipped weights: ``default`` (nuclei; the default chain) and by name.

    ``nuclei`` (the same weights), ``cells``, ``bacteria`` and ``transmitted``
    (:data:`SHIPPED_MODELS`).
    """
    from importlib import resources

    # not liveseg_torch.weights: that imports torch, and every host calls this hook
    root = resources.files("liveseg_torch") / "weights"
    register(
        "default",
        str(root),
        "nuclei in fluorescence images (small U-Net, runs live on a CPU)",
    )
    for name, folder, purpose in SHIPPED_MODELS:
        register(name, str(root / folder) if folder else str(root), purpose)
