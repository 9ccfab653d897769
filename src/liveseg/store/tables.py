"""The run directory's names and tables: frames.csv / objects.csv logs, JSON files."""

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

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence


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
    """An append-only CSV file; thread-safe.

    With ``flush_interval_s`` 0 every write is flushed at once. A live run passes
    ``storage.index_interval_s``: rows then reach the file at most that long after they
    were written (a flusher thread catches the last ones), so a camera-rate stream of
    rows costs one system call per interval instead of one per frame. A kill loses at
    most that window's rows, and a partly written last line, which readers skip.
    """

    def __init__(self, path: Path, columns: Sequence[str], flush_interval_s: float = 0.0) -> None:
        self.path = path
        self.columns = list(columns)
        new = not path.exists() or path.stat().st_size == 0
        self._fh = path.open("a", newline="", encoding="utf-8")
        if not new:
            with path.open(encoding="utf-8") as fh:
                header = fh.readline().strip().split(",")
            self.columns = header
        if new:
            csv.writer(self._fh).writerow(self.columns)
            self._fh.flush()
        self._csv = csv.writer(self._fh)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._interval = flush_interval_s
        self._last_flush = time.monotonic()
        self._dirty = False
        self._closed = False
        self._flusher: threading.Thread | None = None

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        columns = self.columns
        lines = [[_cell(row.get(c, "")) for c in columns] for row in rows]
        with self._lock:
            self._csv.writerows(lines)  # into the file's buffer; flushed below or later
            now = time.monotonic()
            if self._interval <= 0 or now - self._last_flush >= self._interval:
                self._flush_locked(now)
                return
            if self._dirty:
                return  # the flusher is already counting down to this interval's flush
            self._dirty = True
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name=f"liveseg-{self.path.name}", daemon=True
                )
                self._flusher.start()
            self._wake.notify()

    def _flush_locked(self, now: float) -> None:
        self._fh.flush()
        self._last_flush = now
        self._dirty = False

    def _flush_loop(self) -> None:
        with self._lock:
            while not self._closed:
                if not self._dirty:
                    self._wake.wait()
                    continue
                left = self._last_flush + self._interval - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                self._flush_locked(time.monotonic())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            self._fh.close()
        if self._flusher is not None:
            self._flusher.join(timeout=10)


def _cell(v: Any) -> Any:
    t = type(v)
    if t is str or t is int:  # most cells
        return v
    if t is float or isinstance(v, np.floating):
        return f"{float(v):.6g}"
    if isinstance(v, bool | np.bool_ | np.integer):
        return int(v)
    return v


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
