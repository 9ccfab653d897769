"""Built-in step ``pixel_classifier``: a random forest on multi-scale features (ilastik-style).

The traditional-ML tier that biologists reach for when deep learning is too much: paint
a few strokes per class, train a scikit-learn random forest on the
:mod:`liveseg.features` stack of the painted pixels in seconds, and classify every pixel
of every live frame.

Scribbles are ``uint8``/integer images of the training image's shape: ``0`` = not
painted, ``c ≥ 1`` = "this pixel is class ``c − 1``", so the class map the step returns
uses liveseg's class-map convention (``FrameResult.classes`` values index
``class_names``, value 0 is the first class, usually the background or matrix).

Saved models are *not* pickles. A model directory holds ``model.json`` (classes,
feature bank, forest shape, the sha256 of the arrays file) and ``forest.npz``: every
tree's node arrays (children, split feature, threshold, leaf class probabilities)
concatenated into plain numeric arrays. Loading reads it with ``allow_pickle=False``,
checks the digest, the exact set of arrays, their dtypes, shapes and index ranges, and
refuses anything else with one line; nothing in the file can run code.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi

from liveseg.errors import ModelError
from liveseg.features import FeatureBank, feature_stack
from liveseg.hookspecs import Register, hookimpl
from liveseg.types import CLASS_DTYPE, LABEL_DTYPE, FinetuneResult, Frame, FrameResult, input_image

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from liveseg.pipeline import StepContext
    from liveseg.types import TrainItem

__all__ = [
    "FOREST_FORMAT",
    "PixelClassifier",
    "PixelClassifierParams",
    "PixelModel",
    "finetune",
    "load",
    "save",
    "scribbles_from_classes",
    "train",
]

log = logging.getLogger("liveseg.pixel_classifier")

FOREST_FORMAT = "liveseg-forest-v1"
"""``model.json`` ``format`` of a saved forest; anything else is refused."""
WEIGHTS_NAME = "forest.npz"
PSEUDO_WEIGHT = 0.1
"""Weight of the parent's pseudo-labels when the trainer retrains from corrections."""
_ARRAYS = {
    "offsets": np.int64,
    "left": np.int64,
    "right": np.int64,
    "feature": np.int64,
    "threshold": np.float64,
    "value": np.float64,
}


@dataclass
class PixelModel:
    """A trained pixel classifier: the forest, its feature bank and class names."""

    forest: Any  # sklearn.ensemble.RandomForestClassifier (imported lazily)
    bank: FeatureBank
    class_names: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """Number of classes the model predicts."""
        return len(self.class_names)

    def probabilities(self, image: np.ndarray, n_jobs: int = 1) -> np.ndarray:
        """Per-class probabilities of every pixel, ``(n_classes, H, W)`` float32."""
        feats = feature_stack(image, self.bank)
        h, w = feats.shape[1:]
        # A (pixels, features) *view* of the stack: the trees read it through strided
        # memoryviews, so no 40 MB transposed copy per 512² frame.
        x = feats.reshape(feats.shape[0], -1).T
        self.forest.n_jobs = max(1, int(n_jobs))
        proba = self.forest.predict_proba(x).astype(np.float32, copy=False)
        out = np.zeros((self.n_classes, h * w), dtype=np.float32)
        out[np.asarray(self.forest.classes_, dtype=np.intp)] = proba.T
        return out.reshape(self.n_classes, h, w)

    def predict(
        self,
        image: np.ndarray,
        n_jobs: int = 1,
        min_probability: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """The class map of ``image`` (``uint8``, values index ``class_names``).

        Each pixel gets its most probable class, except that a class named in
        ``min_probability`` wins wherever its probability reaches that value (in the
        mapping's order): e.g. ``{"boundary": 0.3}``, because a missed boundary pixel
        merges two grains while an extra one costs almost nothing.
        """
        proba = self.probabilities(image, n_jobs)
        classes = np.argmax(proba, axis=0).astype(CLASS_DTYPE)
        for name, p_min in (min_probability or {}).items():
            if name not in self.class_names:
                raise ModelError(
                    f"min_probability: class {name!r} not in {list(self.class_names)}"
                )
            c = self.class_names.index(name)
            classes[proba[c] >= p_min] = c
        return classes


def scribbles_from_classes(
    classes: np.ndarray, fraction: float, seed: int = 0, stroke: int = 3
) -> np.ndarray:
    """Simulated brush strokes: sparse scribbles covering about ``fraction`` of the pixels.

    Strokes are short ``stroke``-pixel-wide line segments placed inside each class's
    eroded area (annotators paint well inside a region, not on its edge), in equal
    numbers per class, until ``fraction`` of the image is painted. Used by tests and
    benchmarks to stand in for an annotator.

    Returns
    -------
    numpy.ndarray
        ``uint8`` scribbles: 0 = not painted, ``c + 1`` = class ``c``.
    """
    rng = np.random.default_rng(seed)
    cls = np.asarray(classes)
    out = np.zeros(cls.shape, dtype=np.uint8)
    target = int(fraction * cls.size)
    present = [int(c) for c in np.unique(cls)]
    starts = {}
    for c in present:
        region = cls == c
        depth = ndi.distance_transform_edt(region)
        # Half the strokes hug the class's edge (1-3 px inside), as annotators refine a
        # boundary; half go anywhere inside.
        near = np.flatnonzero((depth >= 1.5) & (depth <= 3.5))
        anywhere = np.flatnonzero(region)  # thin classes (boundaries) are all edge
        starts[c] = (near if near.size else anywhere, anywhere if anywhere.size else near)
    painted = 0
    budget = max(1, target // max(1, len(present)))
    for c in present:
        done, tries = 0, 0
        pools = [p for p in starts[c] if p.size]
        while pools and done < budget and tries < 10_000:
            pool = pools[tries % len(pools)]
            tries += 1
            y, x = divmod(int(rng.choice(pool)), cls.shape[1])
            angle = rng.uniform(0, np.pi)
            ts = np.arange(int(rng.integers(6, 16)))
            ys = np.clip((y + ts * np.sin(angle)).astype(int), 0, cls.shape[0] - 1)
            xs = np.clip((x + ts * np.cos(angle)).astype(int), 0, cls.shape[1] - 1)
            line = np.zeros(cls.shape, dtype=bool)
            line[ys, xs] = True
            if stroke > 1:
                line = ndi.binary_dilation(line, iterations=stroke // 2)
            new = np.flatnonzero(line & (cls == c) & (out == 0))[: budget - done]
            out.ravel()[new] = c + 1
            done += int(new.size)
        painted += done
    log.debug("scribbles: %d px painted (%.2f%%)", painted, 100 * painted / cls.size)
    return out


def _training_samples(
    images: Sequence[np.ndarray],
    scribbles: Sequence[np.ndarray],
    bank: FeatureBank,
    max_samples: int,
    rng: np.random.Generator,
    weights: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, class values and weights of the painted pixels of all images."""
    xs, ys, ws = [], [], []
    if weights is None:
        weights = [np.ones(np.shape(s), np.float32) for s in scribbles]
    for image, scribble, weight in zip(images, scribbles, weights, strict=True):
        s = np.asarray(scribble)
        if s.shape != np.shape(image):
            raise ModelError(f"scribbles of shape {s.shape} do not match image {np.shape(image)}")
        idx = np.flatnonzero(s.ravel() > 0)
        if idx.size == 0:
            continue
        feats = feature_stack(image, bank).reshape(bank.n_features, -1)
        xs.append(feats[:, idx].T)
        ys.append(s.ravel()[idx].astype(np.int64) - 1)
        ws.append(np.asarray(weight, np.float64).ravel()[idx])
    if not xs:
        raise ModelError("no painted pixels: paint at least one stroke per class")
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    if x.shape[0] > max_samples:
        keep = rng.choice(x.shape[0], max_samples, replace=False)
        x, y, w = x[keep], y[keep], w[keep]
    return np.ascontiguousarray(x, dtype=np.float32), y, w


def train(
    images: Sequence[np.ndarray],
    scribbles: Sequence[np.ndarray],
    *,
    class_names: Sequence[str] | None = None,
    bank: FeatureBank | None = None,
    n_estimators: int = 16,
    max_depth: int | None = 12,
    max_samples: int = 100_000,
    weights: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    n_jobs: int = 1,
) -> PixelModel:
    """Train a pixel classifier from sparse scribbles; the retraining loop's entry point.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        2-D training images.
    scribbles : sequence of numpy.ndarray
        One per image: 0 = not painted, ``c ≥ 1`` = class ``c − 1``.
    class_names : sequence of str, optional
        Names of classes 0..K-1 (default ``class0``, ``class1``, …, as many as the
        highest painted id).
    bank : FeatureBank, optional
        The feature families and scales (default :class:`FeatureBank`).
    n_estimators, max_depth : int
        Forest size; the defaults keep a 512² frame near the live budget.
    max_samples : int
        Painted pixels beyond this are subsampled (training time stays in seconds).
    weights : sequence of numpy.ndarray, optional
        Per-pixel sample weights, one map per image (default 1 everywhere); the
        retraining trainer gives the parent's pseudo-labels a small weight.
    seed : int
        Random seed (the forest is deterministic for a given seed).
    n_jobs : int
        Threads for training (bound it by the step context's threads).

    Returns
    -------
    PixelModel
        The trained model; :func:`save` writes it.
    """
    from sklearn.ensemble import RandomForestClassifier

    bank = bank or FeatureBank()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    x, y, w = _training_samples(images, scribbles, bank, max_samples, rng, weights)
    n_classes = int(y.max()) + 1
    names = tuple(class_names) if class_names is not None else ()
    if not names:
        names = tuple(f"class{c}" for c in range(n_classes))
    if n_classes > len(names):
        raise ModelError(f"scribbles use class {n_classes - 1} but only {len(names)} names given")
    if len(names) > 255:
        raise ModelError("a class map holds at most 255 classes")
    forest = RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=2,
        class_weight="balanced",
        n_jobs=max(1, n_jobs),
        random_state=seed,
    )
    forest.fit(x, y, sample_weight=w)
    counts = np.bincount(y, minlength=len(names))
    info = {
        "train_seconds": round(time.perf_counter() - t0, 3),
        "train_pixels": int(y.size),
        "train_pixels_per_class": {names[c]: int(counts[c]) for c in range(len(names))},
        "n_estimators": n_estimators,
        "max_depth": max_depth,
        "seed": seed,
    }
    return PixelModel(forest=forest, bank=bank, class_names=names, info=info)


def _sha256(path: Path) -> str:
    from liveseg.models import file_sha256

    return file_sha256(path)


def save(model: PixelModel, directory: str | Path, **card: Any) -> Path:
    """Write ``model`` as a model directory (``model.json`` + ``forest.npz``); returns it.

    Extra keyword arguments go into ``model.json`` (e.g. ``description``).
    """
    import sklearn

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _ARRAYS if k != "offsets"}
    offsets = [0]
    n_classes = model.n_classes
    for est in model.forest.estimators_:
        state = est.tree_.__getstate__()
        nodes = state["nodes"]
        parts["left"].append(nodes["left_child"].astype(np.int64))
        parts["right"].append(nodes["right_child"].astype(np.int64))
        parts["feature"].append(nodes["feature"].astype(np.int64))
        parts["threshold"].append(nodes["threshold"].astype(np.float64))
        values = np.zeros((nodes.shape[0], n_classes), dtype=np.float64)
        values[:, np.asarray(est.classes_, dtype=np.intp)] = state["values"][:, 0, :]
        parts["value"].append(values)
        offsets.append(offsets[-1] + int(nodes.shape[0]))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["offsets"] = np.asarray(offsets, dtype=np.int64)
    weights = d / WEIGHTS_NAME
    np.savez_compressed(weights, **arrays)  # type: ignore[arg-type]
    doc = {
        "backend": "pixel_classifier",
        "format": FOREST_FORMAT,
        "weights": WEIGHTS_NAME,
        "weights_sha256": _sha256(weights),
        "classes": list(model.class_names),
        "features": model.bank.as_dict(),
        "n_features": model.bank.n_features,
        "n_trees": len(model.forest.estimators_),
        "forest_classes": [int(c) for c in model.forest.classes_],
        "sklearn": sklearn.__version__,
        "training": model.info,
        **card,
    }
    (d / "model.json").write_text(json.dumps(doc, indent=2) + "\n")
    return d


def _model_dir(path: str | Path, home: str | Path | None) -> Path:
    """The directory of a model given as a directory, a file inside it, or a registry spec."""
    p = Path(path)
    if p.is_dir():
        return p
    if p.is_file():
        return p.parent
    from liveseg.errors import LivesegError
    from liveseg.materials.shipped import shipped_dir
    from liveseg.models import resolve_model

    try:
        return Path(resolve_model(str(path), home).path)
    except LivesegError:
        shipped = shipped_dir(str(path))
        if shipped is None:
            raise
        return shipped


def load(path: str | Path, home: str | Path | None = None) -> PixelModel:
    """Load a saved pixel classifier, refusing anything but the expected plain arrays.

    Parameters
    ----------
    path : str or Path
        A model directory, its ``model.json`` or ``forest.npz``, or a registry spec
        such as ``pores@prod``.
    home : str or Path, optional
        liveseg data directory for registry specs.

    Raises
    ------
    ModelError
        One line naming the file and what is wrong: not our format, digest mismatch,
        pickled or unexpected content, inconsistent trees.
    """
    d = _model_dir(path, home)
    try:
        card = json.loads((d / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{d}: no readable model.json ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != FOREST_FORMAT:
        raise ModelError(f"{d}: not a liveseg forest (model.json format must be {FOREST_FORMAT})")
    weights = d / str(card.get("weights", WEIGHTS_NAME))
    if not weights.is_file():
        raise ModelError(f"{weights}: forest file missing")
    if card.get("weights_sha256") != _sha256(weights):
        raise ModelError(f"{weights}: sha256 does not match model.json; refusing to load")
    try:
        bank = FeatureBank.from_dict(card["features"])
        names = tuple(str(c) for c in card["classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{d}/model.json: malformed ({exc})") from None
    arrays = _read_arrays(weights, len(names), bank.n_features)
    forest = _build_forest(arrays, bank.n_features, len(names))
    return PixelModel(forest=forest, bank=bank, class_names=names, info=dict(card))


def _read_arrays(weights: Path, n_classes: int, n_features: int) -> dict[str, np.ndarray]:
    """The forest's arrays, checked; any surprise is a one-line ModelError."""
    try:
        with np.load(weights, allow_pickle=False) as npz:
            names = set(npz.files)
            if names != set(_ARRAYS):
                raise ModelError(
                    f"{weights}: unexpected arrays {sorted(names)}; expected {sorted(_ARRAYS)}"
                )
            arrays = {k: npz[k] for k in _ARRAYS}
    except ModelError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{weights}: not a plain-array forest file ({msg})") from None
    for k, dtype in _ARRAYS.items():
        if arrays[k].dtype != np.dtype(dtype):
            raise ModelError(f"{weights}: array {k!r} has dtype {arrays[k].dtype}, not {dtype}")
    off = arrays["offsets"]
    n = int(off[-1]) if off.size else -1
    value = arrays["value"]
    if (
        off.ndim != 1
        or off.size < 2
        or off[0] != 0
        or np.any(np.diff(off) <= 0)
        or any(arrays[k].shape != (n,) for k in ("left", "right", "feature", "threshold"))
        or value.shape != (n, n_classes)
    ):
        raise ModelError(f"{weights}: inconsistent tree arrays")
    for t in range(off.size - 1):
        a, b = int(off[t]), int(off[t + 1])
        left, right, feat = arrays["left"][a:b], arrays["right"][a:b], arrays["feature"][a:b]
        leaf = left == -1
        if (
            np.any(leaf != (right == -1))
            or np.any((~leaf) & ((left <= 0) | (left >= b - a) | (right <= 0) | (right >= b - a)))
            or np.any((~leaf) & ((feat < 0) | (feat >= n_features)))
        ):
            raise ModelError(f"{weights}: tree {t} has out-of-range children or features")
    return arrays


def _build_forest(arrays: dict[str, np.ndarray], n_features: int, n_classes: int) -> Any:
    """A scikit-learn forest rebuilt from plain node arrays (its fast predict, no pickle)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import NODE_DTYPE, Tree

    off = arrays["offsets"]
    n_cls = np.asarray([n_classes], dtype=np.intp)
    estimators = []
    for t in range(off.size - 1):
        a, b = int(off[t]), int(off[t + 1])
        nodes = np.zeros(b - a, dtype=NODE_DTYPE)
        nodes["left_child"] = arrays["left"][a:b]
        nodes["right_child"] = arrays["right"][a:b]
        nodes["feature"] = np.where(arrays["left"][a:b] == -1, -2, arrays["feature"][a:b])
        nodes["threshold"] = np.where(arrays["left"][a:b] == -1, -2.0, arrays["threshold"][a:b])
        nodes["n_node_samples"] = 1
        nodes["weighted_n_node_samples"] = 1.0
        depth = _depth(arrays["left"][a:b], arrays["right"][a:b])
        tree = Tree(n_features, n_cls, 1)
        tree.__setstate__(
            {
                "max_depth": depth,
                "node_count": b - a,
                "nodes": nodes,
                "values": np.ascontiguousarray(arrays["value"][a:b, None, :]),
            }
        )
        est = DecisionTreeClassifier()
        est.tree_ = tree
        est.n_features_in_ = n_features
        est.n_outputs_ = 1
        est.classes_ = np.arange(n_classes)
        est.n_classes_ = n_classes
        est.max_features_ = n_features
        estimators.append(est)
    forest = RandomForestClassifier(n_estimators=len(estimators))
    forest.estimators_ = estimators
    forest.estimator_ = estimators[0]
    forest.n_features_in_ = n_features
    forest.n_outputs_ = 1
    forest.classes_ = np.arange(n_classes)
    forest.n_classes_ = n_classes
    return forest


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    """Depth of a tree given its child arrays (root is node 0)."""
    depth = np.zeros(left.size, dtype=np.int64)
    for i in range(left.size):  # children always follow their parent in sklearn trees
        if left[i] > 0:
            depth[left[i]] = depth[right[i]] = depth[i] + 1
    return int(depth.max())


class PixelClassifierParams(BaseModel):
    """Parameters of the ``pixel_classifier`` step."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="model directory or registry spec (e.g. pores@prod)")
    instances: Literal["none", "components"] = Field(
        default="components",
        description="labels from connected components of the foreground classes, or none",
    )
    foreground: list[str] | None = Field(
        default=None, description="classes that are objects (default: all but class 0)"
    )
    min_area: int = Field(default=0, ge=0, description="drop components smaller than this")
    min_probability: dict[str, float] = Field(
        default_factory=dict,
        description="classes that win wherever their probability reaches this (e.g. boundary)",
    )


class PixelClassifier:
    """Chain step: classify every pixel with a saved random forest."""

    Params = PixelClassifierParams

    def __init__(self, params: PixelClassifierParams, context: StepContext) -> None:
        self.params = params
        self.n_jobs = max(1, int(context.threads))
        self.model = load(params.model, context.home)
        names = self.model.class_names
        fg = params.foreground if params.foreground is not None else list(names[1:])
        unknown = [c for c in fg if c not in names]
        if unknown:
            raise ModelError(f"foreground classes {unknown} not in the model's {list(names)}")
        self.foreground = np.asarray([names.index(c) for c in fg], dtype=np.intp)
        unknown = [c for c in params.min_probability if c not in names]
        if unknown:
            raise ModelError(f"min_probability classes {unknown} not in the model's {list(names)}")

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Class map of the upstream (or raw) image, plus foreground components."""
        img = input_image(frame, upstream)
        classes = self.model.predict(img, self.n_jobs, self.params.min_probability)
        if self.params.instances == "components" and self.foreground.size:
            from liveseg.builtins.classes import components

            labels = components(np.isin(classes, self.foreground), self.params.min_area)
        else:
            labels = np.zeros(classes.shape, dtype=LABEL_DTYPE)
        return FrameResult(
            labels=labels, classes=classes, class_names=self.model.class_names, image=img
        )

    def close(self) -> None:
        """Nothing to release."""


def finetune(
    base_weights: str | Path,
    items: Sequence[TrainItem],
    out_dir: str | Path,
    *,
    epochs: int = 1,
    learning_rate: float | None = None,
    seed: int = 0,
    val_items: Sequence[TrainItem] = (),
    progress: bool = True,
) -> FinetuneResult:
    """Trainer for the retraining loop: retrain the forest from corrected items.

    A forest cannot be nudged like a network, so the candidate is a new forest trained
    on the corrections (``item.labels`` are class values — or, for a two-class model,
    ``uint32`` instance labels meaning "objects are class 1"; ``item.valid`` marks the
    painted pixels — every pixel when ``None``) plus, so it does not forget, the parent
    forest's own predictions on up to as many unpainted pixels of the same images, at
    :data:`PSEUDO_WEIGHT`.
    ``epochs`` and ``learning_rate`` do not apply and are recorded only. The parent's
    files are never written.
    """
    del learning_rate, val_items, progress
    t0 = time.perf_counter()
    parent = load(Path(base_weights).parent)
    rng = np.random.default_rng(seed)
    images, scribbles, weights = [], [], []
    for item in items:
        cls = np.asarray(item.labels)
        if cls.dtype == LABEL_DTYPE:
            # An instance correction (the queue's format today): objects vs the rest,
            # which is unambiguous only for a two-class model.
            if parent.n_classes != 2:
                raise ModelError(
                    f"item {item.name!r} holds instance labels; a {parent.n_classes}-class "
                    "model needs class-map corrections"
                )
            cls = (cls > 0).astype(CLASS_DTYPE)
        valid = np.ones(cls.shape, bool) if item.valid is None else np.asarray(item.valid, bool)
        if cls.size and int(cls.max()) >= parent.n_classes:
            raise ModelError(f"item {item.name!r} uses class {int(cls.max())}; model has fewer")
        scribble = np.where(valid, cls.astype(np.int64) + 1, 0)
        weight = np.ones(cls.shape, np.float32)
        rest = np.flatnonzero(~valid.ravel())
        n_keep = min(rest.size, max(int(valid.sum()), 1))
        if n_keep:
            # The parent's own answers on unpainted pixels, at a tenth of the weight: they
            # keep what it knew where the operator said nothing, and cannot outvote a
            # correction.
            keep = rng.choice(rest, n_keep, replace=False)
            pred = parent.predict(item.image).ravel()
            scribble.ravel()[keep] = pred[keep].astype(np.int64) + 1
            weight.ravel()[keep] = PSEUDO_WEIGHT
        images.append(np.asarray(item.image))
        scribbles.append(scribble)
        weights.append(weight)
    model = train(
        images,
        scribbles,
        class_names=parent.class_names,
        bank=parent.bank,
        weights=weights,
        n_estimators=int(parent.info.get("n_trees", 16)),
        max_depth=parent.info.get("training", {}).get("max_depth", 12),
        seed=seed,
    )
    out = save(model, Path(out_dir), description=parent.info.get("description", ""))
    return FinetuneResult(
        weights_path=str(out / WEIGHTS_NAME),
        epochs=epochs,
        seconds=time.perf_counter() - t0,
        hyperparameters={"n_trees": len(model.forest.estimators_), "seed": seed},
    )


@hookimpl
def register_backends(register: Register) -> None:
    """Register ``pixel_classifier``."""
    register("pixel_classifier", PixelClassifier)


@hookimpl
def register_trainers(register: Register) -> None:
    """Register the pixel classifier's trainer for the retraining loop."""
    register("pixel_classifier", finetune)
