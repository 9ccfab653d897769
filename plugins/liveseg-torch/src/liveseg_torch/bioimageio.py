"""BioImage Model Zoo packages: export a ``unet`` model, run an imported Zoo model.

**Export** (:func:`export_package`, reached through ``liveseg models export SPEC
--format bioimageio``) writes a folder the Zoo's tools read (``bioimageio.core``,
ilastik, deepImageJ, QuPath, napari): ``rdf.yaml`` in the model description format
0.5, the network as ONNX (``model.onnx``, the same checked export the CPU runtime uses,
:mod:`liveseg_torch.runtime`) and as TorchScript (``model.torchscript.pt``), a test
input and the network's output on it (``test_input.npy``, ``test_output.npy``), a cover
image, a README made of the model card, the card itself (``model.json``), the licence
and a citation of the synthetic training-data generator. The pre-processing is written
in the spec's own terms: ``scale_range`` (percentiles 1 / 99.8 over y and x per image,
as :func:`liveseg_torch.inference.prepare_image` does) then ``clip`` to [-1, 8]. The
network's output is the two maps (foreground probability, normalised distance; sigmoid
applied inside the network). Turning them into instances (the seeded watershed of
:func:`liveseg_torch.representation.decode`) is post-processing outside the network,
as in the cellpose and StarDist packages; its name and parameters are in the rdf's
``config.liveseg`` section, so liveseg re-imports the model exactly.

**Running** an imported package is the ``bioimageio`` backend (:class:`ZooBackend`):
the registry holds the package (:func:`liveseg.models_bioimageio.import_package`), the
backend applies the spec's pre-processing, runs the ONNX weights with ONNX Runtime (or
the TorchScript weights with torch) on the whole frame padded to a size the spec
allows, and decodes with the decoder the registry recorded (:data:`DECODERS`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import shutil
import tempfile
import warnings
import zipfile
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

__all__ = [
    "DECODERS",
    "FORMAT_VERSION",
    "RDF_NAME",
    "ZooBackend",
    "ZooParams",
    "export_package",
    "preprocess",
]

log = logging.getLogger("liveseg.torch")

FORMAT_VERSION = "0.5.4"
"""The model description format written (read by bioimageio.spec 0.5.4 and later)."""
RDF_NAME = "rdf.yaml"
_ONNX = "model.onnx"
_TORCHSCRIPT = "model.torchscript.pt"
_TEST_SHAPE = (256, 256)
"""Test tensor size: 65 536 pixels, so float percentiles use every pixel (no subsample)."""
_TEST_SEED = 424_242
_CITATION = (
    "Training data: synthetic fluorescence nuclei from liveseg.synthetic.generate, the "
    "procedural generator in the liveseg package (live segmentation for Micro-Manager "
    "acquisitions; no DOI yet). Network: a small U-Net after Ronneberger, Fischer and "
    "Brox (2015), whose DOI this entry carries."
)
_CITATION_DOI = "10.1007/978-3-319-24574-4_28"
"""A DOI, not a URL: bioimageio.spec requests every URL in an rdf while validating (even
with ``BIOIMAGEIO_PERFORM_IO_CHECKS=0``), and a DOI is checked by its pattern only, so
the package validates offline without a single connection."""


# -- export ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _torchscript(model: Any, multiple: int, path: Path) -> None:
    """Trace the network with its sigmoid (probabilities out) and check other sizes."""
    import torch

    from liveseg_torch.runtime import ATOL, _with_sigmoid

    wrapped = _with_sigmoid(model.to("cpu").eval())
    example = torch.zeros(1, 1, 4 * multiple, 4 * multiple)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notices about shape arithmetic
        traced = torch.jit.trace(wrapped, example, check_trace=False)
    check = torch.rand(2, 1, 6 * multiple, 10 * multiple)
    with torch.inference_mode():
        diff = float((traced(check) - wrapped(check)).abs().max())
    if not diff <= ATOL:
        raise ModelError(f"the TorchScript trace differs from the network by {diff:.2e}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        torch.jit.save(traced, str(path))


def _cover(image: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """A 2:1 cover: the normalised test input beside its segmentation, as a PNG."""
    from PIL import Image

    lo, hi = np.percentile(image, (1.0, 99.8))
    grey = (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    lut = rng.integers(60, 256, size=(int(labels.max()) + 1, 3), dtype=np.uint8)
    lut[0] = 0
    colour = lut[labels]
    both = np.concatenate([np.repeat(grey[..., None], 3, axis=2), colour], axis=1)
    Image.fromarray(both).save(path)


def _readme(card: Mapping[str, Any], spec: str, decoder: Mapping[str, Any]) -> str:
    """The package's documentation: the model card as Markdown, and how to decode."""
    train = card.get("training_data", {}) or {}
    metrics = card.get("metrics", {}) or {}
    lines = [
        f"# liveseg model {spec}",
        "",
        str(card.get("description") or "A liveseg U-Net segmentation model."),
        "",
        "## Network",
        "",
        "Input `image`: one 2-D grey-level image (axes batch, channel, y, x), height and",
        "width multiples of 8. Pre-processing (in rdf.yaml): percentile normalisation",
        "(`scale_range`, 1st / 99.8th percentile over y and x of each image) then `clip`",
        "to [-1, 8], exactly as liveseg prepares frames.",
        "",
        "Output `maps`: two channels at the input's size, sigmoid applied in the network:",
        "`foreground` (probability that a pixel belongs to an object) and `distance`",
        "(distance to the object's edge, normalised to 1 at each object's centre).",
        "",
        "## Instance decoding (post-processing, outside the network)",
        "",
        "As in the cellpose and StarDist packages, the network does not output instance",
        "labels. liveseg turns the two maps into labels with a seeded watershed: pixels",
        "with `foreground > prob_threshold` are objects, regions with",
        "`distance > seed_threshold` inside them are the seeds, the watershed runs on the",
        "negated distance, and objects under `min_size` pixels are dropped. The decoder",
        "and its parameters are in rdf.yaml under `config.liveseg.decoder`:",
        "",
        "```json",
        json.dumps(dict(decoder), indent=2),
        "```",
        "",
        "In liveseg: `liveseg models import rdf.yaml` registers this package with that",
        "decoder; a chain step `{backend: bioimageio, params: {model: NAME}}` runs it.",
        "",
        "## Training data",
        "",
        f"Synthetic frames from `{train.get('generator', 'liveseg.synthetic.generate')}`"
        f" (style {train.get('style', 'train')!r}, {train.get('frames', '?')} frames): "
        f"{train.get('description', '')}",
        "",
        "## Validation",
        "",
        "AP on synthetic held-out sets, measured when the model was trained:",
        "",
    ]
    for name, m in metrics.items() if isinstance(metrics, dict) else ():
        if isinstance(m, dict) and "ap@0.5" in m:
            lines.append(
                f"- {name}: AP@0.5 {m['ap@0.5']:.3f}, AP@0.75 {m.get('ap@0.75', 0):.3f} "
                f"({m.get('frames', '?')} frames)"
            )
    lines += ["", "The full liveseg model card is `model.json` (attached).", ""]
    return "\n".join(lines)


def _licence_text() -> str:
    return (
        "BSD 3-Clause License\n\n"
        "Redistribution and use in source and binary forms, with or without modification,\n"
        "are permitted provided that the following conditions are met: (1) redistributions\n"
        "of source code must retain the above copyright notice, this list of conditions and\n"
        "the following disclaimer; (2) redistributions in binary form must reproduce the\n"
        "above copyright notice, this list of conditions and the following disclaimer in\n"
        "the documentation and/or other materials provided with the distribution; (3)\n"
        "neither the name of the copyright holder nor the names of its contributors may be\n"
        "used to endorse or promote products derived from this software without specific\n"
        "prior written permission.\n\n"
        'THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY\n'
        "EXPRESS OR IMPLIED WARRANTIES ARE DISCLAIMED.\n"
    )


def _zoo_name(spec: str) -> str:
    """A Zoo ``name`` (letters, digits, ``_- ()``) for a liveseg spec like ``nuclei@1``."""
    safe = "".join(c if c.isalnum() or c in "_- " else " " for c in spec).split()
    return f"liveseg {' '.join(safe)}"[:128]


def export_package(
    model_dir: str | Path,
    out: str | Path,
    *,
    spec: str = "",
    make_zip: bool = False,
) -> Path:
    """Write a BioImage Model Zoo package of a ``unet`` model directory into ``out``.

    Parameters
    ----------
    model_dir : str or Path
        A model directory (weights + ``model.json``): a registry version or the shipped
        weights' folder.
    out : str or Path
        The package folder (created; must be empty or absent).
    spec : str
        The liveseg spec it came from (``nuclei@1``), for the name and the README.
    make_zip : bool
        Also write ``<out>.zip`` (the form the Zoo uploads and ``bioimageio`` accepts).

    Returns
    -------
    Path
        ``out/rdf.yaml``.

    Raises
    ------
    liveseg.errors.ModelError
        When the weights do not load, the exports differ from torch, or ``out`` is not
        empty.
    """
    import torch
    import yaml

    from liveseg_torch.inference import prepare_image
    from liveseg_torch.representation import decode
    from liveseg_torch.runtime import OPSET, OnnxEngine, _export_bytes, _weights_in
    from liveseg_torch.weights import load_checkpoint

    src, dest = Path(model_dir), Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ModelError(f"export target {dest} exists and is not an empty folder")
    weights = _weights_in(src)
    ckpt = load_checkpoint(weights)
    card_path = src / "model.json"
    card: dict[str, Any] = (
        json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    )
    spec = spec or str(card.get("name") or src.name)
    multiple = ckpt.model.config.multiple
    norm = {"low": 1.0, "high": 99.8, **ckpt.normalize}
    rep = card.get("representation", {}) if isinstance(card.get("representation"), dict) else {}
    defaults = {"prob_threshold": 0.5, "seed_threshold": 0.5, "min_size": 8}
    defaults.update(rep.get("defaults", {}) if isinstance(rep.get("defaults"), dict) else {})
    defaults.update(ckpt.decode)
    params: dict[str, Any] = {
        "prob_threshold": float(defaults["prob_threshold"]),
        "seed_threshold": float(defaults["seed_threshold"]),
        "min_size": int(defaults["min_size"]),
        "scale": 2,
    }
    decoder = {
        "name": "watershed",
        "params": params,
        "outputs": {"foreground": "maps[0]", "distance": "maps[1]"},
    }

    from liveseg.synthetic import generate

    image = generate(_TEST_SEED, _TEST_SHAPE, "train")[0].astype(np.float32)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bioimageio-", dir=dest))
    try:
        onnx_bytes, diff = _export_bytes(ckpt)
        (staging / _ONNX).write_bytes(onnx_bytes)
        _torchscript(ckpt.model, multiple, staging / _TORCHSCRIPT)
        x = prepare_image(image, norm["low"], norm["high"])[None, None]
        y = OnnxEngine.from_bytes(onnx_bytes, threads=1)(x).astype(np.float32)
        np.save(staging / "test_input.npy", image[None, None])
        np.save(staging / "test_output.npy", y)
        labels = decode(
            y[0, 0],
            y[0, 1],
            prob_threshold=params["prob_threshold"],
            seed_threshold=params["seed_threshold"],
            min_size=params["min_size"],
            scale=params["scale"],
        )
        _cover(image, labels, staging / "cover.png")
        (staging / "README.md").write_text(_readme(card, spec, decoder), encoding="utf-8")
        (staging / "LICENSE").write_text(_licence_text(), encoding="utf-8")
        (staging / "model.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        rdf = _rdf(
            spec=spec,
            card=card,
            staging=staging,
            multiple=multiple,
            norm=norm,
            decoder=decoder,
            opset=OPSET,
            torch_version=str(torch.__version__).split("+")[0],
            onnx_diff=diff,
            weights_sha256=_sha256(weights),
        )
        (staging / RDF_NAME).write_text(
            yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        for f in staging.iterdir():
            f.replace(dest / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if make_zip:
        archive = dest.with_suffix(".zip") if dest.suffix != ".zip" else dest / "package.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(dest.iterdir()):
                zf.write(f, f.name)
    log.info("exported %s as a BioImage Model Zoo package to %s", spec, dest)
    return dest / RDF_NAME


def _rdf(
    *,
    spec: str,
    card: Mapping[str, Any],
    staging: Path,
    multiple: int,
    norm: Mapping[str, float],
    decoder: Mapping[str, Any],
    opset: int,
    torch_version: str,
    onnx_diff: float,
    weights_sha256: str,
) -> dict[str, Any]:
    """The ``rdf.yaml`` content (model description format :data:`FORMAT_VERSION`)."""

    def file(name: str) -> dict[str, str]:
        return {"source": name, "sha256": _sha256(staging / name)}

    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": _zoo_name(spec),
        "description": str(
            card.get("description") or "liveseg U-Net: foreground and distance maps"
        )[:1024],
        "authors": [{"name": "liveseg contributors"}],
        "maintainers": [],
        "cite": [{"text": _CITATION, "doi": _CITATION_DOI}],
        "license": "BSD-3-Clause",
        "documentation": "README.md",
        "covers": ["cover.png"],
        "attachments": [file("model.json"), file("LICENSE")],
        "tags": ["liveseg", "nuclei", "instance-segmentation", "fluorescence", "2d", "unet"],
        "timestamp": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "inputs": [
            {
                "id": "image",
                "description": "one grey-level 2-D image",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["image"]},
                    {"type": "space", "id": "y", "size": {"min": 2 * multiple, "step": multiple}},
                    {"type": "space", "id": "x", "size": {"min": 2 * multiple, "step": multiple}},
                ],
                "test_tensor": file("test_input.npy"),
                "data": {"type": "float32"},
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {
                            "axes": ["y", "x"],
                            "min_percentile": float(norm["low"]),
                            "max_percentile": float(norm["high"]),
                        },
                    },
                    {"id": "clip", "kwargs": {"min": -1.0, "max": 8.0}},
                ],
            }
        ],
        "outputs": [
            {
                "id": "maps",
                "description": "foreground probability and normalised distance (sigmoid "
                "applied); instance labels come from decoding them (config.liveseg)",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["foreground", "distance"]},
                    {"type": "space", "id": "y", "size": {"tensor_id": "image", "axis_id": "y"}},
                    {"type": "space", "id": "x", "size": {"tensor_id": "image", "axis_id": "x"}},
                ],
                "test_tensor": file("test_output.npy"),
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": {
            "torchscript": {**file(_TORCHSCRIPT), "pytorch_version": torch_version},
            "onnx": {
                **file(_ONNX),
                "opset_version": opset,
                "parent": "torchscript",
                "comment": f"torch.onnx.export; max |diff| vs torch {onnx_diff:.1e}",
            },
        },
        "config": {
            "liveseg": {
                "spec": spec,
                "backend": "unet",
                "weights_sha256": weights_sha256,
                "decoder": dict(decoder),
                "normalize": {
                    "low": float(norm["low"]),
                    "high": float(norm["high"]),
                    "clip": [-1.0, 8.0],
                },
                "training_data": card.get("training_data"),
            }
        },
    }


# -- running an imported package ---------------------------------------------------------
def _percentile_range(x: np.ndarray, kwargs: Mapping[str, Any]) -> np.ndarray:
    """``scale_range`` of the spec on one ``(C, H, W)`` image (per channel, over y and x)."""
    from liveseg.builtins.normalize import percentiles

    lo_q = float(kwargs.get("min_percentile", 0.0))
    hi_q = float(kwargs.get("max_percentile", 100.0))
    eps = float(kwargs.get("eps", 1e-6))
    out = np.empty(x.shape, dtype=np.float32)
    for c in range(x.shape[0]):
        lo, hi = percentiles(x[c], (lo_q, hi_q))
        out[c] = (x[c] - np.float32(lo)) / np.float32(hi - lo + eps)
    return out


def preprocess(x: np.ndarray, steps: list[Mapping[str, Any]]) -> np.ndarray:
    """Apply an input tensor's ``preprocessing`` list to one ``(C, H, W)`` image.

    Supported: ``scale_range`` (per image, over y and x), ``zero_mean_unit_variance``,
    ``scale_linear``, ``clip``, ``sigmoid``, ``ensure_dtype`` and ``binarize``; a
    package using another step is refused when it is imported or loaded.
    """
    out = np.asarray(x, dtype=np.float32)
    for step in steps:
        sid, kw = str(step.get("id", "")), dict(step.get("kwargs") or {})
        if sid == "scale_range":
            out = _percentile_range(out, kw)
        elif sid == "zero_mean_unit_variance":
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
        rdf_path = mv.path / str(zoo.get("rdf", RDF_NAME))
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
        x = preprocess(img[None].astype(np.float32), self.pre)
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
            y = preprocess(y, self.post)
        return np.asarray(y[:, :h, :w], dtype=np.float32)

    def _valid(self, axis: str, n: int) -> int:
        """The smallest size the spec allows on ``axis`` that is at least ``n``."""
        lo, step = self.sizes.get(axis, (n, 1))
        if n <= lo or step <= 0:
            return max(n, lo)
        return lo + math.ceil((n - lo) / step) * step

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Segment the upstream (or raw) image with the Zoo network and the decoder."""
        import time

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

    def close(self) -> None:
        """Drop the network."""
        self.run_net = None  # type: ignore[assignment]
