"""Validation against a reference set, and the report that shows it.

A reference set is a folder of ``<name>.tif`` images, each with ``<name>_labels.tif``
(ground truth) and optionally ``<name>_valid.tif`` (where the ground truth is
complete) — the convention ``segment``, ``batch`` and ``queue export`` write. Metrics
come from :mod:`liveseg.metrics`: AP at IoU 0.5/0.75/0.9 (TP / (TP + FP + FN)), mean
matched IoU, precision and recall, pooled over the set and per image. Where a valid mask
exists, only objects mostly inside it are scored (on both sides), so a partly annotated
image does not count correct predictions outside the annotated region as false.

The report (``report.md`` + ``report.html`` + PNGs, matplotlib's Agg backend) has the
metrics table, AP-vs-IoU curves, training/validation loss curves when given, and
side-by-side overlays of the worst images for every compared model.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import ConfigError, LivesegError
from liveseg.types import LABEL_DTYPE, Frame

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from liveseg.config import LivesegConfig, StepConfig
    from liveseg.imageio import ImageSelection
    from liveseg.metrics import APResult
    from liveseg.models import ModelVersion
    from liveseg.plugins import PluginHost

__all__ = [
    "CURVE_THRESHOLDS",
    "REPORT_THRESHOLDS",
    "ModelSegmenter",
    "RefImage",
    "ValidationResult",
    "evaluate",
    "load_reference_set",
    "model_steps",
    "restrict_to_valid",
    "validate_model",
    "write_report",
]

log = logging.getLogger("liveseg.validate")

REPORT_THRESHOLDS: tuple[float, ...] = (0.5, 0.75, 0.9)
CURVE_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


@dataclass(frozen=True)
class RefImage:
    """One reference image with its ground truth (and valid region)."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    valid: np.ndarray | None = None
    classes: np.ndarray | None = None
    """The class map (``<name>_classes.tif``), when the set scores semantic models."""


def load_reference_set(
    folder: str | Path, selection: ImageSelection | None = None
) -> list[RefImage]:
    """Read a reference folder; every image must have its ``_labels`` file.

    ``selection`` picks the plane of multi-dimensional images (OME-TIFF, CZI, …).

    An optional ``<name>_classes.tif`` (class values) adds per-class IoU to the scores.

    Raises
    ------
    ConfigError
        When the folder is missing or empty, or an image lacks ground truth.
    """
    import tifffile

    from liveseg.imageio import image_stem, list_images, read_image
    from liveseg.retrain.annotate import check_labels, check_valid, read_labels_file

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"reference set {root} is not a directory")
    refs = []
    for path in list_images(root):
        name = image_stem(path.name)
        labels_path = next(
            (
                root / f"{name}_labels{s}"
                for s in (".tif", ".tiff", ".png")
                if (root / f"{name}_labels{s}").is_file()
            ),
            None,
        )
        if labels_path is None:
            raise ConfigError(
                f"reference set {root}: {path.name} has no {name}_labels.tif; every image "
                f"needs ground truth (or move it out of the folder)"
            )
        image = read_image(path, selection)
        labels = check_labels(
            read_labels_file(labels_path), image.shape, str(labels_path), relabel=True
        )
        valid = None
        valid_path = root / f"{name}_valid.tif"
        if valid_path.is_file():
            valid = check_valid(tifffile.imread(valid_path), image.shape, str(valid_path), labels)
        classes = None
        classes_path = root / f"{name}_classes.tif"
        if classes_path.is_file():
            from liveseg.imageio import read_classes_tif
            from liveseg.retrain.queue import check_class_map

            classes = check_class_map(read_classes_tif(classes_path)[0], image.shape, name)
        refs.append(RefImage(name, image, labels, valid, classes))
    if not refs:
        raise ConfigError(f"reference set {root} holds no <name>.tif images")
    return refs


def restrict_to_valid(labels: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Zero the objects of ``labels`` that lie mostly outside ``valid``."""
    if valid is None:
        return labels
    n = int(labels.max(initial=0))
    if n == 0:
        return labels
    total = np.bincount(labels.ravel(), minlength=n + 1)
    inside = np.bincount(labels[valid].ravel(), minlength=n + 1)
    keep = inside * 2 > total
    keep[0] = False
    return np.where(keep[labels], labels, 0).astype(LABEL_DTYPE)


@dataclass
class ValidationResult:
    """Scores of one model on one reference set."""

    model: str
    pooled: APResult
    per_image: list[dict[str, Any]]
    predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    seconds: float = 0.0
    class_iou: dict[str, float] = field(default_factory=dict)
    """Pooled per-class IoU (``{class name: IoU}``) when the references have class maps."""

    def summary(self) -> dict[str, float]:
        """Headline numbers: pooled AP/precision/recall at 0.5/0.75/0.9, matched IoU.

        With class maps also ``class_iou.<class>`` and ``mean_class_iou`` (a metric
        ``liveseg retrain --metric`` can decide on).
        """
        out: dict[str, float] = {}
        for name, iou in self.class_iou.items():
            out[f"class_iou.{name}"] = float(iou)
        if self.class_iou:
            out["mean_class_iou"] = float(np.nanmean(list(self.class_iou.values())))
        for t in REPORT_THRESHOLDS:
            out[f"ap@{t:g}"] = float(self.pooled.ap[t])
        out["precision@0.5"] = float(self.pooled.precision[0.5])
        out["recall@0.5"] = float(self.pooled.recall[0.5])
        out["mean_matched_iou"] = float(self.pooled.mean_matched_iou)
        out["ap@0.5_mean_per_image"] = float(np.mean([r["ap@0.5"] for r in self.per_image]))
        out["n_images"] = float(len(self.per_image))
        return out

    def curve(self) -> list[float]:
        """Pooled AP at each of :data:`CURVE_THRESHOLDS`."""
        return [float(self.pooled.ap[t]) for t in CURVE_THRESHOLDS]


def evaluate_classes(
    refs: Sequence[RefImage],
    predictions: Mapping[str, np.ndarray],
    class_names: Sequence[str],
) -> dict[str, float]:
    """Pooled per-class IoU of predicted class maps (references with a class map only)."""
    from liveseg.metrics import class_overlaps

    n = len(class_names)
    inter = np.zeros(n, np.int64)
    union = np.zeros(n, np.int64)
    for ref in refs:
        if ref.classes is None or ref.name not in predictions:
            continue
        i, u = class_overlaps(ref.classes, predictions[ref.name], n, ref.valid)
        inter += i
        union += u
    return {
        name: float(inter[k] / union[k]) if union[k] else float("nan")
        for k, name in enumerate(class_names)
    }


def evaluate(
    model: str, refs: Sequence[RefImage], predictions: Mapping[str, np.ndarray]
) -> ValidationResult:
    """Score predicted labels against a reference set."""
    from liveseg.metrics import aggregate, average_precision

    per_image = []
    results = []
    for ref in refs:
        pred = np.asarray(predictions[ref.name])
        true = restrict_to_valid(ref.labels, ref.valid)
        pred = restrict_to_valid(pred.astype(LABEL_DTYPE, copy=False), ref.valid)
        res = average_precision(true, pred, CURVE_THRESHOLDS)
        results.append(res)
        row: dict[str, Any] = {"name": ref.name, "n_true": res.n_true, "n_pred": res.n_pred}
        for t in REPORT_THRESHOLDS:
            row[f"ap@{t:g}"] = res.ap[t]
        row["precision@0.5"] = res.precision[0.5]
        row["recall@0.5"] = res.recall[0.5]
        row["mean_matched_iou"] = res.mean_matched_iou
        per_image.append(row)
    return ValidationResult(model, aggregate(results), per_image, dict(predictions))


def model_steps(
    version: ModelVersion,
    available: Sequence[str] | Mapping[str, Any],
    *,
    ref: str | None = None,
) -> list[StepConfig]:
    """The chain that runs ``version``: the default chain with its model step swapped.

    Steps of the default chain whose backend is the model's get ``model: name@N`` (or
    ``ref``, e.g. the path of a model directory not registered yet); when the default
    chain has no such step, the chain is that backend then ``size_filter``.
    """
    from liveseg.config import StepConfig
    from liveseg.defaults import default_steps

    if version.backend not in available:
        plugin = "torch" if version.backend == "unet" else version.backend
        raise LivesegError(
            f"model {version.spec} needs backend {version.backend!r}, which is not installed "
            f"(installed: {', '.join(sorted(available))}); install its plugin "
            f"(e.g. pip install -e plugins/liveseg-{plugin})"
        )
    model_ref = ref or version.spec
    steps = [s.model_copy(deep=True) for s in default_steps(available)]
    hit = False
    for step in steps:
        if step.backend == version.backend:
            step.params = {**step.params, "model": model_ref}
            hit = True
    if not hit:
        steps = [
            StepConfig(backend=version.backend, params={"model": model_ref}),
            StepConfig(backend="size_filter", params={"min_area": 15}),
        ]
    return steps


class ModelSegmenter:
    """The full chain for one model, as ``segment(image) -> labels`` (close when done).

    Frames go through the one frame processor (:mod:`liveseg.processing`) with a
    :class:`~liveseg.processing.LabelsCollector` as its only consumer: scoring a model
    segments exactly as a live run does, without measuring or writing anything.
    """

    def __init__(
        self,
        version: ModelVersion,
        home: Path,
        *,
        steps: Sequence[StepConfig] | None = None,
        threads: int = 1,
        host: PluginHost | None = None,
        ref: str | None = None,
        config: LivesegConfig | None = None,
    ) -> None:
        from liveseg.assembly import assemble, build_host
        from liveseg.config import LivesegConfig
        from liveseg.processing import ConsumerSpec, LabelsCollector

        cfg = (config or LivesegConfig()).model_copy(update={"threads": threads})
        host = host or build_host(cfg)
        factories = host.backends()
        chosen = list(steps) if steps is not None else model_steps(version, factories, ref=ref)
        self.version = version
        self.steps = chosen
        self.parts = assemble(cfg, home=home, host=host, steps=chosen, flags=False)
        self.pipeline = self.parts.pipeline
        self.collector = LabelsCollector()
        self.last_classes: np.ndarray | None = None
        self.class_names: tuple[str, ...] = ()
        self.processor = self.parts.processor(
            [ConsumerSpec("metrics", self.collector)], measure=False, sinks=False
        )

    def segment(self, image: np.ndarray, index: int = 0, name: str = "") -> np.ndarray:
        """Labels of one image.

        Raises
        ------
        LivesegError
            When a step of the chain fails on this image.
        """
        result = self.processor.process(Frame(index=index, image=image, name=name))
        if result.status.value != "ok":
            raise LivesegError(f"{name or 'image'}: segmentation failed: {result.error}")
        # A semantic chain's class map, for per-class IoU.
        self.last_classes = result.classes
        self.class_names = result.class_names or self.class_names
        return np.asarray(result.labels, dtype=LABEL_DTYPE)

    def close(self) -> None:
        """Release the chain's backends."""
        self.processor.finish({})
        self.parts.close()

    def __enter__(self) -> ModelSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def validate_model(
    version: ModelVersion,
    refs: Sequence[RefImage],
    home: Path,
    *,
    progress: bool = False,
    host: PluginHost | None = None,
    ref: str | None = None,
    label: str | None = None,
) -> ValidationResult:
    """Run ``version``'s chain on every reference image and score it.

    ``ref`` addresses the weights when they are not registered yet (a model directory);
    ``label`` names the result in reports (default: ``name@N``).
    """
    import time

    from tqdm import tqdm

    t0 = time.perf_counter()
    preds = {}
    class_preds: dict[str, np.ndarray] = {}
    with ModelSegmenter(version, home, host=host, ref=ref) as seg:
        for i, item in enumerate(
            tqdm(refs, desc=f"validate {label or version.spec}", unit="img", disable=not progress)
        ):
            preds[item.name] = seg.segment(item.image, i, item.name)
            if seg.last_classes is not None:
                class_preds[item.name] = seg.last_classes
        names = seg.class_names
    result = evaluate(label or version.spec, refs, preds)
    if class_preds and any(r.classes is not None for r in refs):
        result.class_iou = evaluate_classes(refs, class_preds, names)
    result.seconds = time.perf_counter() - t0
    return result


# -- report ----------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _overlay(image: np.ndarray, labels: np.ndarray, color: tuple[float, float, float]) -> Any:
    from skimage.segmentation import find_boundaries

    img = image.astype(np.float64)
    lo, hi = np.percentile(img, (1, 99.8))
    img = np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = np.stack([img] * 3, axis=-1)
    edges = find_boundaries(labels, mode="inner")
    rgb[edges] = color
    return rgb


def _plot_curves(results: Sequence[ValidationResult], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for r in results:
        ax.plot(CURVE_THRESHOLDS, r.curve(), marker="o", label=r.model)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("AP = TP / (TP + FP + FN)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Average precision on the reference set")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_losses(curves: Mapping[str, Sequence[float]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for name, values in curves.items():
        if len(values):
            ax.plot(range(1, len(values) + 1), values, marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Fine-tuning")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_worst(
    refs: Sequence[RefImage], results: Sequence[ValidationResult], path: Path, n: int
) -> list[str]:
    from matplotlib.figure import Figure

    key = results[-1]
    order = sorted(key.per_image, key=lambda r: (r["ap@0.5"], r["name"]))[:n]
    names = [r["name"] for r in order]
    by_name = {r.name: r for r in refs}
    cols = 2 + len(results)
    fig = Figure(figsize=(2.6 * cols, 2.6 * len(names) + 0.3))
    for row, name in enumerate(names):
        ref = by_name[name]
        panels = [("image", ref.image.astype(np.float64), None)]
        panels.append(("ground truth", _overlay(ref.image, ref.labels, (0, 1, 0)), None))
        for res in results:
            ap = next(r["ap@0.5"] for r in res.per_image if r["name"] == name)
            panels.append(
                (
                    f"{res.model}\nAP@0.5 {ap:.2f}",
                    _overlay(ref.image, res.predictions[name], (1, 0.2, 0.2)),
                    None,
                )
            )
        for col, (title, data, _) in enumerate(panels):
            ax = fig.add_subplot(len(names), cols, row * cols + col + 1)
            ax.imshow(data, cmap="gray" if data.ndim == 2 else None)
            ax.set_title(f"{name}: {title}" if col == 0 else title, fontsize=7)
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return names


def write_report(
    out_dir: str | Path,
    refs: Sequence[RefImage],
    results: Sequence[ValidationResult],
    *,
    title: str = "liveseg validation",
    losses: Mapping[str, Sequence[float]] | None = None,
    decision: str | None = None,
    details: Mapping[str, Any] | None = None,
    worst: int = 4,
    guard: Sequence[ValidationResult] = (),
    guard_title: str = "Base-domain check",
) -> Path:
    """Write ``report.md``, ``report.html``, ``metrics.json`` and PNGs; returns report.md.

    ``results`` are compared side by side (e.g. parent then candidate); the worst images
    are those where the last result scores lowest. ``guard`` results (the same models on
    a second set, e.g. the domain the parent was trained on) get their own table, so
    forgetting is visible next to the gain.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _plot_curves(results, out / "ap_curve.png")
    pngs = ["ap_curve.png"]
    if losses and any(len(v) for v in losses.values()):
        _plot_losses(losses, out / "loss_curve.png")
        pngs.append("loss_curve.png")
    worst_names = _plot_worst(refs, results, out / "worst.png", min(worst, len(refs)))
    pngs.append("worst.png")

    keys = [
        "ap@0.5",
        "ap@0.75",
        "ap@0.9",
        "mean_matched_iou",
        "precision@0.5",
        "recall@0.5",
        "ap@0.5_mean_per_image",
    ]
    summaries = [r.summary() for r in results]
    md = [f"# {title}", ""]
    if decision:
        md += [f"**Decision:** {decision}", ""]
    for k, v in (details or {}).items():
        md.append(f"- {k}: {v}")
    if details:
        md.append("")
    md += ["## Metrics (pooled over the reference set)", ""]
    md.append("| metric | " + " | ".join(r.model for r in results) + " |")
    md.append("|---|" + "---|" * len(results))
    # Per-class IoU rows where any model has them (semantic models on class-map refs).
    keys += sorted({k for s in summaries for k in s if "class_iou" in k})
    for k in keys:
        md.append(f"| {k} | " + " | ".join(_fmt(s.get(k, float("nan"))) for s in summaries) + " |")
    md += ["", f"Reference images: {len(refs)}", ""]
    if guard:
        gsum = [g.summary() for g in guard]
        md += [f"## {guard_title}", ""]
        md.append("| metric | " + " | ".join(g.model for g in guard) + " |")
        md.append("|---|" + "---|" * len(guard))
        for k in keys[:4]:
            md.append(f"| {k} | " + " | ".join(_fmt(s.get(k, float("nan"))) for s in gsum) + " |")
        md.append("")
    md += ["## Curves", ""]
    md += [f"![{p}]({p})" for p in pngs if p != "worst.png"]
    md += ["", "## Per image (AP@0.5)", ""]
    md.append("| image | n_true | " + " | ".join(r.model for r in results) + " |")
    md.append("|---|---|" + "---|" * len(results))
    for i, ref in enumerate(refs):
        vals = [_fmt(r.per_image[i]["ap@0.5"]) for r in results]
        md.append(
            f"| {ref.name} | {results[0].per_image[i]['n_true']} | " + " | ".join(vals) + " |"
        )
    md += ["", f"## Worst images ({', '.join(worst_names)})", "", "![worst](worst.png)", ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    (out / "report.html").write_text(_markdown_to_html(md, title), encoding="utf-8")
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "title": title,
                "decision": decision,
                "details": dict(details or {}),
                "results": {
                    r.model: {
                        "summary": r.summary(),
                        "per_image": r.per_image,
                        "curve": dict(zip(map(str, CURVE_THRESHOLDS), r.curve(), strict=True)),
                    }
                    for r in results
                },
                "losses": {k: list(v) for k, v in (losses or {}).items()},
                "guard": {g.model: g.summary() for g in guard},
            },
            indent=2,
            default=float,
        ),
        encoding="utf-8",
    )
    return out / "report.md"


def _markdown_to_html(lines: Sequence[str], title: str) -> str:
    """The tiny subset of Markdown the report uses, as a standalone HTML page."""
    body: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if not table:
            return
        rows = [r.strip("|").split("|") for r in table if not set(r) <= set("|-")]
        body.append("<table>")
        for i, cells in enumerate(rows):
            tag = "th" if i == 0 else "td"
            body.append(
                "<tr>"
                + "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in cells)
                + "</tr>"
            )
        body.append("</table>")
        table.clear()

    for line in lines:
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            body.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(src)}"></p>')
        elif line.startswith("- "):
            body.append(f"<p>• {html.escape(line[2:])}</p>")
        elif line.startswith("**Decision:**"):
            body.append(f"<p><strong>Decision:</strong>{html.escape(line[13:])}</p>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
