"""BioImage Model Zoo packages into the model registry (``liveseg models import RDF|DIR|ZIP``).

A Zoo package is a folder (or a ``.zip`` of one) with an ``rdf.yaml`` (or
``bioimageio.yaml``) in the model description format 0.5 and the files it names. Import
reads the rdf with PyYAML (no ``bioimageio`` dependency here; ``bioimageio.core``
validates packages in the tests), checks every file the rdf names against its
``sha256``, chooses how to turn the network's output into objects (the *decoder*, see
:func:`choose_decoder`), and registers the package's files as one registry version with
backend ``bioimageio`` (the ``liveseg-torch`` plugin runs it). The version's
``model.json`` records where it came from: the source path, the rdf's ``id``, ``name``,
format version and sha256 (:attr:`liveseg.models.ModelVersion.source`).

Only the network runs from the package: liveseg decodes its output itself, as the
cellpose and StarDist packages leave instance decoding to their own libraries.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from liveseg.errors import ModelError
from liveseg.models import file_sha256

if TYPE_CHECKING:
    import os

    from liveseg.models import ModelRegistry, ModelVersion

__all__ = [
    "DECODER_NAMES",
    "BioimageioError",
    "ZooPackage",
    "choose_decoder",
    "import_package",
    "is_package",
    "read_package",
]

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
DECODER_NAMES = ("watershed", "boundaries", "threshold", "classes")
"""Decoders the ``bioimageio`` backend (in the liveseg-torch plugin) has."""
_RUNNABLE = ("onnx", "torchscript")


class BioimageioError(ModelError):
    """A Zoo package that cannot be imported: malformed rdf, missing or changed files."""


@dataclass(frozen=True)
class ZooPackage:
    """A read and verified Zoo package.

    Attributes
    ----------
    root : Path
        The folder holding ``rdf.yaml`` and its files (a temporary one for a zip).
    rdf_path : Path
        The rdf file.
    rdf : dict
        Its content.
    rdf_sha256 : str
        SHA-256 of the rdf file's bytes.
    files : tuple of str
        Every file the rdf names (weights, test tensors, documentation, covers,
        attachments), all verified against their sha256 where the rdf records one.
    source : Path
        What the user named (the rdf, the folder or the zip).
    """

    root: Path
    rdf_path: Path
    rdf: dict[str, Any]
    rdf_sha256: str
    files: tuple[str, ...]
    source: Path


def is_package(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` looks like a Zoo package: an rdf file, a zip, or a folder with one."""
    p = Path(source)
    if p.is_file():
        return p.name in RDF_NAMES or p.suffix.lower() in (".yaml", ".yml", ".zip")
    return p.is_dir() and any((p / n).is_file() for n in RDF_NAMES)


def _extract(zip_path: Path, dest: Path) -> None:
    """Unpack a package zip, refusing members that would land outside ``dest``."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                name = PurePosixPath(info.filename)
                if name.is_absolute() or ".." in name.parts:
                    raise BioimageioError(
                        f"{zip_path}: member {info.filename!r} points outside the package; "
                        f"nothing was imported"
                    )
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise BioimageioError(f"{zip_path} is not a readable zip file ({exc})") from None


def _find_rdf(folder: Path, source: Path) -> Path:
    for n in RDF_NAMES:
        if (folder / n).is_file():
            return folder / n
    subs = [d for d in folder.iterdir() if d.is_dir()] if folder.is_dir() else []
    if len(subs) == 1:  # a zip of the folder rather than of its contents
        for n in RDF_NAMES:
            if (subs[0] / n).is_file():
                return subs[0] / n
    raise BioimageioError(f"{source} holds no rdf.yaml or bioimageio.yaml; is it a Zoo package?")


def _file_entries(rdf: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """``(where, file name, sha256)`` for every file an rdf names."""
    out: list[tuple[str, str, str | None]] = []

    def add(where: str, entry: Any) -> None:
        if isinstance(entry, str):
            out.append((where, entry, None))
        elif isinstance(entry, dict) and "source" in entry:
            sha = entry.get("sha256")
            out.append((where, str(entry["source"]), str(sha) if sha else None))

    for kind in ("inputs", "outputs"):
        for i, t in enumerate(rdf.get(kind) or []):
            if isinstance(t, dict):
                for key in ("test_tensor", "sample_tensor"):
                    if t.get(key) is not None:
                        add(f"{kind}[{i}].{key}", t[key])
    for fmt, w in (rdf.get("weights") or {}).items():
        add(f"weights.{fmt}", w)
    if rdf.get("documentation"):
        add("documentation", rdf["documentation"])
    for i, c in enumerate(rdf.get("covers") or []):
        add(f"covers[{i}]", c)
    for i, a in enumerate(rdf.get("attachments") or []):
        add(f"attachments[{i}]", a)
    return out


def _check_structure(rdf: Any, where: Path) -> dict[str, Any]:
    """The rdf as a dict, or a one-line :class:`BioimageioError` naming what is wrong."""
    if not isinstance(rdf, dict):
        raise BioimageioError(
            f"{where}: expected a YAML mapping (an rdf), got {type(rdf).__name__}"
        )
    if rdf.get("type") != "model":
        raise BioimageioError(
            f"{where}: type is {rdf.get('type')!r}, expected 'model'; only Zoo models import"
        )
    fv = str(rdf.get("format_version", ""))
    if not fv.startswith("0.5."):
        raise BioimageioError(
            f"{where}: format_version {fv or '(none)'!r} is not 0.5.x; convert it with "
            f"`bioimageio update-format` first"
        )
    for kind in ("inputs", "outputs"):
        tensors = rdf.get(kind)
        if not isinstance(tensors, list) or not tensors or not isinstance(tensors[0], dict):
            raise BioimageioError(f"{where}: {kind} must be a non-empty list of tensors")
        axes = tensors[0].get("axes")
        if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
            raise BioimageioError(f"{where}: {kind}[0].axes must be a list of axis mappings")
    if len(rdf["inputs"]) != 1 or len(rdf["outputs"]) != 1:
        raise BioimageioError(
            f"{where}: liveseg runs models with one input and one output tensor "
            f"(this one has {len(rdf['inputs'])} and {len(rdf['outputs'])})"
        )
    weights = rdf.get("weights")
    if not isinstance(weights, dict) or not any(f in weights for f in _RUNNABLE):
        have = ", ".join(weights) if isinstance(weights, dict) else "none"
        raise BioimageioError(
            f"{where}: no onnx or torchscript weights (it has {have}); liveseg runs those two"
        )
    return rdf


def read_package(source: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> ZooPackage:
    """Read and verify a Zoo package; a zip is unpacked into ``workdir``.

    Raises
    ------
    BioimageioError
        When the rdf is not YAML, not a 0.5 model with one input and output and onnx or
        torchscript weights, names a file outside the package, or a file is missing or
        differs from the sha256 the rdf records (both hashes named).
    """
    import yaml

    src = Path(source)
    if not src.exists():
        raise BioimageioError(f"{src} does not exist")
    if src.is_file() and src.suffix.lower() == ".zip":
        folder = Path(workdir) / "package"
        folder.mkdir(parents=True, exist_ok=True)
        _extract(src, folder)
        rdf_path = _find_rdf(folder, src)
    elif src.is_file():
        rdf_path = src
    else:
        rdf_path = _find_rdf(src, src)
    try:
        raw = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BioimageioError(f"{rdf_path} is not valid YAML ({first})") from None
    rdf = _check_structure(raw, rdf_path)
    root = rdf_path.parent
    names: list[str] = []
    for where, name, sha in _file_entries(rdf):
        if "://" in name:
            raise BioimageioError(
                f"{rdf_path}: {where} is a URL ({name}); liveseg imports packaged models "
                f"only (download it as a zip with `bioimageio package` first)"
            )
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or len(rel.parts) != 1:
            raise BioimageioError(
                f"{rdf_path}: {where} {name!r} must be a file in the package folder itself"
            )
        path = root / name
        if not path.is_file():
            raise BioimageioError(f"{rdf_path}: {where} names {name!r}, which is missing")
        if sha is not None:
            actual = file_sha256(path)
            if actual != sha:
                raise BioimageioError(
                    f"{path}: sha256 {actual} differs from {sha} in {rdf_path.name} "
                    f"({where}); the package was changed or damaged, nothing was imported"
                )
        if name not in names:
            names.append(name)
    return ZooPackage(
        root=root,
        rdf_path=rdf_path,
        rdf=rdf,
        rdf_sha256=file_sha256(rdf_path),
        files=tuple(names),
        source=src,
    )


def _channel_names(rdf: dict[str, Any]) -> list[str]:
    for axis in rdf["outputs"][0]["axes"]:
        if axis.get("type") == "channel":
            return [str(n) for n in axis.get("channel_names") or []]
    return []


def choose_decoder(rdf: dict[str, Any], override: str | None = None) -> dict[str, Any]:
    """How to turn the network's output into objects: ``{"name", "params", "why"}``.

    ``override`` (``--decoder``) wins; then a liveseg export's own
    ``config.liveseg.decoder``; then the output's channel names: foreground/probability
    + distance → ``watershed``, foreground + boundary/contour → ``boundaries``, one
    channel → ``threshold``, flows (cellpose) are refused (use the cellpose backend),
    anything else with several channels → ``classes`` (channel 0 background).

    Raises
    ------
    BioimageioError
        When ``override`` is not a decoder, or nothing says how to decode.
    """
    if override is not None and override not in DECODER_NAMES:
        raise BioimageioError(
            f"unknown decoder {override!r}; choose one of {', '.join(DECODER_NAMES)}"
        )
    recorded = ((rdf.get("config") or {}).get("liveseg") or {}).get("decoder")
    if isinstance(recorded, dict) and recorded.get("name") in DECODER_NAMES:
        if override is None or override == recorded["name"]:
            return {
                "name": str(recorded["name"]),
                "params": dict(recorded.get("params") or {}),
                "why": "config.liveseg.decoder in the rdf",
            }
    names = [n.lower() for n in _channel_names(rdf)]
    if override is not None:
        params: dict[str, Any] = {}
        if override == "classes":
            params["class_names"] = _channel_names(rdf)
        return {"name": override, "params": params, "why": "--decoder"}

    def has(i: int, *words: str) -> bool:
        return i < len(names) and any(re.search(w, names[i]) for w in words)

    fg = ("fore", "prob", "mask", "semantic", "cell", "nucle")
    if any("flow" in n for n in names):
        raise BioimageioError(
            "the model outputs flows (a cellpose model): run it with the cellpose backend, "
            "or pass --decoder to decode its channels another way"
        )
    if len(names) == 2 and has(0, *fg) and has(1, "dist"):
        return {"name": "watershed", "params": {}, "why": f"output channels {names}"}
    if len(names) == 2 and has(0, *fg) and has(1, "bound", "contour", "edge"):
        return {"name": "boundaries", "params": {}, "why": f"output channels {names}"}
    if len(names) == 1:
        return {"name": "threshold", "params": {}, "why": "one output channel"}
    if len(names) > 2 or (len(names) == 2 and has(0, "back", "bg")):
        return {
            "name": "classes",
            "params": {"class_names": _channel_names(rdf)},
            "why": f"output channels {names} (one per class)",
        }
    raise BioimageioError(
        f"cannot tell how to decode output channels {names or '(unnamed)'}; pass --decoder "
        f"({', '.join(DECODER_NAMES)})"
    )


def _registry_name(pkg: ZooPackage) -> str:
    liveseg = (pkg.rdf.get("config") or {}).get("liveseg") or {}
    base = str(pkg.rdf.get("id") or liveseg.get("spec", "").split("@")[0] or "")
    base = base or str(pkg.rdf.get("name") or "zoo-model")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "zoo-model"
    return f"zoo-{slug}"[:64]


def import_package(
    registry: ModelRegistry,
    source: str | os.PathLike[str],
    *,
    name: str | None = None,
    decoder: str | None = None,
    promote: bool = False,
) -> ModelVersion:
    """Register a Zoo package (rdf, folder or zip) as a ``bioimageio`` model version.

    The version holds every file the rdf names plus the rdf; its ``model.json`` records
    the decoder and the package's provenance under ``bioimageio`` (source path, rdf id,
    name, format version and sha256). The registry's weights file is the ONNX weights
    (else the TorchScript ones), so every load checks their sha256.

    Raises
    ------
    BioimageioError
        See :func:`read_package` and :func:`choose_decoder`.
    """
    from liveseg.models import check_name

    with tempfile.TemporaryDirectory(prefix="liveseg-zoo-") as tmp:
        pkg = read_package(source, tmp)
        chosen = choose_decoder(pkg.rdf, decoder)
        weights = pkg.rdf["weights"]
        fmt = "onnx" if "onnx" in weights else "torchscript"
        weights_file = str(weights[fmt]["source"])
        extra = {n: pkg.root / n for n in pkg.files if n != weights_file}
        extra[pkg.rdf_path.name] = pkg.rdf_path
        if "model.json" in extra:  # a liveseg export's card: kept, but not as the card
            extra["liveseg-model.json"] = extra.pop("model.json")
        provenance: dict[str, Any] = {
            "source": str(Path(source).resolve()),
            "rdf": pkg.rdf_path.name,
            "rdf_sha256": pkg.rdf_sha256,
            "id": pkg.rdf.get("id"),
            "name": pkg.rdf.get("name"),
            "format_version": str(pkg.rdf.get("format_version")),
            "weights_format": fmt,
            "weight_formats": sorted(weights),
        }
        if "liveseg-model.json" in extra:
            provenance["liveseg_card"] = "liveseg-model.json"
        card = {
            "description": str(pkg.rdf.get("description", "")),
            "decoder": chosen,
            "imported_from": provenance["source"],
            "bioimageio": provenance,
        }
        mv = registry.add_version(
            check_name(name or _registry_name(pkg)),
            pkg.root / weights_file,
            backend="bioimageio",
            card=card,
            extra_files={k: str(v) for k, v in extra.items()},
        )
    if promote:
        registry.promote(
            mv.spec,
            reason="imported from the BioImage Model Zoo format",
            record_only_if_unset=True,
        )
    return mv
