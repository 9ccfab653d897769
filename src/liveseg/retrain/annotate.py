"""Correction exchange: export queue items for annotation, import corrected labels back.

Formats:

* TIFF pairs, the reference-set convention: ``<name>.tif`` (image),
  ``<name>_labels.tif`` (uint32 instance labels) and optionally ``<name>_valid.tif``
  (1 where the labels are vouched for). They open in napari and Fiji.
* Cellpose GUI files: ``<name>_seg.npy`` (a pickled dict with ``masks``, ``outlines``,
  ``img``…) next to ``<name>.tif``. Reading one never runs pickled code: a restricted
  unpickler accepts only plain containers and numpy arrays.

Every import is validated (shape, dtype, label ids, valid-region mask) with an error
that says what is wrong and how to fix it. Labels must be integer *instance* labels;
ids with gaps (what deleting an object in napari or Fiji leaves) are renumbered to
``1..N`` and the renumbering is recorded on the queue item. A binary mask (values
``{0, 1}`` or ``{0, 255}`` covering several separate objects) is refused: it says
"foreground", not which pixels belong to which nucleus. A batch (a folder import, or
``queue add`` of several pairs) is validated completely before anything is stored, so
it is added all or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
from liveseg.types import LABEL_DTYPE

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from liveseg.retrain.queue import QueueItem, RetrainQueue

__all__ = [
    "AnnotationError",
    "CheckedLabels",
    "add_pairs",
    "check_image",
    "check_labels",
    "check_labels_renumbered",
    "check_valid",
    "describe_renumbering",
    "export_items",
    "import_folder",
    "import_labels",
    "open_in_napari",
    "read_correction",
    "read_labels_file",
    "read_seg_npy",
    "relabel_sequential",
    "renumber_labels",
    "seg_outlines",
    "write_seg_npy",
]

MANIFEST = "liveseg_items.json"


class AnnotationError(LivesegError, ValueError):
    """Imported labels or masks cannot be used as they are."""


def check_image(image: Any, source: str = "image") -> np.ndarray:
    """A 2-D intensity image, or :class:`AnnotationError` saying why not."""
    from liveseg.imageio import ImageError
    from liveseg.imageio import check_image as _check

    try:
        return _check(np.asarray(image), source)
    except ImageError as exc:
        raise AnnotationError(str(exc)) from None


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber the ids of ``labels`` to ``1..N`` (order kept), as uint32."""
    return renumber_labels(labels)[0]


def renumber_labels(labels: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Renumber ids to ``1..N`` (order kept) with skimage's ``relabel_sequential``.

    Returns the uint32 labels and the mapping ``{old: new}`` of the ids that changed
    (empty when the ids already were ``1..N``), so the change can be recorded.
    """
    from skimage.segmentation import relabel_sequential as _relabel

    arr = np.asarray(labels)
    if not arr.size:
        return arr.astype(LABEL_DTYPE), {}
    relabelled, forward, _ = _relabel(arr.astype(np.int64, copy=False))
    old_ids = np.asarray(forward.in_values)
    new_ids = np.asarray(forward.out_values)
    mapping = {int(o): int(n) for o, n in zip(old_ids, new_ids, strict=True) if o != n and n != 0}
    return np.asarray(relabelled, dtype=LABEL_DTYPE), mapping


def _binary_mask_error(arr: np.ndarray, source: str) -> AnnotationError | None:
    """An error for a binary mask posing as labels (several objects share one id)."""
    values = np.unique(arr)
    fg = [int(v) for v in values if v != 0]
    if len(fg) != 1 or fg[0] not in (1, 255):
        return None
    from skimage.measure import label as _label

    n_parts = int(_label(arr != 0, connectivity=1).max())
    if n_parts <= 1:
        return None  # a single object labelled 1 (or 255) is a valid instance image
    return AnnotationError(
        f"{source}: this is a binary mask (values 0/{fg[0]}, {n_parts} separate objects "
        f"all with id {fg[0]}), not instance labels. Instance labels give every object its "
        f"own id (0 = background, 1..N = objects); make them with skimage.measure.label(mask) "
        f"in Python, Fiji 'Analyze Particles' with 'Count Masks', or paint each object with "
        f"its own label in napari"
    )


def check_labels_renumbered(
    labels: Any,
    shape: tuple[int, int] | None,
    source: str = "labels",
    *,
    binary_ok: bool = False,
) -> tuple[np.ndarray, dict[int, int]]:
    """Validate an instance label image; return it as ``uint32`` ids ``1..N`` + renumbering.

    Ids with gaps are renumbered (the mapping ``{old: new}`` is returned so callers
    record it; it is empty when nothing changed). ``binary_ok`` accepts a mask-like
    image (for a model's predictions, which are never hand-made masks).

    Raises
    ------
    AnnotationError
        For a shape that differs from the image's, a float/bool/negative label image,
        or a binary mask of several objects (unless ``binary_ok``).
    """
    arr = np.asarray(labels)
    if arr.ndim > 2:
        arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise AnnotationError(
            f"{source}: expected a 2-D label image, got shape {tuple(np.shape(labels))}"
        )
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise AnnotationError(
            f"{source}: shape {tuple(arr.shape)} does not match the image's {tuple(shape)}; "
            f"labels must be drawn on the same image, uncropped and unscaled"
        )
    if arr.dtype.kind == "f":
        raise AnnotationError(
            f"{source}: labels are {arr.dtype} (floating point); instance labels must be "
            f"integers (0 = background, 1..N = objects). This looks like a probability or "
            f"intensity image; save the label layer (napari) or a 16/32-bit label image (Fiji)"
        )
    if arr.dtype.kind == "b":
        raise AnnotationError(
            f"{source}: a binary (bool) mask is not an instance label image; give every "
            f"object its own id (e.g. skimage.measure.label(mask), napari 'Labels' layer, "
            f"Fiji 'Analyze Particles ▸ Count Masks')"
        )
    if arr.dtype.kind not in "ui":
        raise AnnotationError(f"{source}: unsupported label dtype {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise AnnotationError(f"{source}: negative label ids ({int(arr.min())}); use 0..N")
    if arr.size and int(arr.max()) > np.iinfo(LABEL_DTYPE).max:
        raise AnnotationError(f"{source}: label ids exceed uint32")
    if not binary_ok:
        err = _binary_mask_error(arr, source)
        if err is not None:
            raise err
    ids = np.unique(arr)
    ids = ids[ids != 0]
    if ids.size and int(ids[-1]) != int(ids.size):
        return renumber_labels(arr)
    return np.ascontiguousarray(arr, dtype=LABEL_DTYPE), {}


def check_labels(
    labels: Any,
    shape: tuple[int, int] | None,
    source: str = "labels",
    *,
    relabel: bool = True,
    binary_ok: bool = False,
) -> np.ndarray:
    """Validate an instance label image and return it as contiguous ``uint32`` ``1..N``.

    Like :func:`check_labels_renumbered` without the mapping. ``relabel`` is kept for
    callers of earlier versions: gaps in ids are always renumbered now.
    """
    del relabel  # ids with gaps are renumbered always (see module docstring)
    return check_labels_renumbered(labels, shape, source, binary_ok=binary_ok)[0]


def describe_renumbering(mapping: Mapping[int, int], limit: int = 8) -> str:
    """``renumbered ids 4→2, 9→3`` (the first ``limit``), for history lines and messages."""
    pairs = sorted(mapping.items())
    shown = ", ".join(f"{o}→{n}" for o, n in pairs[:limit])
    more = f" (+{len(pairs) - limit} more)" if len(pairs) > limit else ""
    return f"renumbered ids {shown}{more}"


def check_valid(
    valid: Any, shape: tuple[int, int], source: str = "valid mask", labels: Any = None
) -> np.ndarray | None:
    """Validate a valid-region mask and return it as bool (``None`` passes through).

    Raises
    ------
    AnnotationError
        For a shape mismatch, values other than 0/1 (or 0/255), an empty mask, or
        labelled objects that lie entirely outside the mask (a mask from another image).
    """
    if valid is None:
        return None
    arr = np.asarray(valid)
    if arr.ndim > 2:
        arr = np.squeeze(arr)
    if arr.shape != tuple(shape):
        raise AnnotationError(
            f"{source}: shape {tuple(arr.shape)} does not match the image's {tuple(shape)}"
        )
    if arr.dtype.kind == "b":
        mask = arr
    else:
        values = np.unique(arr)
        if not set(values.tolist()) <= {0, 1, 255}:
            raise AnnotationError(
                f"{source}: a valid-region mask must be binary (0 = not annotated, 1 or 255 = "
                f"annotated); found values {values[:6].tolist()}"
                + (" …" if values.size > 6 else "")
            )
        mask = arr > 0
    if not mask.any():
        raise AnnotationError(f"{source}: the mask is empty (no pixel marked as annotated)")
    if labels is not None:
        lab = np.asarray(labels)
        inside = np.unique(lab[mask])
        all_ids = np.unique(lab)
        outside = np.setdiff1d(all_ids[all_ids != 0], inside)
        if outside.size:
            shown = ", ".join(str(int(i)) for i in outside[:8])
            raise AnnotationError(
                f"{source}: labelled objects {shown} lie entirely outside the valid region; "
                f"the mask and the labels do not belong together (or extend the mask)"
            )
    return mask


# -- Cellpose _seg.npy -----------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/numbers/strings and numpy arrays; refuses everything else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "slice"),
        ("builtins", "complex"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_seg_npy(path: str | Path) -> dict[str, Any]:
    """Read a Cellpose ``_seg.npy`` without running pickled code.

    Raises
    ------
    AnnotationError
        When the file is not a Cellpose seg file or holds anything but data.
    """
    from numpy.lib import format as npformat

    p = Path(path)
    try:
        with open(p, "rb") as fh:
            version = npformat.read_magic(fh)
            if version == (1, 0):
                _, _, dtype = npformat.read_array_header_1_0(fh)
            else:
                _, _, dtype = npformat.read_array_header_2_0(fh)
            if dtype.hasobject:
                obj = _SafeUnpickler(fh).load()
            else:
                raise AnnotationError(f"{p}: not a Cellpose _seg.npy (plain array)")
    except AnnotationError:
        raise
    except Exception as exc:
        raise AnnotationError(f"{p}: cannot read Cellpose seg file: {exc}") from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict) or "masks" not in obj:
        raise AnnotationError(f"{p}: not a Cellpose _seg.npy (no 'masks' entry)")
    return obj


def seg_outlines(labels: np.ndarray) -> np.ndarray:
    """Outline pixels of each object, valued with its label, as the Cellpose GUI draws them.

    With cellpose installed these are ``cellpose.utils.masks_to_outlines`` (each object's
    outer contour from OpenCV, image-edge pixels included, holes not outlined). Without
    it, the same pixels from numpy/scipy: an object's pixels with a 4-neighbour outside
    the hole-filled object, the image edge counting as outside.
    """
    import importlib.util

    lab = np.asarray(labels)
    if importlib.util.find_spec("cellpose") is not None:
        from cellpose.utils import masks_to_outlines

        return np.where(masks_to_outlines(lab), lab, 0)
    from scipy import ndimage as ndi

    out = np.zeros_like(lab)
    for i, box in enumerate(ndi.find_objects(lab.astype(np.intp)), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        solid = np.pad(ndi.binary_fill_holes(lab[grown] == i), 1)
        edge = solid & ~ndi.binary_erosion(solid, border_value=0)
        out[grown][edge[1:-1, 1:-1] & (lab[grown] == i)] = i
    return out


def _seg_colors(n: int) -> np.ndarray:
    """``n`` distinct bright RGB colours (uint8), the same for the same labels every time."""
    import colorsys

    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(float(h), 0.85, 1.0) for h in hues]
    return (np.asarray(rgb, dtype=float).reshape(n, 3) * 255).astype(np.uint8)


def _seg_flows(masks: np.ndarray) -> list[Any] | None:
    """The GUI's ``flows`` entry from the masks (cellpose's training target, on the CPU).

    ``[flow RGB, cell probability, z-flow, [], dP+cellprob]`` as
    ``cellpose.io.masks_flows_to_seg`` stores them; ``None`` without cellpose (the GUI
    then opens the file without a flow view).
    """
    import importlib.util

    if importlib.util.find_spec("cellpose") is None:
        return None
    from cellpose import dynamics, plot

    dp = np.asarray(dynamics.masks_to_flows_gpu(masks.astype(np.int64))[0], dtype=np.float32)
    inside = masks > 0
    cellprob = np.where(inside, 5.0, -5.0).astype(np.float32)
    rgb = np.asarray(plot.dx_to_circ(dp), dtype=np.uint8)
    prob8 = np.where(inside, 255, 0).astype(np.uint8)
    return [
        rgb[np.newaxis],
        prob8[np.newaxis],
        np.zeros((1, *rgb.shape), np.uint8),
        [],
        np.concatenate([dp, cellprob[np.newaxis]], axis=0),
    ]


def _gui_image(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        return image
    rgb = np.zeros((*image.shape, 3), image.dtype)
    rgb[..., 0] = image
    return rgb


def write_seg_npy(path: str | Path, image: np.ndarray, labels: np.ndarray, filename: str) -> None:
    """Write ``labels`` as a Cellpose GUI ``_seg.npy`` that the GUI opens and edits.

    The keys are those ``cellpose.io.masks_flows_to_seg`` and the GUI's own save write:
    ``masks``, ``outlines`` (:func:`seg_outlines`), ``colors``, ``flows`` (when cellpose
    is installed), ``chan_choose``, ``ismanual``, ``filename``, ``diameter``, plus ``img``
    so the GUI shows the image even when ``filename`` is not beside the file (shaped
    Y×X×3, the image in channel 0, as the GUI's ``imread_2D`` gives a grayscale file).
    """
    lab = np.asarray(labels)
    n = int(lab.max(initial=0))
    dtype = np.uint16 if n < 2**16 - 1 else np.uint32
    masks = lab.astype(dtype)
    dat: dict[str, Any] = {
        "masks": masks,
        "outlines": seg_outlines(masks).astype(dtype),
        "colors": _seg_colors(n),
        "img": _gui_image(np.asarray(image)),
        "filename": filename,
        "chan_choose": [0, 0],
        "ismanual": np.ones(n, bool),
        "diameter": float("nan"),
    }
    flows = _seg_flows(masks)
    if flows is not None:
        dat["flows"] = flows
    np.save(Path(path), np.array(dat, dtype=object), allow_pickle=True)


def read_labels_file(path: str | Path) -> np.ndarray:
    """Read labels from a TIFF/PNG, a plain ``.npy`` array or a Cellpose ``_seg.npy``."""
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"labels file not found: {p}")
    name = p.name.lower()
    try:
        if name.endswith(".npy"):
            try:
                return np.asarray(np.load(p, allow_pickle=False))
            except ValueError:
                return np.asarray(read_seg_npy(p)["masks"])
        if name.endswith((".tif", ".tiff")):
            import tifffile

            return np.asarray(tifffile.imread(p))
        if name.endswith(".png"):
            from skimage.io import imread

            return np.asarray(imread(p))
    except AnnotationError:
        raise
    except Exception as exc:
        raise AnnotationError(f"{p}: cannot read labels ({type(exc).__name__}: {exc})") from None
    raise AnnotationError(f"{p}: unsupported labels file (use .tif, .png or Cellpose _seg.npy)")


def _digest(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(np.asarray(arr, dtype=LABEL_DTYPE))
    return hashlib.sha256(a.tobytes()).hexdigest()


# -- export / import -------------------------------------------------------------------
def _export_names(items: Sequence[QueueItem], manifest: Mapping[str, Any]) -> list[str]:
    """One safe, distinct file-name stem per item (never another item's name in ``manifest``)."""
    from liveseg.retrain.queue import safe_item_name

    owner = {name: int(entry["id"]) for name, entry in manifest.items() if "id" in entry}
    used: set[str] = set()
    names = []
    for item in items:
        name = safe_item_name(item.name, fallback=f"item-{item.id}")
        if name in used or owner.get(name, item.id) != item.id:
            name = f"{name}-{item.id}"
            k = 2
            while name in used or owner.get(name, item.id) != item.id:
                name = f"{safe_item_name(item.name)}-{item.id}-{k}"
                k += 1
        used.add(name)
        names.append(name)
    return names


def export_items(
    queue: RetrainQueue,
    items: Sequence[QueueItem],
    out_dir: str | Path,
    *,
    fmt: str = "tif",
) -> list[Path]:
    """Write items for annotation; returns the label files written.

    ``fmt`` is ``tif`` (TIFF pairs), ``seg`` (Cellpose ``_seg.npy``) or ``both``. The
    labels are the item's corrected labels when it has them, else the model's prediction
    (the starting point for a correction). A manifest (``liveseg_items.json``) maps names
    back to item ids and remembers what was exported, so :func:`import_folder` imports
    only what the annotator changed. File names are the items' safe names; two items
    that share a name (or a name a previous export gave another item) get ``-<id>``,
    so no item is dropped or overwritten and nothing is written outside ``out_dir``.
    A class-map correction is written as ``<name>_classes.tif`` (re-add a corrected one
    with ``liveseg queue add IMAGE --classes``; ``queue import`` reads label files only).
    """
    import tifffile

    if fmt not in ("tif", "seg", "both"):
        raise AnnotationError(f"unknown export format {fmt!r} (tif, seg, both)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    manifest_path = out / MANIFEST
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    written = []
    for item, name in zip(items, _export_names(items, manifest), strict=True):
        if (out / f"{name}.tif").resolve().parent != root:  # cannot happen for safe names
            raise AnnotationError(f"refusing to export item {item.id} outside {out}: {name!r}")
        image = item.image()
        labels = item.labels()
        if labels is None:
            labels = item.predicted()
        if labels is None:
            labels = np.zeros(item.shape, dtype=LABEL_DTYPE)
        tifffile.imwrite(out / f"{name}.tif", image)
        if item.is_class_map:  # a class-map correction stays a class map, never "labels"
            from liveseg.imageio import write_classes_tif

            write_classes_tif(out / f"{name}_classes.tif", labels, ())
            written.append(out / f"{name}_classes.tif")
        elif fmt in ("tif", "both"):
            tifffile.imwrite(out / f"{name}_labels.tif", labels, compression="zlib")
            written.append(out / f"{name}_labels.tif")
        if fmt in ("seg", "both") and not item.is_class_map:
            write_seg_npy(out / f"{name}_seg.npy", image, labels, f"{name}.tif")
            written.append(out / f"{name}_seg.npy")
        valid = item.valid()
        if valid is not None:
            tifffile.imwrite(out / f"{name}_valid.tif", valid.astype(np.uint8))
        manifest[name] = {"id": item.id, "exported_labels_sha256": _digest(labels)}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return written


@dataclass(frozen=True)
class CheckedLabels:
    """A validated correction, ready to store: labels ``1..N``, renumbering, valid mask."""

    labels: np.ndarray
    renumbered: dict[int, int]
    valid: np.ndarray | None
    source: Path


def read_correction(
    labels_path: str | Path, shape: tuple[int, int], valid_path: str | Path | None = None
) -> CheckedLabels:
    """Read and validate a corrected label file (and its valid mask) for an image of ``shape``.

    Raises
    ------
    AnnotationError
        For anything :func:`check_labels_renumbered` or :func:`check_valid` refuses.
    """
    labels, mapping = check_labels_renumbered(
        read_labels_file(labels_path), shape, str(labels_path)
    )
    valid = None
    if valid_path is not None:
        valid = check_valid(read_labels_file(valid_path), shape, str(valid_path), labels)
    return CheckedLabels(labels, mapping, valid, Path(labels_path))


def _store(
    queue: RetrainQueue, item_id: int, checked: CheckedLabels, who: str | None
) -> QueueItem:
    return queue.set_labels(
        item_id,
        checked.labels,
        checked.valid,
        who=who,
        why=f"imported {checked.source.name}",
        renumbered=checked.renumbered,
        labels_source=str(checked.source),
    )


def import_labels(
    queue: RetrainQueue,
    item_id: int,
    labels_path: str | Path,
    valid_path: str | Path | None = None,
    *,
    relabel: bool = True,
    who: str | None = None,
) -> QueueItem:
    """Validate a corrected label file (and mask) and store it on a queue item.

    Ids with gaps are renumbered and the renumbering recorded on the item; ``relabel``
    is accepted for callers of earlier versions and has no effect.
    """
    del relabel
    item = queue.get(item_id)
    return _store(queue, item_id, read_correction(labels_path, item.shape, valid_path), who)


def import_folder(
    queue: RetrainQueue,
    folder: str | Path,
    *,
    relabel: bool = True,
    include_unchanged: bool = False,
    who: str | None = None,
) -> dict[str, str]:
    """Import every corrected label file of an exported folder; name → outcome.

    Per name it takes ``<name>_seg.npy`` or ``<name>_labels.tif`` (the newer, when both
    exist) and ``<name>_valid.tif``. Files identical to what was exported are skipped
    unless ``include_unchanged`` (accepting the model's prediction as correct). Every
    file is validated before any is stored: the folder is imported all or nothing.

    Raises
    ------
    AnnotationError
        For the first invalid file; then nothing of the folder is imported.
    """
    from liveseg.retrain.queue import safe_item_name

    del relabel
    root = Path(folder)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise AnnotationError(
            f"{root} has no {MANIFEST}: import folders written by `liveseg queue export`, or "
            f"add annotated pairs with `liveseg queue add IMAGE --labels LABELS`"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    outcome: dict[str, str] = {}
    todo: list[tuple[str, int, CheckedLabels]] = []
    for name, entry in sorted(manifest.items()):
        if safe_item_name(name) != name:
            raise AnnotationError(f"{manifest_path}: refusing unsafe item name {name!r}")
        candidates = [
            p for p in (root / f"{name}_seg.npy", root / f"{name}_labels.tif") if p.is_file()
        ]
        if not candidates:
            outcome[name] = "missing"
            continue
        source = max(candidates, key=lambda p: p.stat().st_mtime_ns)
        item = queue.get(int(entry["id"]))
        valid_path = root / f"{name}_valid.tif"
        checked = read_correction(source, item.shape, valid_path if valid_path.is_file() else None)
        unchanged = _digest(checked.labels) == entry.get("exported_labels_sha256")
        if unchanged and not include_unchanged:
            outcome[name] = "unchanged (skipped)"
            continue
        todo.append((name, item.id, checked))
    for name, item_id, checked in todo:
        _store(queue, item_id, checked, who)
        note = f"; {describe_renumbering(checked.renumbered)}" if checked.renumbered else ""
        outcome[name] = f"imported from {checked.source.name}{note}"
    return outcome


def add_pairs(
    queue: RetrainQueue,
    images: Sequence[str | Path],
    labels: Sequence[str | Path],
    valid: Sequence[str | Path] = (),
    *,
    reason: str = "annotated elsewhere",
    who: str | None = None,
    class_maps: bool = False,
) -> list[int]:
    """Add image/label pairs annotated elsewhere as corrected items, all or nothing.

    ``class_maps``: the label files are class maps (class values, e.g. written by
    ``liveseg segment`` as ``<name>_classes.tif`` and corrected), with optional valid
    masks marking the painted pixels of sparse scribbles.

    Every pair is read and validated before the first is added; if adding one fails
    anyway (disk full…), the items this call added are dropped again. Item names come
    from the image file names (made safe and unique by the queue).

    Raises
    ------
    AnnotationError
        When the counts differ or any file is invalid; nothing is added then.
    """
    from liveseg.imageio import read_image

    if len(labels) != len(images):
        raise AnnotationError(
            f"got {len(images)} images but {len(labels)} label files; give one label file "
            f"per image, in the same order"
        )
    if valid and len(valid) != len(images):
        raise AnnotationError(f"got {len(images)} images but {len(valid)} valid masks")
    checked = []
    for k, image_path in enumerate(images):
        img = read_image(image_path)
        shape = (int(img.shape[0]), int(img.shape[1]))
        if class_maps:
            checked.append((image_path, img, _read_class_map(labels[k], shape, valid, k)))
        else:
            checked.append(
                (image_path, img, read_correction(labels[k], shape, valid[k] if valid else None))
            )
    added: list[int] = []
    try:
        for image_path, img, c in checked:
            common: dict[str, Any] = {
                "valid": c.valid,
                "reason": reason,
                "source": "import",
                "name": Path(image_path).name.split(".")[0],
                "who": who,
                "labels_source": str(c.source),
            }
            if class_maps:
                added.append(queue.add(img, classes=c.labels, **common))
            else:
                added.append(queue.add(img, labels=c.labels, renumbered=c.renumbered, **common))
    except BaseException:
        for item_id in added:
            with contextlib.suppress(Exception):
                queue.drop(item_id)
        raise
    return added


def _read_class_map(
    path: str | Path, shape: tuple[int, int], valid: Sequence[str | Path], k: int
) -> CheckedLabels:
    """A class-map correction file (and its valid mask), checked against the image."""
    from liveseg.imageio import read_classes_tif
    from liveseg.retrain.queue import QueueError, check_class_map

    try:
        classes = check_class_map(read_classes_tif(path)[0], shape, str(path))
    except (LivesegError, QueueError) as exc:
        raise AnnotationError(str(exc)) from None
    mask = check_valid(read_labels_file(valid[k]), shape, str(valid[k])) if valid else None
    return CheckedLabels(classes, {}, mask, Path(path))


def open_in_napari(queue: RetrainQueue, item_id: int) -> QueueItem | None:
    """Open an item in napari (image + labels layers); save edited labels on close.

    Returns the updated item when labels changed, else ``None``.

    Raises
    ------
    LivesegError
        When napari is not installed (with the install command and an alternative).
    """
    try:
        import napari
    except ImportError:
        raise LivesegError(
            "napari is not installed. Install it with `pip install 'napari[all]'`, or "
            f"export the item (`liveseg queue export {item_id} -o DIR`), correct "
            f"DIR/<name>_labels.tif in Fiji or napari, and `liveseg queue import DIR`"
        ) from None
    item = queue.get(item_id)
    start = item.labels()
    if start is None:
        start = item.predicted()
    if start is None:
        start = np.zeros(item.shape, dtype=LABEL_DTYPE)
    viewer = napari.Viewer(title=f"liveseg queue item {item.id}: {item.name}")
    viewer.add_image(item.image(), name="image")
    layer = viewer.add_labels(start.copy(), name="labels")
    napari.run()
    edited = np.asarray(layer.data)
    if np.array_equal(edited, start):
        return None
    return queue.set_labels(item.id, edited, item.valid(), why="edited in napari")
