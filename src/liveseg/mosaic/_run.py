"""``segment_mosaic``: the two passes over the tiles, locally or on a Dask cluster."""

from __future__ import annotations

import datetime as _dt
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import ConfigError, LivesegError
from liveseg.mosaic._image import _provenance, open_mosaic_image, write_ome_mosaic
from liveseg.mosaic._stitch import stitch_table
from liveseg.mosaic._tiles import (
    ChainSpec,
    TileChain,
    _chain_plugin,
    _grid,
    _plugin_name,
    _relabel_tile,
    _segment_tile,
    _WorkerChain,
    estimate_overlap,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence

    from liveseg.config import LivesegConfig, StepConfig

__all__ = ["LABELS_NAME", "segment_mosaic", "summary_line"]

LABELS_NAME = "cells"
"""Name of the label image in ``OUT/labels/``."""

_WORK = ".mosaic-work"


def segment_mosaic(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    steps: Sequence[StepConfig],
    home: Path,
    block: int = 2048,
    overlap: int | None = None,
    model: str | None = None,
    plugins_dir: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int = 1,
    config: LivesegConfig | None = None,
    on_client: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Segment the image ``source`` block-wise into the OME-Zarr ``out_dir``; the summary.

    Parameters
    ----------
    source : path
        An OME-Zarr image, a zarr array or a TIFF/PNG (:func:`open_mosaic_image`).
    out_dir : path
        A new OME-Zarr (``*.ome.zarr``): the image, and its labels in ``labels/cells``.
    steps : sequence of StepConfig
        The chain, as for ``liveseg batch``.
    home : Path
        The liveseg home (models).
    block : int
        Tile edge in pixels; memory per worker grows with ``block``².
    overlap : int, optional
        Halo in pixels on each inner side; default: :func:`estimate_overlap` on the tile
        at the image centre.
    model : str, optional
        The exact model version the chain uses (``name@N``), for the provenance.
    plugins_dir : str, optional
        A folder of plugin modules (``--plugins-dir``).
    workers, scheduler
        A ``LocalCluster`` of ``workers`` processes on 127.0.0.1, or an existing scheduler;
        neither runs everything in this process.
    threads : int
        Threads per chain (the backends' ``threads``).
    config : LivesegConfig, optional
        Plugin allow/deny lists (its chain is not used; ``steps`` is).
    on_client : callable, optional
        Called with the ``distributed.Client`` before it closes (the memory benchmark reads
        the workers' peak memory there).

    Raises
    ------
    ConfigError
        For a bad input, block or overlap, or an output that exists and is not empty.
    """
    import dask
    import dask.array as da
    import zarr

    if block < 64:
        raise ConfigError(f"--block must be at least 64 px, got {block}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} exists and is not empty; choose a new *.ome.zarr path")
    t0 = time.perf_counter()
    image = open_mosaic_image(source)
    h, w = (int(n) for n in image.array.shape)
    spec = ChainSpec.of(steps, home, plugins_dir, config, threads)
    px = image.pixel_size_um
    if overlap is None:
        local = TileChain(spec)
        try:
            cy, cx = max(0, h // 2 - block // 2), max(0, w // 2 - block // 2)
            sample = np.asarray(image.array[cy : cy + block, cx : cx + block])
            overlap = estimate_overlap(sample, local, px)
        finally:
            local.close()
    if overlap < 0 or overlap >= block:
        raise ConfigError(f"overlap must be between 0 and the block size ({block}), got {overlap}")
    grid = (_grid(h, block, overlap), _grid(w, block, overlap))
    arr = image.array.rechunk(grid)  # type: ignore[no-untyped-call]
    ny, nx = arr.numblocks
    out.mkdir(parents=True, exist_ok=True)
    try:
        work = out / _WORK / f"tiles-{uuid.uuid4().hex[:8]}.zarr"
        zarr.create_array(
            str(work), shape=(h, w), chunks=(block, block), dtype=np.uint32, fill_value=0
        )
        # Every chunk of the scratch array lies in exactly one tile (a merged last tile
        # spans two whole chunks), so parallel tile writes never share a chunk.
        halo = (
            arr if overlap == 0 else da.overlap.overlap(arr, depth=overlap, boundary="none")  # type: ignore[no-untyped-call]
        )

        client = cluster = None
        chain: TileChain | _WorkerChain
        info: dict[str, Any] = {
            "kind": "mosaic",
            "input": str(source),
            "shape": [h, w],
            "block": block,
            "overlap": overlap,
            "tiles": [ny, nx],
            "model": model,
            "chain": list(spec.steps),
            "pixel_size_um": px,
            "dask": {"workers": workers, "scheduler": scheduler},
            "started": _dt.datetime.now(_dt.UTC).isoformat(),
        }
        _provenance(out, {**info, "status": "running"})
        try:
            if workers or scheduler:
                client, cluster = _client(workers, scheduler)
                name = _plugin_name(spec)
                client.register_plugin(_chain_plugin(spec), name=name)
                chain = _WorkerChain(name)
                ctx: Any = dask.config.set(scheduler=client.get)
            else:
                chain = TileChain(spec)
                ctx = dask.config.set(scheduler="synchronous")
            try:
                with ctx:
                    records = halo.map_blocks(
                        _segment_tile,
                        chain=chain,
                        work=str(work),
                        grid=arr.chunks,
                        overlap=overlap,
                        pixel_size_um=px,
                        chunks=((1,) * ny, (1,) * nx),
                        dtype=object,
                        meta=np.empty((0, 0), dtype=object),
                        name=f"liveseg-tiles-{uuid.uuid4().hex}",
                    ).compute()
                    offsets, table, n_objects, joins = stitch_table(records)
                    stored = da.from_zarr(str(work))  # type: ignore[no-untyped-call]
                    tiles = stored.rechunk(arr.chunks)
                    final = tiles.map_blocks(
                        _relabel_tile, offsets=offsets, table=table, dtype=np.uint32
                    )
                    write_ome_mosaic(out, arr, {LABELS_NAME: final}, px, block)
                if on_client is not None and client is not None:
                    on_client(client)
            finally:
                if isinstance(chain, TileChain):
                    chain.close()
        finally:
            if client is not None:
                client.close()  # type: ignore[no-untyped-call]
            if cluster is not None:
                cluster.close()  # type: ignore[no-untyped-call]
        shutil.rmtree(out / _WORK, ignore_errors=True)
    except BaseException:
        # OUT was absent or empty: removing the partial store loses nothing of the user's,
        # and a re-run may use the same path.
        shutil.rmtree(out, ignore_errors=True)
        raise
    tile_s = [float(r.seconds) for r in records.ravel()]
    summary = {
        "objects": n_objects,
        "joined_across_tiles": joins,
        "tiles": ny * nx,
        "tile_seconds_mean": float(np.mean(tile_s)),
        "wall_s": time.perf_counter() - t0,
        "out": str(out),
        "labels": str(out / "labels" / LABELS_NAME),
    }
    _provenance(out, {**info, "status": "finished", "summary": summary})
    return summary


def _client(workers: int | None, scheduler: str | None) -> tuple[Any, Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise LivesegError(
            "Dask is not installed: pip install 'liveseg[dask]' (or run without --workers)"
        ) from None
    if scheduler:
        return Client(scheduler, timeout="30s"), None  # type: ignore[no-untyped-call]
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=int(workers or 1),
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    )
    return Client(cluster), cluster  # type: ignore[no-untyped-call]


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the CLI."""
    return (
        f"{summary['objects']} objects in {summary['tiles']} tiles "
        f"({summary['joined_across_tiles']} pieces joined across tile faces) → "
        f"{summary['labels']}"
    )
