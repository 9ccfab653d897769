"""A grid acquisition (useq ``grid_plan``) as one lazy mosaic image, placed by stage position.

Each base frame of one position, time point, channel and z plane of a liveseg run is put
where its stage coordinates (``frames.csv``: ``stage_x_um``, ``stage_y_um``, the stage's
reported position) and the run's pixel size say, with the transform of
:mod:`liveseg.coords`: a frame's centre pixel is at its stage position, columns grow with
stage x and rows with stage y. Where tiles overlap, the later frame's pixels win (no
blending, no registration: the stage is trusted to the nearest pixel).

The mosaic is a dask array whose chunks read only the frames that cover them, so
``liveseg mosaic RUN`` never holds the whole grid in memory.

Limits: the camera is assumed aligned with the stage (not mirrored, transposed or
rotated; run.json does not record those settings, so this is not checked), and all
frames of the grid must have the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import ConfigError

if TYPE_CHECKING:
    import os

    import dask.array as da

__all__ = ["GridTile", "grid_layout", "grid_mosaic", "is_run_dir"]


@dataclass(frozen=True)
class GridTile:
    """One frame of the grid and where its top-left pixel lands in the mosaic.

    ``array`` is the frame's image array inside the run's ``images.ome.zarr`` and
    ``plane`` its leading (t, c, z) index there.
    """

    index: int
    row: int
    col: int
    height: int
    width: int
    array: str
    plane: tuple[int, ...] = ()

    def read(self) -> np.ndarray:
        """The frame's pixels."""
        import zarr

        arr = zarr.open_array(self.array, mode="r")
        return np.asarray(arr[self.plane] if self.plane else arr[...])


def _stage_position(row: dict[str, Any]) -> int:
    """The stage position ``p`` of a frame (its ``position`` is its image: one per tile)."""
    import json

    idx = json.loads(row["event_index"]) if row.get("event_index") else {}
    return int(idx.get("p", 0))


def _frame_array(run: Path, row: dict[str, Any]) -> tuple[str, tuple[int, ...]]:
    """Where one base frame's pixels are: its array and plane in ``images.ome.zarr``.

    ome-writers stores a grid acquisition as one image group per grid tile; a frame's
    ``position`` is the index of that image (:func:`liveseg.store.image_series_index`).
    """
    import json

    import zarr

    from liveseg.store.layout import image_group

    idx = json.loads(row["event_index"]) if row.get("event_index") else {}
    group = image_group(run / "images.ome.zarr", int(row["position"]))
    arr = zarr.open_array(str(group / "0"), mode="r")
    dims = list(arr.metadata.dimension_names or [])  # type: ignore[union-attr]
    plane = tuple(int(idx.get(d, row.get(d) or 0)) for d in dims[:-2])
    return str(group / "0"), plane


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a liveseg run directory (it has ``run.json`` and ``frames.csv``)."""
    p = Path(path)
    return p.is_dir() and (p / "run.json").is_file() and (p / "frames.csv").is_file()


def grid_layout(
    run_dir: str | os.PathLike[str], position: int = 0, t: int = 0, c: int = 0, z: int = 0
) -> tuple[list[GridTile], tuple[int, int], float]:
    """The tiles of one position's grid, the mosaic shape and the pixel size (µm).

    Raises
    ------
    ConfigError
        When the run has no such frames or its frames lack stage coordinates.
    """
    import zarr

    from liveseg.store import RunReader

    reader = RunReader(Path(run_dir))
    info = reader.run_info
    px = float(info.get("pixel_size_um") or 1.0)
    rows = [
        r
        for r in reader.frames()
        if r.get("series") in (None, "", "base")
        and r.get("status") in ("ok", "skipped", "failed", "acquired")
        and (_stage_position(r), r.get("t"), r.get("c"), r.get("z")) == (position, t, c, z)
    ]
    if not rows:
        raise ConfigError(f"{run_dir}: no frames of position {position} (t={t}, c={c}, z={z})")
    xy = [(r["stage_x_um"], r["stage_y_um"]) for r in rows]
    if any(v is None or not math.isfinite(float(v)) for pair in xy for v in pair):
        raise ConfigError(f"{run_dir}: frames without stage coordinates cannot be placed")
    where = [_frame_array(Path(run_dir), r) for r in rows]
    h, w = (int(n) for n in zarr.open_array(where[0][0], mode="r").shape[-2:])
    lefts = [float(x) / px - w / 2.0 for x, _ in xy]
    tops = [float(y) / px - h / 2.0 for _, y in xy]
    x0, y0 = min(lefts), min(tops)
    tiles = [
        GridTile(int(r["index"]), round(top - y0), round(left - x0), h, w, arr, plane)
        for r, left, top, (arr, plane) in zip(rows, lefts, tops, where, strict=True)
    ]
    shape = (max(t.row + h for t in tiles), max(t.col + w for t in tiles))
    return tiles, shape, px


def _grid_chunk(
    block: np.ndarray, *, block_info: dict[Any, Any], tiles: list[GridTile]
) -> np.ndarray:
    """One chunk of the mosaic: the frames that cover it, later ones on top."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    out = np.zeros(block.shape, dtype=block.dtype)
    for tile in tiles:
        r0, c0 = max(y0, tile.row), max(x0, tile.col)
        r1, c1 = min(y1, tile.row + tile.height), min(x1, tile.col + tile.width)
        if r0 >= r1 or c0 >= c1:
            continue
        image = tile.read()
        out[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] = image[
            r0 - tile.row : r1 - tile.row, c0 - tile.col : c1 - tile.col
        ]
    return out


def grid_mosaic(
    run_dir: str | os.PathLike[str], chunk: int = 1024, position: int = 0
) -> tuple[da.Array, float]:
    """One position's grid as a lazy 2-D dask array (and the pixel size in µm)."""
    import dask.array as da
    import zarr

    tiles, shape, px = grid_layout(run_dir, position)
    dtype = zarr.open_array(tiles[0].array, mode="r").dtype
    base = da.zeros(shape, dtype=dtype, chunks=(chunk, chunk))
    mosaic = base.map_blocks(_grid_chunk, tiles=tiles, dtype=dtype)
    return mosaic, px
