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

An imported package runs in the ``bioimageio`` backend (:mod:`liveseg_torch.zoo`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import ModelError
from liveseg.models import file_sha256

if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = ["FORMAT_VERSION", "RDF_NAME", "export_package"]

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
    from liveseg_torch.weights import REPRESENTATION, load_checkpoint

    src, dest = Path(model_dir), Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ModelError(f"export target {dest} exists and is not an empty folder")
    weights = _weights_in(src)
    ckpt = load_checkpoint(weights)
    if ckpt.representation != REPRESENTATION:
        raise ModelError(
            f"{weights}: representation {ckpt.representation!r} has no bioimage.io decoder "
            f"yet (only {REPRESENTATION!r} exports); run it through liveseg instead"
        )
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
            weights_sha256=file_sha256(weights),
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
        return {"source": name, "sha256": file_sha256(staging / name)}

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
