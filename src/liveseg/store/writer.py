"""RunStore: writes one run directory (tables, events, labels, run.json)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
from liveseg.measure import OBJECT_COLUMNS
from liveseg.store.layout import create_label_array
from liveseg.store.tables import (
    CLASSES,
    FRAME_COLUMNS,
    IMAGES,
    LOCK,
    _cell,
    _csv_to_parquet,
    _CsvLog,
    _json_default,
    _now,
    compact_frames,
    write_json_atomic,
)
from liveseg.types import CLASS_DTYPE, LABEL_DTYPE

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


log = logging.getLogger("liveseg.store")


class RunStore:
    """Writes one run directory. Thread-safe: workers write while the runner acquires.

    ``flush_interval_s``: how long frames.csv and objects.csv rows may wait in the file
    buffer (0: flushed per write; a live run uses ``storage.index_interval_s``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        label_name: str = "segmentation",
        extra_object_columns: Sequence[str] = ("score",),
        flush_interval_s: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.images_path = self.path / IMAGES
        self.label_name = label_name
        self._frames = _CsvLog(self.path / "frames.csv", FRAME_COLUMNS, flush_interval_s)
        obj_cols = ["frame", *OBJECT_COLUMNS, *extra_object_columns, "extra"]
        self._objects = _CsvLog(self.path / "objects.csv", obj_cols, flush_interval_s)
        self._events_fh = (self.path / "events.jsonl").open("a", encoding="utf-8")
        self._events_lock = threading.Lock()
        self._labels_lock = threading.Lock()
        self._label_arrays: dict[tuple[int, str], tuple[Any, list[str]]] = {}
        # Label arrays created empty by this store: the planes written to each so far.
        # An empty plane for any other index is not written (a missing chunk reads as 0).
        self._untouched: dict[tuple[int, str], set[tuple[int, ...]]] = {}
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

    def frame_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append several frame rows with one write (one flush)."""
        self._frames.write(rows)

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
        shape = arr.shape
        if any(k >= s for k, s in zip(key, shape[:-2], strict=False)):
            new_shape = tuple(max(k + 1, s) for k, s in zip(key, shape[:-2], strict=False))
            with self._labels_lock:
                arr.resize((*new_shape, *shape[-2:]))
        untouched = self._untouched.get((position, name))
        if untouched is not None:
            if key not in untouched and _is_empty(plane):
                return  # the chunk is missing, so it reads as the empty plane it would hold
            untouched.add(key)  # from here on this plane is written, also when empty
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
                arr, _dims = self._label_arrays[key] = create_label_array(
                    self.images_path, position, name, plane, dtype=dtype, image_label=image_label
                )
                if _is_blank(arr):
                    self._untouched[key] = set()
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


def _is_empty(plane: np.ndarray) -> bool:
    """Whether a label or class plane is all zero (``max`` is about 3x faster than ``any``)."""
    if plane.size == 0:
        return True
    if plane.dtype.kind == "u":
        return bool(plane.max() == 0)
    return not plane.any()


def _is_blank(arr: Any) -> bool:
    """Whether a label array has no chunk stored yet and reads 0 where it has none."""
    try:
        return bool(arr.fill_value == 0) and int(arr.nchunks_initialized) == 0
    except Exception:  # another array API: write every plane
        return False
