"""The run directory's writer: table rows that reach the file, label planes that read back."""

from __future__ import annotations

import csv
import time

import numpy as np
import zarr

import liveseg
from liveseg.image_writer import index_row
from liveseg.store import RunStore
from liveseg.types import Frame


def _row(i: int, status: str = "ok") -> dict[str, object]:
    return {**index_row(Frame(i, np.zeros((8, 8), np.uint16)), status), "count": 0}


def _indices_on_disk(path) -> list[int]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [int(r["index"]) for r in csv.DictReader(fh)]


def test_rows_reach_the_file_without_a_later_write_or_close(tmp_path):
    """A live run's rows are flushed together, and the last ones still arrive on their own."""
    store = RunStore(tmp_path / "run", flush_interval_s=0.2)
    try:
        for i in range(50):  # a burst, as a camera-rate run writes them
            store.frame_row(_row(i))
        deadline = time.monotonic() + 10
        while _indices_on_disk(tmp_path / "run" / "frames.csv") != list(range(50)):
            assert time.monotonic() < deadline, "rows never reached frames.csv"
            time.sleep(0.05)
    finally:
        store.close()


def test_without_an_interval_each_row_is_on_disk_when_the_call_returns(tmp_path):
    store = RunStore(tmp_path / "run")
    try:
        for i in range(3):
            store.frame_row(_row(i))
            assert _indices_on_disk(tmp_path / "run" / "frames.csv") == list(range(i + 1))
    finally:
        store.close()


def test_empty_label_planes_are_not_stored_yet_read_back_empty(tmp_path):
    """Blank frames cost no chunk; a plane overwritten with nothing reads back empty."""
    store = RunStore(tmp_path / "run")
    full = np.zeros((16, 16), np.uint32)
    full[2:6, 3:9] = 7
    empty = np.zeros_like(full)
    for i, plane in enumerate([empty, full, empty, empty]):
        store.write_labels(0, {"t": i}, plane)
        store.frame_row(_row(i))
    store.write_labels(0, {"t": 1}, empty)  # resegment-like overwrite of a stored plane
    store.write_labels(0, {"t": 3}, full)
    store.close()

    run = liveseg.open_run(tmp_path / "run")
    got = [run.labels(i) for i in range(4)]
    assert all(g is not None and g.shape == full.shape for g in got)
    assert [int(g.max()) for g in got] == [0, 0, 0, 7]
    np.testing.assert_array_equal(got[3], full)
    stored = _label_array(tmp_path / "run")
    assert stored.shape[0] == 4
    assert stored.nchunks_initialized == 1  # frame 3 only: frame 1's chunk is now empty


def _label_array(run_dir):
    images = run_dir / "images.ome.zarr"
    (meta,) = images.rglob("labels/segmentation/0/zarr.json")
    return zarr.open_array(str(meta.parent), mode="r")
