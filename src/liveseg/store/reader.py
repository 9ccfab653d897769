"""RunReader: reads a run directory, finished or killed mid-run."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
from liveseg.store.layout import image_group, run_is_live
from liveseg.store.tables import (
    ACQUIRED,
    IMAGES,
    TRIGGERED,
    _class_summary,
    _convert,
    _read_csv_rows,
    latest_frame_rows,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence


log = logging.getLogger("liveseg.store")


class RunReader:
    """Read a run directory, finished or killed mid-run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise LivesegError(f"run directory not found: {self.path}")
        if not (self.path / "run.json").exists() and not (self.path / "frames.csv").exists():
            raise LivesegError(f"{self.path} is not a liveseg run (no run.json, no frames.csv)")
        self._recovered_rows: list[dict[str, Any]] | None = None

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
        if self.status == "interrupted":
            known = {int(r["index"]) for r in out}
            out += [r for r in self._recovered(out) if r["index"] not in known]
        return out

    def _recovered(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Rows for base planes on disk that no frame row names (computed once).

        The image writer appends index rows in batches (see :mod:`liveseg.image_writer`),
        so a run killed inside a batch's window has a few images without a row. They
        are found from the image store's chunks, get indices after the last indexed
        frame (ordered by time point, then position, channel, z), and read as
        ``acquired`` with unknown time and stage position: reachable, and segmented by
        ``resegment``.
        """
        if self._recovered_rows is not None:
            return self._recovered_rows
        import zarr

        named: set[tuple[int, ...]] = set()
        for r in rows:
            if str(r.get("series") or "base") != "base":
                continue
            idx = json.loads(r["event_index"]) if r.get("event_index") else {}
            named.add((int(r["position"]), *(int(idx.get(d, 0)) for d in ("t", "c", "z"))))
        found: list[tuple[tuple[int, ...], dict[str, int]]] = []
        images = self.path / IMAGES
        position = 0
        while (image_group(images, position) / "0" / "zarr.json").exists():
            array_dir = image_group(images, position) / "0"
            arr = zarr.open_array(str(array_dir), mode="r")
            dims = list(arr.metadata.dimension_names or [])
            chunks = arr.chunks
            for key in np.ndindex(*arr.shape[:-2]):
                idx = dict(zip(dims[:-2], (int(k) for k in key), strict=True))
                plane = (position, *(idx.get(d, 0) for d in ("t", "c", "z")))
                if plane in named:
                    continue
                coords = (*(k // c for k, c in zip(key, chunks, strict=False)), 0, 0)
                chunk = array_dir / arr.metadata.encode_chunk_key(coords)
                if chunk.exists() and np.asarray(arr[key]).any():
                    found.append((plane, idx))
            if image_group(images, position) == images:
                break  # a single-position store: one image at the root
            position += 1
        first = max((int(r["index"]) for r in rows), default=-1) + 1
        out: list[dict[str, Any]] = []
        for i, (plane, idx) in enumerate(
            sorted(found, key=lambda f: (f[0][1], f[0][0], *f[0][2:]))
        ):
            p, t, c, z = plane
            out.append(
                {
                    "index": first + i,
                    "time_s": float("nan"),
                    "position": p,
                    "t": t,
                    "c": c,
                    "z": z,
                    "stage_x_um": float("nan"),
                    "stage_y_um": float("nan"),
                    "status": ACQUIRED,
                    "series": "base",
                    "event_index": json.dumps({**idx, "p": p}),
                    "trigger": "",
                    "trigger_frame": "",
                    "trigger_label": "",
                    "recovered": True,
                }
            )
        if out:
            log.warning("%s: %d written images had no frame row; recovered", self.path, len(out))
        self._recovered_rows = out
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
