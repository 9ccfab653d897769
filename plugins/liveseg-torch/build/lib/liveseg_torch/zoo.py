"""The ``bioimageio`` backend: a BioImage Model Zoo package imported into the registry.

``liveseg models import RDF|DIR|ZIP`` (:mod:`liveseg.models_bioimageio`) registers a
package's files as one version with backend ``bioimageio`` and records the decoder.
:class:`ZooBackend` applies the input tensor's ``preprocessing`` from the rdf
(:func:`preprocess`), runs the ONNX weights with ONNX Runtime (or the TorchScript
weights with torch) on the whole frame padded to a size the rdf allows, and turns the
output maps into objects with one of :data:`DECODERS`. Loading checks the rdf's sha256
against the registry's record and the weights' against the rdf.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from liveseg.errors import ModelError
from liveseg.types import FrameResult, input_image

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from liveseg.pipeline import StepContext
    from liveseg.types import Frame

__all__ = ["DECODERS", "PRE_STEPS", "ZooBackend", "ZooParams", "preprocess"]

log = logging.getLogger("liveseg.torch")

_RDF_NAME = "rdf.yaml"


PRE_STEPS = frozenset(
    {
        "scale_range",
        "zero_mean_unit_variance",
        "scale_linear",
        "clip",
        "sigmoid",
        "binarize",
        "ensure_dtype",
    }
)
"""Pre- and post-processing steps of the model description format that liveseg applies."""


def _percentile_range(x: np.ndarray, kwargs: Mapping[str, Any]) -> np.ndarray:
    """``scale_range`` of the spec on one ``(C, H, W)`` image.

    Per channel over y and x, or jointly when ``axes`` names the channel axis too. The
    percentiles come from :func:`liveseg.builtins.normalize.percentiles`, as for the
    ``unet`` backend: exact (a histogram) for 8- and 16-bit frames, which is why ``x``
    keeps the camera's dtype here.
    """
    from liveseg.builtins.normalize import percentiles

    lo_q = float(kwargs.get("min_percentile", 0.0))
    hi_q = float(kwargs.get("max_percentile", 100.0))
    eps = float(kwargs.get("eps", 1e-6))
    joint = "channel" in [str(a) for a in kwargs.get("axes") or ()]
    groups = [slice(None)] if joint else [slice(c, c + 1) for c in range(x.shape[0])]
    out = np.empty(x.shape, dtype=np.float32)
    for g in groups:
        part = x[g]
        lo, hi = percentiles(part[0] if part.shape[0] == 1 else part, (lo_q, hi_q))
        out[g] = (part.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo + eps)
    return out


def preprocess(x: np.ndarray, steps: list[Mapping[str, Any]]) -> np.ndarray:
    """Apply an input tensor's ``preprocessing`` list to one ``(C, H, W)`` image.

    Supported: :data:`PRE_STEPS` (``scale_range`` per image); the backend refuses a
    package with another step when it is built.
    """
    raw = np.asarray(x)
    out = raw if raw.dtype in (np.uint8, np.uint16) else raw.astype(np.float32)
    for step in steps:
        sid, kw = str(step.get("id", "")), dict(step.get("kwargs") or {})
        if sid == "scale_range":
            out = _percentile_range(out, kw)
            continue
        out = out.astype(np.float32, copy=False)
        if sid == "zero_mean_unit_variance":
            axes = (1, 2)
            mean = out.mean(axis=axes, keepdims=True)
            std = out.std(axis=axes, keepdims=True)
            out = (out - mean) / (std + float(kw.get("eps", 1e-6)))
        elif sid == "scale_linear":
            gain = np.asarray(kw.get("gain", 1.0), dtype=np.float32).reshape(-1, 1, 1)
            offset = np.asarray(kw.get("offset", 0.0), dtype=np.float32).reshape(-1, 1, 1)
            out = out * gain + offset
        elif sid == "clip":
            out = np.clip(out, kw.get("min"), kw.get("max"))
        elif sid == "sigmoid":
            out = np.asarray(1.0 / (1.0 + np.exp(-out)), dtype=np.float32)
        elif sid == "binarize":
            out = (out > float(kw.get("threshold", 0.5))).astype(np.float32)
        elif sid == "ensure_dtype":
            out = out.astype(str(kw.get("dtype", "float32")))
        else:
            raise ModelError(f"pre-processing step {sid!r} is not supported by liveseg")
    return np.asarray(out, dtype=np.float32)


def _decode_watershed(maps: np.ndarray, params: Mapping[str, Any]) -> FrameResult:
    """Foreground + distance maps → labels (liveseg's seeded watershed)."""
    from liveseg_torch.representation import decode, object_scores

    prob, dist = maps[0], maps[1]
    labels = decode(
        prob,
        dist,
        prob_threshold=float(params.get("prob_threshold", 0.5)),
        seed_threshold=float(params.get("seed_threshold", 0.5)),
        min_size=int(params.get("min_size", 8)),
        scale=int(params.get("scale", 2)),
    )
    return FrameResult(labels=labels, scores=object_scores(labels, prob))


def _decode_boundaries(maps: np.ndarray, params: Mapping[str, Any]) -> FrameResult:
    """Foreground + boundary maps → labels: seeds are foreground away from boundaries.

    ``foreground - boundary`` plays the distance map's part in the seeded watershed.
    """
    inner = np.clip(maps[0] - maps[1], 0.0, 1.0)
    return _decode_watershed(np.stack([maps[0], inner]), {"scale": 1, **params})


def _decode_threshold(maps: np.ndarray, params: Mapping[str, Any]) -> FrameResult:
    """One probability map → connected components above ``prob_threshold``."""
    from scipy import ndimage as ndi

    from liveseg_torch.representation import object_scores

    prob = maps[0]
    labels, _ = ndi.label(prob > float(params.get("prob_threshold", 0.5)))
    areas = np.bincount(labels.ravel())
    keep = areas >= max(int(params.get("min_size", 8)), 1)
    keep[0] = False
    lut = np.zeros(areas.size, dtype=np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    out = lut[labels]
    return FrameResult(labels=out, scores=object_scores(out, prob))


def _decode_classes(maps: np.ndarray, params: Mapping[str, Any]) -> FrameResult:
    """Per-class maps → a class map (argmax; channel 0 background) and its components."""
    from scipy import ndimage as ndi

    classes = np.argmax(maps, axis=0).astype(np.uint8)
    labels, _ = ndi.label(classes > 0)
    names = tuple(str(n) for n in params.get("class_names", ()))
    return FrameResult(
        labels=labels.astype(np.uint32),
        classes=classes,
        class_names=names or tuple(f"class{i}" for i in range(maps.shape[0])),
    )


DECODERS: dict[str, Any] = {
    "watershed": _decode_watershed,
    "boundaries": _decode_boundaries,
    "threshold": _decode_threshold,
    "classes": _decode_classes,
}
"""Decoders by name: the network's output maps ``(C, H, W)`` and parameters → result.

``watershed``: channel 0 foreground probability, channel 1 normalised distance (liveseg,
StarDist-like); ``boundaries``: foreground and boundary probabilities (PlantSeg-like
nuclei models); ``threshold``: one probability map, connected components; ``classes``:
one map per class (0 background), a class map and its connected components.
"""


class ZooParams(BaseModel):
    """Parameters of the ``bioimageio`` step: a registered Zoo package and its decoding."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="registry spec of an imported package, e.g. 'zoo-nuclei'")
    weights: str = Field(
        default="auto",
        description="auto: ONNX (ONNX Runtime) when the package has it, else torchscript",
    )
    decoder: str | None = Field(default=None, description="override the recorded decoder")
    decoder_params: dict[str, float | int | str | list[str]] = Field(
        default_factory=dict, description="override some of the decoder's parameters"
    )


class ZooBackend:
    """Chain step: a BioImage Model Zoo model imported with ``liveseg models import``.

    The registry version holds the package's files; loading checks the weights' sha256
    (registry) and the rdf's sha256 against what was recorded at import.
    """

    Params = ZooParams

    def __init__(self, params: ZooParams, context: StepContext) -> None:
        import yaml

        from liveseg.models import file_sha256, resolve_model

        self.params = params
        self.logger = context.logger
        mv = resolve_model(params.model, context.home)
        zoo = mv.card.get("bioimageio")
        if not isinstance(zoo, dict):
            raise ModelError(
                f"model {mv.spec} is not an imported BioImage Model Zoo package "
                f"(its backend is {mv.backend!r}); use that backend instead"
            )
        rdf_path = mv.path / str(zoo.get("rdf", _RDF_NAME))
        if file_sha256(rdf_path) != zoo.get("rdf_sha256"):
            raise ModelError(
                f"model {mv.spec}: {rdf_path} was changed after it was imported "
                f"(sha256 differs from the registry's record); re-import the package"
            )
        rdf = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
        self.spec = mv.spec
        inp, outp = rdf["inputs"][0], rdf["outputs"][0]
        self.in_axes = [str(a.get("id", a.get("type"))) for a in inp["axes"]]
        self.out_axes = [str(a.get("id", a.get("type"))) for a in outp["axes"]]
        self.sizes = {
            str(a["id"]): (int(a["size"]["min"]), int(a["size"]["step"]))
            for a in inp["axes"]
            if a.get("type") == "space" and isinstance(a.get("size"), dict) and "min" in a["size"]
        }
        self.pre = list(inp.get("preprocessing") or [])
        self.post = list(outp.get("postprocessing") or [])
        unknown = sorted({str(p.get("id")) for p in self.pre + self.post} - PRE_STEPS)
        if unknown:
            raise ModelError(
                f"model {mv.spec}: processing step(s) {', '.join(unknown)} are not supported "
                f"by liveseg (it applies {', '.join(sorted(PRE_STEPS))})"
            )
        recorded = dict(mv.card.get("decoder") or {})
        name = params.decoder or str(recorded.get("name", ""))
        if name not in DECODERS:
            raise ModelError(
                f"model {mv.spec}: unknown decoder {name!r}; choose one of "
                f"{', '.join(sorted(DECODERS))}"
            )
        self.decoder_name = name
        self.decoder = DECODERS[name]
        self.decoder_params = {
            **(dict(recorded.get("params") or {}) if name == recorded.get("name") else {}),
            **params.decoder_params,
        }
        weights = dict(rdf.get("weights") or {})
        fmt = params.weights
        if fmt == "auto":
            fmt = "onnx" if "onnx" in weights else "torchscript"
        if fmt not in weights or fmt not in ("onnx", "torchscript"):
            raise ModelError(
                f"model {mv.spec}: no {fmt!r} weights in the package (it has "
                f"{', '.join(weights) or 'none'}); liveseg runs onnx and torchscript"
            )
        wpath = mv.path / Path(str(weights[fmt]["source"])).name
        if file_sha256(wpath) != weights[fmt].get("sha256", file_sha256(wpath)):
            raise ModelError(f"model {mv.spec}: {wpath.name} does not match rdf.yaml's sha256")
        self.weights_format = fmt
        self.run_net = self._onnx(wpath, context) if fmt == "onnx" else self._torch(wpath)
        self.logger.info("bioimageio: loaded %s (%s weights, %s decoder)", mv.spec, fmt, name)

    @staticmethod
    def _onnx(path: Path, context: StepContext) -> Callable[[np.ndarray], np.ndarray]:
        from liveseg_torch.runtime import OnnxEngine

        threads = int(context.threads) if context.threads and context.threads > 0 else 1
        engine = OnnxEngine.from_bytes(path.read_bytes(), threads=threads)
        return engine

    @staticmethod
    def _torch(path: Path) -> Callable[[np.ndarray], np.ndarray]:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu").eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out: np.ndarray = module(torch.from_numpy(x)).numpy()
            return out

        return run

    def maps(self, image: np.ndarray) -> np.ndarray:
        """The network's output ``(C, H, W)`` for one 2-D frame (pre-processing applied)."""
        img = np.asarray(image)
        if img.ndim != 2:
            raise ModelError(f"the bioimageio step takes 2-D frames, got shape {img.shape}")
        x = preprocess(img[None], self.pre)
        h, w = img.shape
        ph, pw = (self._valid(a, n) for a, n in (("y", h), ("x", w)))
        if (ph, pw) != (h, w):
            reflect = min(h, w) > 1 and ph - h < h and pw - w < w
            pads = ((0, 0), (0, int(ph - h)), (0, int(pw - w)))
            x = np.pad(x, pads, mode="reflect") if reflect else np.pad(x, pads, mode="edge")
        batch = x[None] if self.in_axes[0] == "batch" else x
        y = np.asarray(self.run_net(np.ascontiguousarray(batch, dtype=np.float32)))
        if self.out_axes[0] == "batch":
            y = y[0]
        if self.post:
            y = preprocess(y.astype(np.float32), self.post)
        return np.asarray(y[:, :h, :w], dtype=np.float32)

    def _valid(self, axis: str, n: int) -> int:
        """The smallest size the spec allows on ``axis`` that is at least ``n``."""
        lo, step = self.sizes.get(axis, (n, 1))
        if n <= lo or step <= 0:
            return max(n, lo)
        return lo + math.ceil((n - lo) / step) * step

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Segment the upstream (or raw) image with the Zoo network and the decoder."""
        img = input_image(frame, upstream)
        t0 = time.perf_counter()
        result = self.decoder(self.maps(img), self.decoder_params)
        ms = (time.perf_counter() - t0) * 1e3
        return result.replace(
            image=img,
            extra={
                "model": self.spec,
                "weights": self.weights_format,
                "decoder": self.decoder_name,
                "bioimageio_ms": ms,
            },
        )

    @staticmethod
    def export_bioimageio(
        model_dir: Path, out: Path, *, spec: str = "", make_zip: bool = False
    ) -> Path:
        """Write an imported package back out, as it came in; the rdf's path.

        Every file of the version except the registry's ``model.json`` is copied (a
        liveseg export's own card, kept as ``liveseg-model.json``, gets its name back),
        so the files match the sha256 values in the rdf again.
        """
        import json
        import shutil
        import zipfile

        card = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
        zoo = card.get("bioimageio") or {}
        dest = Path(out)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise ModelError(f"export target {dest} exists and is not an empty folder")
        dest.mkdir(parents=True, exist_ok=True)
        renamed = {str(zoo.get("liveseg_card")): "model.json"} if zoo.get("liveseg_card") else {}
        for f in sorted(Path(model_dir).iterdir()):
            if f.is_file() and f.name != "model.json":
                target = dest / renamed.get(f.name, f.name)
                shutil.copyfile(f, target)
                target.chmod(0o644)
        if make_zip:
            with zipfile.ZipFile(dest.with_suffix(".zip"), "w", zipfile.ZIP_DEFLATED) as zf:
                for f in sorted(dest.iterdir()):
                    zf.write(f, f.name)
        log.info("exported %s (an imported Zoo package) to %s", spec or model_dir, dest)
        return dest / str(zoo.get("rdf", _RDF_NAME))

    def close(self) -> None:
        """Drop the network."""
        self.run_net = None  # type: ignore[assignment]
