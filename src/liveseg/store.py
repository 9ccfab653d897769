"""The run directory: everything one acquisition (or batch) leaves behind.

```
<run>/images.ome.zarr               raw frames, written by pymmcore-plus's own sink
<run>/images.ome.zarr/<p>/labels/   OME-NGFF label images beside each position's image
<run>/frames.csv                    one row per frame attempt (append-only log)
<run>/objects.csv                   one row per object per frame (+ objects.parquet at end)
<run>/events.jsonl                  errors, skips, triggers, flags
<run>/run.json                      config, versions, hardware, start/end, summary
```

Every table is append-only and flushed per frame, so a run killed at any moment leaves
files that :class:`RunReader` can read: a frame's latest row in ``frames.csv`` wins
(``liveseg resegment`` appends rather than rewrites), and a half-written last line is
ignored.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
from liveseg.measure import OBJECT_COLUMNS
from liveseg.types import CLASS_DTYPE, LABEL_DTYPE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "ACQUIRED",
    "CLASSES",
    "FRAME_COLUMNS",
    "IMAGES",
    "TRIGGERED",
    "WRITE_FAILED",
    "RunReader",
    "RunStore",
    "TriggeredStore",
    "check_output_dir",
    "run_is_live",
    "write_json_atomic",
]

log = logging.getLogger("liveseg.store")

IMAGES = "images.ome.zarr"
TRIGGERED = "triggered.ome.zarr"
CLASSES = "classes"
"""Name of the OME-NGFF label image holding a run's semantic class maps."""
LOCK = ".lock"
"""Held (``filelock``) by the process writing a run, from start to close."""
ACQUIRED = "acquired"
"""frames.csv status of a frame whose image is on disk and not segmented (yet)."""
WRITE_FAILED = "write_failed"
"""frames.csv status of a frame whose image could not be written: never ``ok``."""
"""Triggered sub-acquisitions: one group (series) each, never in the base grid."""
FRAME_COLUMNS: tuple[str, ...] = (
    "index",
    "time_s",
    "position",
    "t",
    "c",
    "z",
    "stage_x_um",
    "stage_y_um",
    "count",
    "mean_area_px",
    "latency_ms",
    "segment_ms",
    "status",
    "series",
    "event_index",
    "trigger",
    "trigger_frame",
    "trigger_label",
    "class_summary",
)
_NAN = float("nan")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old or the new file, never half of one."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default), encoding="utf-8")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return repr(obj)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _CsvLog:
    """An append-only CSV file, flushed per write; thread-safe."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = list(columns)
        new = not path.exists() or path.stat().st_size == 0
        self._fh = path.open("a", newline="", encoding="utf-8")
        if not new:
            with path.open(encoding="utf-8") as fh:
                header = fh.readline().strip().split(",")
            self.columns = header
        self._writer = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="ignore")
        if new:
            self._writer.writeheader()
            self._fh.flush()
        self._lock = threading.Lock()

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        for row in rows:
            w.writerow({k: _cell(v) for k, v in row.items()})
        with self._lock:
            self._fh.write(buf.getvalue())  # one write per frame: a kill cuts at most one line
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def _cell(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


class RunStore:
    """Writes one run directory. Thread-safe: workers write while the runner acquires."""

    def __init__(
        self,
        path: str | Path,
        *,
        label_name: str = "segmentation",
        extra_object_columns: Sequence[str] = ("score",),
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.images_path = self.path / IMAGES
        self.label_name = label_name
        self._frames = _CsvLog(self.path / "frames.csv", FRAME_COLUMNS)
        obj_cols = ["frame", *OBJECT_COLUMNS, *extra_object_columns, "extra"]
        self._objects = _CsvLog(self.path / "objects.csv", obj_cols)
        self._events_fh = (self.path / "events.jsonl").open("a", encoding="utf-8")
        self._events_lock = threading.Lock()
        self._labels_lock = threading.Lock()
        self._label_arrays: dict[tuple[int, str], tuple[Any, list[str]]] = {}
        self._run_info: dict[str, Any] = {}
        self._lock: Any = None

    # -- run.json ---------------------------------------------------------------------
    def start(self, info: Mapping[str, Any]) -> None:
        """Write run.json at the start (status ``running``) so a killed run is described.

        The store holds ``<run>/.lock`` from here until :meth:`close`: a reader that
        finds run.json ``running`` and the lock free knows the run was interrupted.
        """
        self._hold_lock()
        self._run_info = {"status": "running", "started": _now(), **info}
        write_json_atomic(self.path / "run.json", self._run_info)

    def _hold_lock(self) -> None:
        from filelock import FileLock, Timeout

        if self._lock is not None:
            return
        lock = FileLock(self.path / LOCK, timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise LivesegError(
                f"{self.path} is being written by another liveseg process"
            ) from None
        self._lock = lock

    def finish(self, summary: Mapping[str, Any], status: str = "finished") -> None:
        """Rewrite run.json with the summary and convert objects.csv to parquet."""
        self._run_info.update(status=status, finished=_now(), summary=dict(summary))
        write_json_atomic(self.path / "run.json", self._run_info)

    # -- events -----------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> None:
        """Append one event (a JSON line) to events.jsonl."""
        record = {"time": _now(), "kind": kind, **fields}
        line = json.dumps(record, default=_json_default) + "\n"
        with self._events_lock:
            self._events_fh.write(line)
            self._events_fh.flush()

    # -- tables -----------------------------------------------------------------------
    def frame_row(self, row: Mapping[str, Any]) -> None:
        """Append one frame row (see :data:`FRAME_COLUMNS`)."""
        self._frames.write([row])

    def object_rows(self, frame_index: int, columns: Mapping[str, np.ndarray]) -> None:
        """Append the per-object rows of one frame (columns of equal length)."""
        if not columns or len(columns.get("label", ())) == 0:
            return
        n = len(columns["label"])
        known = set(self._objects.columns)
        extra_cols = [k for k in columns if k not in known]
        rows = []
        for i in range(n):
            row: dict[str, Any] = {"frame": frame_index}
            for k, v in columns.items():
                if k in known:
                    row[k] = v[i]
            if extra_cols:
                row["extra"] = json.dumps(
                    {k: _cell(columns[k][i]) for k in extra_cols}, default=_json_default
                )
            rows.append(row)
        self._objects.write(rows)

    # -- labels -----------------------------------------------------------------------
    def write_labels(self, position: int, index: Mapping[str, int], labels: np.ndarray) -> None:
        """Store ``labels`` for the image plane at ``index`` of position ``position``."""
        self._write_plane(position, index, labels, self.label_name, LABEL_DTYPE, None)

    def write_classes(
        self,
        position: int,
        index: Mapping[str, int],
        classes: np.ndarray,
        image_label: Mapping[str, Any],
    ) -> None:
        """Store a class map as the label image ``labels/classes`` beside the instances.

        ``image_label`` is the OME-NGFF ``image-label`` block (colours and class names,
        :meth:`liveseg.builtins.classes.ClassTable.ngff_image_label`), so ome-zarr tools
        and napari show every class with its name and colour.
        """
        self._write_plane(position, index, classes, CLASSES, CLASS_DTYPE, image_label)

    def _write_plane(
        self,
        position: int,
        index: Mapping[str, int],
        plane: np.ndarray,
        name: str,
        dtype: np.dtype[Any],
        image_label: Mapping[str, Any] | None,
    ) -> None:
        arr, dims = self._label_array(position, plane.shape, name, dtype, image_label)
        key = tuple(int(index.get(d, 0)) for d in dims[:-2])
        if any(k >= s for k, s in zip(key, arr.shape[:-2], strict=False)):
            new_shape = tuple(max(k + 1, s) for k, s in zip(key, arr.shape[:-2], strict=False))
            with self._labels_lock:
                arr.resize((*new_shape, *arr.shape[-2:]))
        arr[key] = np.asarray(plane, dtype=dtype)

    def _label_array(
        self,
        position: int,
        plane: tuple[int, ...],
        name: str,
        dtype: np.dtype[Any],
        image_label: Mapping[str, Any] | None,
    ) -> tuple[Any, list[str]]:
        with self._labels_lock:
            key = (position, name)
            if key not in self._label_arrays:
                self._label_arrays[key] = create_label_array(
                    self.images_path, position, name, plane, dtype=dtype, image_label=image_label
                )
            return self._label_arrays[key]

    def close(self) -> None:
        """Close the table files and write objects.parquet next to objects.csv."""
        self._frames.close()
        self._objects.close()
        with self._events_lock:
            self._events_fh.close()
        try:
            _csv_to_parquet(self.path / "objects.csv", self.path / "objects.parquet")
        except Exception as exc:  # the CSV is the source of truth; parquet is a convenience
            log.warning("could not write objects.parquet: %r", exc)
        try:
            compact_frames(self.path / "frames.csv")
        except Exception as exc:  # the log stays readable (latest row wins) if this fails
            log.warning("could not compact frames.csv: %r", exc)
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class TriggeredStore:
    """``<run>/triggered.ome.zarr``: one OME-Zarr image group per triggered series.

    Each series ``<name>/0`` is a ``(c, z, y, x)`` array (its sizes are declared when the
    proposal is accepted; y and x come with the first frame) with its labels in
    ``<name>/labels/segmentation/0``; the group's ``liveseg`` attributes link it to the
    trigger, the frame and the object label that caused it. Written by the worker.
    """

    def __init__(self, run_dir: Path, label_name: str = "segmentation") -> None:
        self.path = Path(run_dir) / TRIGGERED
        self.label_name = label_name
        self._lock = threading.Lock()
        self._sizes: dict[str, dict[str, int]] = {}
        self._arrays: dict[tuple[str, str], Any] = {}
        self._root: Any = None
        self._z_um: dict[str, dict[int, float]] = {}
        self._scaled: set[str] = set()
        self._z_steps: dict[str, float] = {}
        self._pixel_size: dict[str, float] = {}
        self._image_label: dict[str, dict[str, Any]] = {}

    def declare(self, series: str, sizes: Mapping[str, int], link: Mapping[str, Any]) -> None:
        """Record a series' shape and what triggered it (before any frame arrives)."""
        import zarr

        with self._lock:
            if self._root is None:
                self._root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
            grp = self._root.require_group(series)
            grp.attrs["liveseg"] = {"series": series, "sizes": dict(sizes), **dict(link)}
            self._sizes[series] = {"c": int(sizes.get("c", 1)), "z": int(sizes.get("z", 1))}

    def _set_scale(self, series: str, kind: str, pixel_size_um: float, z_step_um: float) -> None:
        """Write the OME-NGFF metadata of a series' image or labels with its µm scale."""
        assert self._root is not None
        grp = self._root.require_group(series)
        um = "micrometer"
        multiscales = [
            {
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "z", "type": "space", "unit": um},
                    {"name": "y", "type": "space", "unit": um},
                    {"name": "x", "type": "space", "unit": um},
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {
                                "type": "scale",
                                "scale": [1.0, z_step_um, pixel_size_um, pixel_size_um],
                            }
                        ],
                    }
                ],
            }
        ]
        if kind == "image":
            grp.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
        else:
            name = self._label_group(kind)
            labels = grp.require_group("labels")
            existing = list((labels.attrs.get("ome") or {}).get("labels", []))
            if name not in existing:
                labels.attrs["ome"] = {"version": "0.5", "labels": [*existing, name]}
            extra = self._image_label.get(kind, {}) if kind == CLASSES else {}
            labels.require_group(name).attrs["ome"] = {
                "version": "0.5",
                "multiscales": multiscales,
                "image-label": {**extra, "version": "0.5", "source": {"image": "../../"}},
            }

    def _label_group(self, kind: str) -> str:
        """The label image a kind is stored in (``labels``: the instance label name)."""
        return self.label_name if kind == "labels" else kind

    def _z_step(self, series: str, z: int, z_um: float | None) -> float | None:
        """The series' z-step from two planes' stage z (None until two are known)."""
        if z_um is None:
            return None
        seen = self._z_um.setdefault(series, {})
        seen[z] = float(z_um)
        if len(seen) < 2:
            return None
        (z0, u0), (z1, u1) = sorted(seen.items())[:2]
        step = abs(u1 - u0) / (z1 - z0)
        return step if step > 0 else None

    def _array(
        self,
        series: str,
        kind: str,
        plane: tuple[int, int],
        dtype: Any,
        pixel_size_um: float = 1.0,
    ) -> Any:
        key = (series, kind)
        with self._lock:
            if key in self._arrays:
                return self._arrays[key]
            import zarr

            if self._root is None:
                self._root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
            sizes = self._sizes.get(series, {"c": 1, "z": 1})
            self._pixel_size[series] = pixel_size_um
            self._set_scale(series, kind, pixel_size_um, self._z_steps.get(series, 1.0))
            grp = self._root.require_group(series)
            dims = ["c", "z", "y", "x"]
            target = grp if kind == "image" else grp["labels"][self._label_group(kind)]
            arr = target.create_array(
                "0",
                shape=(sizes["c"], sizes["z"], *plane),
                chunks=(1, 1, *plane),
                dtype=dtype,
                fill_value=0,
                dimension_names=dims,
                overwrite=True,
            )
            self._arrays[key] = arr
            return arr

    def write(
        self,
        series: str,
        index: Mapping[str, int],
        *,
        image: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        z_um: float | None = None,
        pixel_size_um: float = 1.0,
        classes: np.ndarray | None = None,
        image_label: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the image, labels and/or class map of one plane (``index``: c and z).

        ``z_um`` (the plane's stage z) gives the stack its z-step in the OME-NGFF scale
        as soon as two planes are known; ``pixel_size_um`` its y/x scale. A class map
        goes to ``<series>/labels/classes`` with ``image_label`` (colours, class names).
        """
        key = (int(index.get("c", 0)), int(index.get("z", 0)))
        if image is not None:
            arr = self._array(series, "image", image.shape[-2:], image.dtype, pixel_size_um)
            arr[key] = image
            step = self._z_step(series, key[1], z_um)
            if step is not None and series not in self._scaled:
                with self._lock:
                    self._scaled.add(series)
                    self._z_steps[series] = step
                    self._set_scale(series, "image", self._pixel_size.get(series, 1.0), step)
                    for kind in ("labels", CLASSES):
                        if (series, kind) in self._arrays:
                            self._set_scale(series, kind, self._pixel_size.get(series, 1.0), step)
        if labels is not None:
            arr = self._array(
                series, "labels", labels.shape[-2:], LABEL_DTYPE, self._pixel_size.get(series, 1.0)
            )
            arr[key] = np.asarray(labels, dtype=LABEL_DTYPE)
        if classes is not None:
            if image_label is not None:
                self._image_label.setdefault(CLASSES, dict(image_label))
            arr = self._array(
                series, CLASSES, classes.shape[-2:], CLASS_DTYPE, self._pixel_size.get(series, 1.0)
            )
            arr[key] = np.asarray(classes, dtype=CLASS_DTYPE)


def check_output_dir(
    path: Path, command: str, own: Callable[[Mapping[str, Any]], bool] | None = None
) -> None:
    """Refuse an output directory that holds another run: never destroy one.

    ``own`` says whether an existing run.json is this command's own earlier output
    (``batch`` resumes its own output); anything else with a run.json or frames.csv is
    refused with a one-line error.

    Raises
    ------
    LivesegError
        When ``path`` holds another run.
    """
    info_path, frames = path / "run.json", path / "frames.csv"
    if not info_path.exists() and not frames.exists():
        return
    try:
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    if own is not None and info and own(info):
        return
    kind = info.get("kind") or "acquisition"
    raise LivesegError(
        f"{command}: {path} already holds another liveseg run ({kind}); "
        f"choose a new output directory"
    )


def run_is_live(run_dir: Path) -> bool:
    """Whether a process still holds ``run_dir``'s lock (portable: ``filelock``).

    A run without a lock file (written before liveseg held one) is taken as not live.
    """
    from filelock import FileLock, Timeout

    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    probe = FileLock(path, timeout=0, thread_local=False)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:  # a read-only run directory: nobody can be writing it
        return False
    probe.release()
    return False


def image_group(images: Path, position: int) -> Path:
    """The OME-Zarr image group of one position.

    pymmcore-plus writes a single-position acquisition as one image at the store's root
    and a multi-position one as a bioformats2raw layout with one image per position.
    """
    root_meta = images / "zarr.json"
    if root_meta.exists():
        attrs = json.loads(root_meta.read_text()).get("attributes", {})
        if "multiscales" in attrs.get("ome", {}):
            return images
    return images / str(position)


def _image_array_meta(images: Path, position: int) -> tuple[list[int], list[str], dict[str, Any]]:
    """Shape, dimension names and group attrs of a position's image array, if present."""
    meta_file = image_group(images, position) / "0" / "zarr.json"
    group_file = image_group(images, position) / "zarr.json"
    if not meta_file.exists():
        return [], [], {}
    meta = json.loads(meta_file.read_text())
    attrs = json.loads(group_file.read_text()).get("attributes", {}) if group_file.exists() else {}
    dims = meta.get("dimension_names") or [f"d{i}" for i in range(len(meta["shape"]))]
    return list(meta["shape"]), list(dims), attrs


def create_label_array(
    images: Path,
    position: int,
    name: str,
    plane: tuple[int, ...],
    *,
    dtype: Any = LABEL_DTYPE,
    image_label: Mapping[str, Any] | None = None,
) -> tuple[Any, list[str]]:
    """Create (or open) the OME-NGFF label image for one position of an OME-Zarr store.

    The label array mirrors the image array's shape and axes so that ome-zarr tools and
    napari overlay the two; without an image array it is ``(t, y, x)`` and grows.
    ``image_label`` adds to the label image's ``image-label`` block (a class map's
    ``colors`` and ``properties``); ``dtype`` is ``uint32`` for instances, ``uint8`` for
    class maps.
    """
    import zarr

    shape, dims, attrs = _image_array_meta(images, position)
    if not shape:
        shape, dims = [1, *plane], ["t", "y", "x"]
    labels_dir = image_group(images, position) / "labels"
    root = zarr.open_group(str(labels_dir), mode="a", zarr_format=3)
    ome_attrs: Any = root.attrs.get("ome") or {}
    existing = list(ome_attrs.get("labels", []))
    if name not in existing:
        root.attrs["ome"] = {"version": "0.5", "labels": [*existing, name]}
    grp = root.require_group(name)
    multiscales = attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        multiscales = [
            {
                "axes": [{"name": d, "type": "space" if d in "yx" else "time"} for d in dims],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1.0] * len(dims)}
                        ],
                    }
                ],
            }
        ]
    grp.attrs["ome"] = {
        "version": "0.5",
        "multiscales": multiscales,
        "image-label": {
            **dict(image_label or {}),
            "version": "0.5",
            "source": {"image": "../../"},
        },
    }
    if "0" in grp:
        arr = grp["0"]
    else:
        chunks = tuple([1] * (len(shape) - 2) + list(shape[-2:]))
        arr = grp.create_array(
            "0",
            shape=tuple(shape),
            chunks=chunks,
            dtype=np.dtype(dtype).name,
            fill_value=0,
            dimension_names=dims,
        )
    return arr, dims


def _csv_to_parquet(src: Path, dst: Path) -> None:
    if not src.exists():
        return
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(src)
    tmp = dst.with_name(dst.name + ".part")
    pq.write_table(table, tmp)
    os.replace(tmp, dst)


# -- reading ------------------------------------------------------------------------------
def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a killed writer may leave half a line
    reader = csv.DictReader(io.StringIO(text))
    return [row for row in reader if None not in row.values()]


def _convert(row: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v is None or v == "":
            out[k] = None
            continue
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def _class_summary(cell: Any) -> dict[str, float]:
    """The named numbers of a ``class_summary`` cell (JSON), nulls as NaN."""
    if not isinstance(cell, str) or not cell.startswith("{"):
        return {}
    try:
        values = json.loads(cell)
    except ValueError:
        return {}
    return {str(k): _NAN if v is None else float(v) for k, v in values.items()}


def latest_frame_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The row that speaks for each frame of a frames.csv log, ordered by index.

    A frame's latest segmentation row (ok / skipped / failed) wins over its ``acquired``
    row, and a ``write_failed`` row wins over everything: its image is not on disk.
    """
    latest: dict[int, Mapping[str, Any]] = {}
    for row in rows:
        i = int(row["index"])
        old = latest.get(i)
        if old is not None and (old["status"] == WRITE_FAILED or row["status"] == ACQUIRED):
            continue
        latest[i] = row
    return [latest[i] for i in sorted(latest)]


def compact_frames(path: Path) -> None:
    """Rewrite a closed frames.csv with one row per frame (what pandas users expect).

    While a run is written, frames.csv is an append-only log (a kill cuts at most one
    line; a frame may have several rows). When the store closes, the log is replaced
    atomically by the rows :func:`latest_frame_rows` picks, in index order.
    """
    if not path.exists():
        return
    with path.open(newline="", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    rows = _read_csv_rows(path)
    keep = latest_frame_rows(rows)
    if len(keep) == len(rows):
        return
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(keep)
    os.replace(tmp, path)


class RunReader:
    """Read a run directory, finished or killed mid-run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise LivesegError(f"run directory not found: {self.path}")
        if not (self.path / "run.json").exists() and not (self.path / "frames.csv").exists():
            raise LivesegError(f"{self.path} is not a liveseg run (no run.json, no frames.csv)")

    @property
    def run_info(self) -> dict[str, Any]:
        """run.json as a dict (empty if missing).

        A run whose run.json still says ``running`` but whose process is gone (its lock
        file is not held) reads as ``interrupted``.
        """
        p = self.path / "run.json"
        info: dict[str, Any] = json.loads(p.read_text()) if p.exists() else {}
        if info.get("status") == "running" and not run_is_live(self.path):
            info["status"] = "interrupted"
        return info

    @property
    def status(self) -> str:
        """``running``, ``finished``, ``interrupted``, … (see :attr:`run_info`)."""
        return str(self.run_info.get("status", "unknown"))

    def frames(self) -> list[dict[str, Any]]:
        """One row per frame, ordered by frame index.

        A chain's class-map numbers (the ``class_summary`` JSON cell) are also keys of
        the row (``class_fraction.pore``, ``grain.g_planimetric``, …).

        A frame's latest segmentation row (ok / skipped / failed) wins over its
        ``acquired`` row (written when the image was stored, possibly after the worker
        was done), and a ``write_failed`` row wins over everything: its image is not
        on disk, so nothing about it may read as ok.
        """
        out = []
        for row in latest_frame_rows(_read_csv_rows(self.path / "frames.csv")):
            r = _convert(row)
            r.update(_class_summary(r.get("class_summary")))
            out.append(r)
        return out

    def frame(self, index: int) -> dict[str, Any]:
        """The latest row of one frame."""
        for row in self.frames():
            if row["index"] == index:
                return row
        raise LivesegError(f"frame {index} is not in run {self.path}")

    def objects(self, frame: int | None = None) -> list[dict[str, Any]]:
        """Object rows (all, or of one frame)."""
        rows = [_convert(r) for r in _read_csv_rows(self.path / "objects.csv")]
        if frame is not None:
            rows = [r for r in rows if r["frame"] == frame]
        return rows

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """events.jsonl records (all, or of one kind); a torn last line is skipped."""
        p = self.path / "events.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if kind is None or rec.get("kind") == kind:
                out.append(rec)
        return out

    def _plane_key(self, row: Mapping[str, Any], dims: Sequence[str]) -> tuple[int, ...]:
        idx = json.loads(row["event_index"]) if row.get("event_index") else {}
        return tuple(int(idx.get(d, row.get(d) or 0)) for d in dims[:-2])

    def _open(self, position: int, sub: str) -> Any:
        import zarr

        return zarr.open_array(str(image_group(self.path / IMAGES, position) / sub), mode="r")

    def _open_row(self, row: Mapping[str, Any], sub: str) -> Any:
        series = str(row.get("series") or "base")
        if series == "base":
            return self._open(int(row["position"]), sub)
        import zarr

        return zarr.open_array(str(self.path / TRIGGERED / series / sub), mode="r")

    def triggered(self) -> list[dict[str, Any]]:
        """One record per triggered series: what triggered it and its frame indices.

        Keys: ``series``, ``trigger``, ``frame`` (the triggering frame), ``label`` (the
        object), ``target_xy``, ``n_events``, ``frames`` (indices of its acquired frames).
        """
        frames_by_series: dict[str, list[int]] = {}
        for row in self.frames():
            series = str(row.get("series") or "base")
            if series != "base":
                frames_by_series.setdefault(series, []).append(int(row["index"]))
        out = []
        for rec in self.events("proposal"):
            if not rec.get("accepted") or not rec.get("series"):
                continue
            out.append(
                {
                    "series": rec["series"],
                    "trigger": rec.get("source"),
                    "frame": rec.get("frame"),
                    "label": rec.get("label"),
                    "target_xy": rec.get("target_xy"),
                    "n_events": rec.get("n_events"),
                    "frames": frames_by_series.get(rec["series"], []),
                }
            )
        return out

    def image(self, index: int) -> np.ndarray:
        """The raw image of frame ``index`` (base or triggered)."""
        row = self.frame(index)
        arr = self._open_row(row, "0")
        dims = list(arr.metadata.dimension_names or [])
        return np.asarray(arr[self._plane_key(row, dims)])

    def labels(self, index: int, name: str = "segmentation") -> np.ndarray | None:
        """The stored labels of frame ``index`` (None if it was never segmented)."""
        row = self.frame(index)
        if row.get("status") != "ok":
            return None
        try:
            arr = self._open_row(row, f"labels/{name}/0")
        except Exception:
            return None
        dims = list(arr.metadata.dimension_names or [])
        return np.asarray(arr[self._plane_key(row, dims)])

    def iter_frames(self) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray | None]]:
        """(row, image, labels) for every frame."""
        for row in self.frames():
            yield row, self.image(row["index"]), self.labels(row["index"])

    def summary(self) -> dict[str, Any]:
        """Counts by status, read from the tables (works for killed runs)."""
        frames = self.frames()
        by_status: dict[str, int] = {}
        for r in frames:
            by_status[str(r["status"])] = by_status.get(str(r["status"]), 0) + 1
        return {"frames": len(frames), "by_status": by_status, "time": time.time()}
