"""``liveseg try``: run every installed model on a few images and say which to start from.

Step 1 of the workflow liveseg follows is "test a domain-appropriate pretrained model and
pick the one that gets you closest". This command does that in one go: it runs the
classical chain and every shipped (or named) model on the images, writes a contact sheet
(``sheet.png``: each image with each model's outlines, object counts, and the object-size
distribution of each model) and a table (``summary.csv`` / ``summary.md``, plus
``per_image.csv``), and names the model it would start from, with the reason.

Without reference labels the pick is the model whose objects it is most sure of (the
mean per-object confidence of the deep models; the classical chain reports none and is
only picked when no model finds confident objects). With ``--ref DIR`` (images and
``<name>_labels.tif`` masks) the models are ranked by AP@0.5 against those masks.

:func:`resolve_model_spec` turns a ``--model`` value (a shipped model name, ``name@N``
from the registry, a model directory or weights file, or ``classical``) into chain steps;
``segment`` / ``batch`` / ``run`` can use it for their ``--model`` option.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from liveseg.commands.options import image_selection_options
from liveseg.errors import ConfigError, LivesegError

if TYPE_CHECKING:
    from liveseg.config import StepConfig
    from liveseg.imageio import ImageSelection

__all__ = [
    "CLASSICAL",
    "Candidate",
    "commands",
    "installed_models",
    "resolve_model_spec",
    "try_models",
]

CLASSICAL = "classical"
"""Name of the classical chain (normalize -> threshold -> size filter) in specs and tables."""

_MIN_CONFIDENCE = 0.6
"""Below this mean object confidence no deep model is trusted without reference labels."""


@dataclass
class Candidate:
    """One chain ``try`` compares: its name, purpose, steps and what it produced."""

    name: str
    description: str
    steps: list[StepConfig]
    labels: list[np.ndarray] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    ap: list[float] = field(default_factory=list)
    error: str = ""

    def counts(self) -> list[int]:
        """Objects per image."""
        return [int(np.count_nonzero(np.bincount(lab.ravel())[1:])) for lab in self.labels]

    def areas(self) -> np.ndarray:
        """Areas (px) of every object over all images."""
        per = [np.bincount(lab.ravel())[1:] for lab in self.labels]
        out = np.concatenate(per) if per else np.zeros(0, dtype=np.int64)
        return out[out > 0]


def installed_models() -> dict[str, tuple[Path, str]]:
    """Shipped models, name -> (model directory, one-line purpose).

    A directory registered under two names (``default`` and ``nuclei``) is listed once,
    under the more descriptive name.
    """
    from liveseg.plugins import shipped_models

    models = shipped_models()
    out: dict[str, tuple[Path, str]] = {}
    seen: dict[Path, str] = {}
    for name, entry in sorted(models.entries().items(), key=lambda kv: kv[0] == "default"):
        try:
            directory = models[name].resolve()
        except LivesegError:
            continue
        if directory in seen:
            continue
        seen[directory] = name
        out[name] = (directory, entry.description)
    return out


def _read_card(directory: Path) -> dict[str, Any]:
    """The ``model.json`` of a model directory; empty when missing or unreadable."""
    try:
        return dict(json.loads((directory / "model.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def _card_step(directory: Path, model: str) -> StepConfig:
    """The backend step of a model directory: backend and ``step_params`` from its card.

    A card may carry ``step_params`` (e.g. ``{"decode_scale": 1}`` for thin rods): the
    settings the model was scored with, which its step should use too.
    """
    from liveseg.config import StepConfig

    card = _read_card(directory)
    params = {**dict(card.get("step_params") or {}), "model": model}
    return StepConfig(backend=str(card.get("backend") or "unet"), params=params)


def resolve_model_spec(spec: str, home: str | Path | None = None) -> list[StepConfig]:
    """Chain steps for a ``--model`` value.

    Parameters
    ----------
    spec : str
        ``classical``; a shipped model name (``nuclei``, ``cells``, ``bacteria``,
        ``transmitted``, ``default``); a registry spec ``name@N`` / ``name@alias``; or the
        path of a model directory (weights + ``model.json``) or weights file.
    home : str or Path, optional
        Data directory for registry specs.

    Returns
    -------
    list of StepConfig
        The model's backend step followed by the size filter, or the classical chain.

    Raises
    ------
    ConfigError
        For a spec that names nothing installed, registered or on disk.
    """
    from liveseg.config import StepConfig
    from liveseg.defaults import CLASSICAL_STEPS

    size_filter = StepConfig(backend="size_filter", params={"min_area": 15})
    if spec == CLASSICAL:
        return list(CLASSICAL_STEPS)
    from liveseg.plugins import shipped_models

    models = shipped_models()
    if spec in models:
        directory = models[spec]
        return [_card_step(directory, str(directory)), size_filter]
    if "@" in spec:
        from liveseg.models import resolve_model

        mv = resolve_model(spec, home=home)
        return [StepConfig(backend=mv.backend, params={"model": spec}), size_filter]
    path = Path(spec).expanduser()
    if path.exists():
        directory = path if path.is_dir() else path.parent
        return [_card_step(directory, str(path)), size_filter]
    names = ", ".join([CLASSICAL, *models])
    raise ConfigError(
        f"model {spec!r} is not a shipped model, a registry spec (name@N) or an existing "
        f"path; shipped: {names}"
    )


def _image_name(path: Path) -> str:
    from liveseg.offline import _image_name as name_of

    return name_of(path)


def collect_images(
    paths: list[Path], selection: ImageSelection | None = None
) -> list[tuple[str, np.ndarray]]:
    """(name, image) for image files, OME-Zarr stores, run directories and plain folders.

    A run directory contributes its raw frames (``<run>_f<index>``); a folder that is
    neither a run nor a zarr store contributes its image files. ``selection`` picks the
    plane of multi-dimensional files (not of run frames, which are 2-D already).
    """
    from liveseg.imageio import list_images, read_image

    out: list[tuple[str, np.ndarray]] = []
    for p in paths:
        if p.is_dir() and ((p / "run.json").exists() or (p / "frames.csv").exists()):
            from liveseg.store import RunReader

            reader = RunReader(p)
            for row in reader.frames():
                idx = int(row["index"])
                out.append((f"{p.name}_f{idx}", reader.image(idx)))
        elif p.is_dir() and not p.name.lower().endswith(".zarr"):
            out.extend((_image_name(f), read_image(f, selection)) for f in list_images(p))
        else:
            out.append((_image_name(p), read_image(p, selection)))
    if not out:
        raise ConfigError(f"no images found in {', '.join(str(p) for p in paths)}")
    return out


def _reference(ref: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Reference masks ``<name>_labels.tif`` of ``ref`` for the images that have one."""
    import tifffile

    out: dict[str, np.ndarray] = {}
    for name in names:
        for suffix in ("_labels.tif", "_labels.tiff"):
            f = ref / f"{name}{suffix}"
            if f.is_file():
                lab = np.asarray(tifffile.imread(f))
                while lab.ndim > 2:
                    lab = lab[0]
                out[name] = lab
                break
    return out


def _pick(cands: list[Candidate], ranked_by_ap: bool) -> tuple[Candidate, str]:
    """The candidate to start from, and why (one sentence)."""
    ok = [c for c in cands if not c.error]
    if not ok:
        raise LivesegError("every model failed on these images; see the table for errors")
    if ranked_by_ap:
        best = max(ok, key=lambda c: float(np.mean(c.ap)) if c.ap else -1.0)
        return best, (
            f"highest AP@0.5 against the reference masks ({np.mean(best.ap):.2f}, "
            f"mean over {len(best.ap)} images)"
        )
    models = [c for c in ok if c.confidences]
    if models:
        best = max(models, key=lambda c: float(np.mean(c.confidences)))
        conf = float(np.mean(best.confidences))
        if conf >= _MIN_CONFIDENCE:
            return best, (
                f"its objects have the highest mean confidence ({conf:.2f}; no reference "
                f"masks given: check its outlines on the sheet, or pass --ref to rank by AP)"
            )
    classical = next((c for c in ok if c.name == CLASSICAL), ok[0])
    return classical, (
        f"no model is confident on these images (best mean confidence under "
        f"{_MIN_CONFIDENCE}); start from the classical chain and annotate a few frames"
    )


def _card_caveat(name: str, shipped: dict[str, tuple[Path, str]]) -> str:
    """A warning for the reason when the picked model's card marks it below target.

    Its ``status`` says so; the user reads the pick, not the card, and should not take a
    weak model's outlines on trust.
    """
    if name not in shipped:
        return ""
    card = _read_card(shipped[name][0])
    if not str(card.get("status", "")).startswith("below target"):
        return ""
    ap = (card.get("metrics", {}).get("test") or {}).get("ap@0.5")
    score = f" (AP@0.5 {ap:.2f} on its held-out synthetic test set)" if ap is not None else ""
    return (
        f"; its model card marks it below target{score}: fine-tune it on a few of your "
        f"corrected frames with `liveseg retrain`"
    )


def _run(
    cands: list[Candidate],
    images: list[tuple[str, np.ndarray]],
    home: Path,
    refs: dict[str, np.ndarray],
    progress: bool,
) -> None:
    from tqdm import tqdm

    from liveseg.assembly import build_host, build_pipeline
    from liveseg.config import LivesegConfig
    from liveseg.metrics import average_precision
    from liveseg.types import Frame

    config = LivesegConfig()
    host = build_host(config)
    bar = tqdm(total=len(cands) * len(images), desc="try", unit="img", disable=not progress)
    for cand in cands:
        try:
            pipeline = build_pipeline(config, host, home, steps=cand.steps)
        except Exception as exc:
            cand.error = " ".join(f"{type(exc).__name__}: {exc}".split())
            bar.update(len(images))
            continue
        try:
            for i, (name, image) in enumerate(images):
                result = pipeline.run(Frame(index=i, image=image, name=name))
                if result.status.value != "ok":
                    cand.error = str(result.error)
                    cand.labels.append(np.zeros(image.shape[-2:], dtype=np.uint32))
                else:
                    cand.labels.append(np.asarray(result.labels))
                    if result.scores:
                        cand.confidences.append(float(np.mean(list(result.scores.values()))))
                if name in refs:
                    cand.ap.append(average_precision(refs[name], cand.labels[-1]).ap[0.5])
                bar.update(1)
        finally:
            pipeline.close()
    bar.close()


def _rows(cands: list[Candidate], pick: Candidate) -> list[dict[str, Any]]:
    rows = []
    for c in cands:
        counts, areas = c.counts(), c.areas()
        rows.append(
            {
                "model": c.name,
                "purpose": c.description,
                "images": len(c.labels),
                "objects": int(sum(counts)),
                "objects_per_image": round(float(np.mean(counts)), 1) if counts else 0.0,
                "median_area_px": round(float(np.median(areas)), 1) if areas.size else "",
                "area_p10_p90_px": (
                    f"{np.percentile(areas, 10):.0f}-{np.percentile(areas, 90):.0f}"
                    if areas.size
                    else ""
                ),
                "mean_confidence": round(float(np.mean(c.confidences)), 3)
                if c.confidences
                else "",
                "ap@0.5": round(float(np.mean(c.ap)), 3) if c.ap else "",
                "pick": "yes" if c is pick else "",
                "error": c.error,
            }
        )
    return rows


def _write_tables(
    out: Path,
    rows: list[dict[str, Any]],
    reason: str,
    pick: Candidate,
    cands: list[Candidate],
    images: list[tuple[str, np.ndarray]],
) -> None:
    with (out / "summary.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cols = [k for k in rows[0] if k != "error" or any(r["error"] for r in rows)]
    lines = [
        "# liveseg try",
        "",
        f"Start from **{pick.name}**: {reason}.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(str(r[k]) for k in cols) + " |" for r in rows),
        "",
        "Contact sheet: `sheet.png`. Per image: `per_image.csv`.",
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines))
    with (out / "per_image.csv").open("w", newline="") as fh:
        writer2 = csv.writer(fh)
        writer2.writerow(["image", "model", "objects", "median_area_px", "ap@0.5"])
        for c in cands:
            for i, (name, _) in enumerate(images):
                if i >= len(c.labels):
                    continue
                areas = np.bincount(c.labels[i].ravel())[1:]
                areas = areas[areas > 0]
                ap = c.ap[i] if len(c.ap) == len(images) else ""
                med = float(np.median(areas)) if areas.size else ""
                writer2.writerow([name, c.name, int(areas.size), med, ap])


def _sheet(
    path: Path,
    cands: list[Candidate],
    images: list[tuple[str, np.ndarray]],
    pick: Candidate,
    max_images: int = 6,
) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    shown = images[:max_images]
    ncol = len(cands) + 1
    fig, axes = plt.subplots(
        len(shown) + 1, ncol, figsize=(2.6 * ncol, 2.6 * (len(shown) + 1)), squeeze=False
    )
    for r, (name, image) in enumerate(shown):
        im = np.asarray(image, dtype=np.float32)
        lo, hi = np.percentile(im, (0.5, 99.5))
        gray = np.clip((im - lo) / max(float(hi - lo), 1e-6), 0, 1)
        axes[r, 0].imshow(gray, cmap="gray")
        axes[r, 0].set_title(name[:28], fontsize=8)
        for c, cand in enumerate(cands, start=1):
            rgb = np.dstack([gray] * 3)
            if r < len(cand.labels):
                rgb[find_boundaries(cand.labels[r], mode="inner")] = (1.0, 0.25, 0.1)
                n = cand.counts()[r]
                extra = f", AP {cand.ap[r]:.2f}" if len(cand.ap) == len(images) else ""
                title = f"{cand.name}: {n}{extra}"
            else:
                title = f"{cand.name}: failed"
            axes[r, c].imshow(rgb)
            axes[r, c].set_title(title, fontsize=8, fontweight="bold" if cand is pick else None)
    hist = axes[len(shown)]
    hist[0].text(0.0, 0.5, "object area (px)\ndistribution,\nall images", fontsize=8)
    for c, cand in enumerate(cands, start=1):
        areas = cand.areas()
        if areas.size:
            hist[c].hist(np.log10(areas), bins=30, color="tab:orange")
        hist[c].set_xlabel("log10 area", fontsize=7)
        hist[c].tick_params(labelsize=6)
        hist[c].set_title(f"{cand.name}: {int(areas.size)} objects", fontsize=8)
    for ax in axes[:-1].ravel():
        ax.axis("off")
    hist[0].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def try_models(
    paths: list[Path],
    out_dir: Path,
    *,
    ref: Path | None = None,
    models: list[str] | None = None,
    home: str | Path | None = None,
    progress: bool = True,
    selection: ImageSelection | None = None,
) -> dict[str, Any]:
    """Run the classical chain and each model on the images; write sheet and tables.

    Parameters
    ----------
    paths : list of Path
        Image files (TIFF/PNG/OME-Zarr), run directories or folders of images. With
        ``ref`` and no paths, the reference folder's images are used.
    out_dir : Path
        Receives ``sheet.png``, ``summary.csv``, ``summary.md`` and ``per_image.csv``.
    ref : Path, optional
        Folder of reference masks ``<image name>_labels.tif``: rank by AP@0.5.
    models : list of str, optional
        Model specs to compare (default: the classical chain and every shipped model).
    home : str or Path, optional
        Data directory (registry specs).
    progress : bool
        Show a progress bar.
    selection : ImageSelection, optional
        Scene/channel/time point/z-plane of multi-dimensional files.

    Returns
    -------
    dict
        ``pick`` (model name), ``reason``, ``rows`` (the table) and ``outputs`` (paths).
    """
    from liveseg.home import resolve_home

    if ref is not None and not ref.is_dir():
        raise ConfigError(f"--ref {ref}: not a folder of images and <name>_labels.tif masks")
    inputs = list(paths) or ([ref] if ref is not None else [])
    if not inputs:
        raise ConfigError("give at least one image (or --ref with images in it)")
    images = collect_images(inputs, selection)
    refs = _reference(ref, [n for n, _ in images]) if ref is not None else {}
    if ref is not None and not refs:
        raise ConfigError(f"--ref {ref}: no <name>_labels.tif matches any input image")
    if models:
        specs = list(models)
        described = dict.fromkeys(specs, "")
        shipped = installed_models()
        described.update({k: v[1] for k, v in shipped.items() if k in described})
    else:
        shipped = installed_models()
        specs = [CLASSICAL, *shipped]
        described = {k: v[1] for k, v in shipped.items()}
    described.setdefault(CLASSICAL, "normalize -> threshold -> size filter (no model)")
    home_dir = resolve_home(str(home) if home is not None else None)
    cands = [Candidate(s, described.get(s, ""), resolve_model_spec(s, home_dir)) for s in specs]
    _run(cands, images, home_dir, refs, progress)
    pick, reason = _pick(cands, bool(refs))
    reason += _card_caveat(pick.name, shipped)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _rows(cands, pick)
    _write_tables(out_dir, rows, reason, pick, cands, images)
    _sheet(out_dir / "sheet.png", cands, images, pick)
    outputs = [str(out_dir / f) for f in ("sheet.png", "summary.csv", "summary.md")]
    return {"pick": pick.name, "reason": reason, "rows": rows, "outputs": outputs}


@click.command("try")
@click.argument("images", nargs=-1, type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option(
    "--ref",
    type=click.Path(exists=True, file_okay=False),
    help="Folder of <name>_labels.tif reference masks (and images): rank by AP@0.5.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Compare only these (repeatable): classical, a shipped name, name@N or a path.",
)
@click.option("--home", type=click.Path(file_okay=False))
@image_selection_options
def try_cmd(
    images: tuple[str, ...],
    output: str,
    ref: str | None,
    models: tuple[str, ...],
    home: str | None,
    selection: ImageSelection,
) -> None:
    """Run every installed model on IMAGES and say which one to start from.

    IMAGES are image files (TIFF/PNG/OME-Zarr/CZI/ND2/LIF), run directories or folders.
    Writes sheet.png (outlines, counts, size distributions), summary.csv/.md and
    per_image.csv to -o.
    """
    report = try_models(
        [Path(p) for p in images],
        Path(output),
        ref=Path(ref) if ref else None,
        models=list(models) or None,
        home=home,
        selection=selection,
    )
    for row in report["rows"]:
        ap = f", AP@0.5 {row['ap@0.5']}" if row["ap@0.5"] != "" else ""
        conf = f", confidence {row['mean_confidence']}" if row["mean_confidence"] != "" else ""
        err = f" (failed: {row['error']})" if row["error"] else ""
        click.echo(f"  {row['model']}: {row['objects']} objects{conf}{ap}{err}")
    click.echo(f"start from: {report['pick']} -- {report['reason']}")
    click.echo(f"wrote {', '.join(report['outputs'])}")


commands = [try_cmd]
