"""Segment one image larger than a machine, block by block, with labels stitched across blocks.

The method is cellpose's distributed segmentation (``cellpose/contrib/
distributed_segmentation.py``), on :mod:`dask.array`:

1. The image (an OME-Zarr plane, a zarr array, a TIFF, or a grid acquisition's frames
   placed by stage position, :mod:`liveseg.grid`) is a dask array chunked in
   ``block`` × ``block`` tiles. :func:`dask.array.overlap.overlap` gives every tile a halo of
   ``overlap`` pixels on each inner side (about twice the object diameter, so an object
   near a tile border is seen whole by both tiles).
2. Each tile is segmented on its own by the configured chain (one chain per Dask worker,
   built once by a worker plugin); the halo is cut off again and the tile's core labels,
   numbered 1..n within the tile, are written to a scratch zarr aligned with the tiles.
   A tile returns only ``n`` and its four one-pixel edges.
3. On the client, tile ``k``'s labels are offset by the number of labels before it (ids
   become globally unique), and labels that meet across a tile face are joined: two
   labels across a face are linked when they share at least half of the shorter of
   their two face lengths (a piece of one object cut by the face shares its whole face;
   two different objects that merely touch near the face share a few pixels). The graph
   of links is relabelled with :func:`scipy.sparse.csgraph.connected_components`.
4. A second pass maps every tile's labels through that table and writes one OME-Zarr
   label image with :func:`ome_zarr.writer.write_labels` (chunked by tile, with the pixel
   size), under a copy of the image written with :func:`ome_zarr.writer.write_image`.

A worker holds one tile with its halo and the chain's working copies of it, never the
whole image, so memory per worker is bounded by ``block`` (``benchmarks/
mosaic_memory.py`` measures it). ``workers=N`` starts a ``distributed.LocalCluster`` on
127.0.0.1; ``scheduler=ADDRESS`` uses an existing one (``OUT`` must then be on storage
every worker can reach, as for ``liveseg batch``); neither runs in this process.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import ConfigError, LivesegError
from liveseg.types import Frame, FrameStatus

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence

    import dask.array as da

    from liveseg.assembly import Assembly
    from liveseg.config import LivesegConfig, StepConfig

__all__ = [
    "LABELS_NAME",
    "ChainSpec",
    "MosaicImage",
    "TileRecord",
    "estimate_overlap",
    "open_mosaic_image",
    "read_provenance",
    "segment_mosaic",
    "stitch_table",
    "write_ome_mosaic",
]

LABELS_NAME = "cells"
"""Name of the label image in ``OUT/labels/``."""

_WORK = ".mosaic-work"


@dataclass(frozen=True)
class MosaicImage:
    """The 2-D image to segment, as a lazy dask array, and its pixel size."""

    array: da.Array
    pixel_size_um: float | None
    source: str


def open_mosaic_image(source: str | os.PathLike[str]) -> MosaicImage:
    """Open ``source`` lazily: an OME-Zarr image, a zarr array, a TIFF/PNG, or a grid run.

    An OME-Zarr's full-resolution level is used; leading axes (t, c, z) must have size 1.
    A liveseg run directory of a grid acquisition is stitched by stage position
    (:func:`liveseg.grid.grid_mosaic`: position 0, first time point, channel and plane).
    A TIFF/PNG is read into memory (use OME-Zarr for images larger than memory).

    Raises
    ------
    ConfigError
        When the input does not exist, is not one 2-D plane, or cannot be read.
    """
    import dask.array as da
    import zarr

    from liveseg.batch import _multiscale_arrays
    from liveseg.grid import grid_mosaic, is_run_dir
    from liveseg.imageio import read_image, read_pixel_size

    src = Path(source)
    if not src.exists():
        raise ConfigError(f"mosaic input {src} does not exist")
    if is_run_dir(src):
        grid, grid_px = grid_mosaic(src)
        return MosaicImage(grid, grid_px, str(src))
    size = read_pixel_size(src)
    px = size.um if size is not None else None
    if src.is_dir():
        try:
            node = zarr.open(str(src), mode="r")
        except Exception as exc:
            raise ConfigError(f"{src}: not a zarr store ({type(exc).__name__}: {exc})") from None
        if isinstance(node, zarr.Group):
            found = _multiscale_arrays(node)
            if not found:
                raise ConfigError(f"{src}: no image array in this zarr store")
            node = zarr.open_array(str(src / found[0][0]), mode="r")
        arr = da.from_zarr(node)  # type: ignore[no-untyped-call]
    else:
        arr = da.from_array(read_image(src))  # type: ignore[no-untyped-call]
    lead = arr.shape[:-2]
    if arr.ndim < 2 or any(n != 1 for n in lead):
        raise ConfigError(
            f"{src}: a mosaic is one 2-D plane, this image has shape {tuple(arr.shape)}"
        )
    arr = arr.reshape(arr.shape[-2:]) if lead else arr
    return MosaicImage(arr, px, str(src))


@dataclass(frozen=True)
class ChainSpec:
    """Everything a worker needs to build the chain itself (plain data: it is pickled)."""

    steps: tuple[dict[str, Any], ...]
    home: str
    plugins_dir: str | None = None
    config: dict[str, Any] | None = None
    threads: int = 1

    @classmethod
    def of(
        cls,
        steps: Sequence[StepConfig],
        home: str | os.PathLike[str],
        plugins_dir: str | None = None,
        config: LivesegConfig | None = None,
        threads: int = 1,
    ) -> ChainSpec:
        """The spec of ``steps`` (already carrying the exact model version)."""
        return cls(
            tuple(s.model_dump(mode="json") for s in steps),
            str(home),
            plugins_dir,
            config.model_dump(mode="json") if config is not None else None,
            threads,
        )

    def build(self) -> Assembly:
        """Assemble the chain (no flag policies, no sinks are called by a tile)."""
        from liveseg.assembly import assemble
        from liveseg.batch import _batch_config, _steps

        cfg = _batch_config(self.config, self.threads)
        return assemble(
            cfg,
            home=self.home,
            plugins_dir=self.plugins_dir,
            steps=_steps(self.steps),
            flags=False,
        )


class TileChain:
    """One built chain that segments tiles; ``close`` releases its backends."""

    def __init__(self, spec: ChainSpec) -> None:
        self.parts = spec.build()

    def segment(self, image: np.ndarray, index: int, pixel_size_um: float | None) -> np.ndarray:
        """Labels of one tile (its own ids 1..n).

        Raises
        ------
        LivesegError
            When the chain fails on the tile (the whole mosaic fails: a hole in the
            label image would look like empty tissue).
        """
        frame = Frame(
            index=index,
            image=np.ascontiguousarray(image),
            name=f"tile{index}",
            pixel_size_um=pixel_size_um or 1.0,
            metadata={"pixel_size_source": "mosaic" if pixel_size_um else None},
        )
        result = self.parts.pipeline.run(frame)
        if result.status is not FrameStatus.OK:
            raise LivesegError(f"tile {index}: segmentation failed: {result.error}")
        from skimage.segmentation import relabel_sequential

        labels, _, _ = relabel_sequential(np.asarray(result.labels))
        return np.asarray(labels, dtype=np.uint32)

    def close(self) -> None:
        """Release the chain's backends."""
        self.parts.close()


def _plugin_name(spec: ChainSpec) -> str:
    from dask.base import tokenize

    return f"liveseg-chain-{tokenize(spec)}"


class _WorkerChain:
    """Finds the worker's own :class:`TileChain` (built once by :class:`ChainPlugin`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def segment(self, image: np.ndarray, index: int, pixel_size_um: float | None) -> np.ndarray:
        from distributed import get_worker

        plugin = get_worker().plugins[self.name]
        chain: TileChain = plugin.chain  # type: ignore[attr-defined]
        return chain.segment(image, index, pixel_size_um)


def _chain_plugin(spec: ChainSpec) -> Any:
    """A ``distributed`` worker plugin that builds the chain once per worker."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class ChainPlugin(WorkerPlugin):  # type: ignore[misc]
        """Builds one :class:`TileChain` when the worker starts, closes it at teardown."""

        def __init__(self, spec: ChainSpec) -> None:
            self.spec = spec
            self.chain: TileChain | None = None

        def setup(self, worker: Any) -> None:
            self.chain = TileChain(self.spec)

        def teardown(self, worker: Any) -> None:
            if self.chain is not None:
                self.chain.close()

    return ChainPlugin(spec)


@dataclass
class TileRecord:
    """What one tile sends back: its label count and its four one-pixel edges."""

    index: int
    count: int
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _segment_tile(
    block: np.ndarray,
    *,
    block_info: dict[Any, Any],
    chain: TileChain | _WorkerChain,
    work: str,
    grid: tuple[tuple[int, ...], ...],
    overlap: int,
    pixel_size_um: float | None,
) -> np.ndarray:
    """Segment one tile with its halo, write its core labels, return its record (1×1)."""
    t0 = time.perf_counter()
    import zarr

    iy, ix = block_info[0]["chunk-location"]
    nx = len(grid[1])
    y0 = sum(grid[0][:iy])
    x0 = sum(grid[1][:ix])
    y1, x1 = y0 + grid[0][iy], x0 + grid[1][ix]
    index = iy * nx + ix
    labels = chain.segment(block, index, pixel_size_um)
    top = overlap if iy > 0 else 0
    left = overlap if ix > 0 else 0
    core = labels[top : top + (y1 - y0), left : left + (x1 - x0)]
    from skimage.segmentation import relabel_sequential

    core, _, _ = relabel_sequential(core)  # objects wholly in the halo are gone
    core = np.asarray(core, dtype=np.uint32)
    out = zarr.open_array(work, mode="r+")
    out[y0:y1, x0:x1] = core
    rec = TileRecord(
        index=index,
        count=int(core.max(initial=0)),
        top=core[0].copy(),
        bottom=core[-1].copy(),
        left=core[:, 0].copy(),
        right=core[:, -1].copy(),
        seconds=time.perf_counter() - t0,
    )
    result = np.empty((1, 1), dtype=object)
    result[0, 0] = rec
    return result


def _face_links(a: np.ndarray, b: np.ndarray, min_share: float) -> np.ndarray:
    """Pairs ``(a_id, b_id)`` of labels that continue across a face (rows of an (k, 2) array).

    ``a`` and ``b`` are the two one-pixel lines either side of the face (global ids, 0 =
    background). A pair is linked when it shares at least ``min_share`` of the shorter of
    the two labels' face lengths, so a cut object is joined and two objects that merely
    touch across the face are not.
    """
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), dtype=np.int64)
    pairs, shared = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
    ida, na = np.unique(a[a > 0], return_counts=True)
    idb, nb = np.unique(b[b > 0], return_counts=True)
    len_a = na[np.searchsorted(ida, pairs[:, 0])]
    len_b = nb[np.searchsorted(idb, pairs[:, 1])]
    keep = shared >= min_share * np.minimum(len_a, len_b)
    out: np.ndarray = pairs[keep].astype(np.int64)
    return out


def stitch_table(
    records: np.ndarray, min_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Offsets per tile, the id table, the object count and the number of joins.

    ``records`` is the (ny, nx) grid of :class:`TileRecord`. Tile ``k``'s label ``i``
    becomes ``table[offsets[k] + i]``; ``table[0] == 0``; final ids are 1..N.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ny, nx = records.shape
    counts = np.array([records[iy, ix].count for iy in range(ny) for ix in range(nx)])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())

    def glob(line: np.ndarray, k: int) -> np.ndarray:
        g = line.astype(np.int64)
        g[g > 0] += offsets[k]
        return g

    links = [np.zeros((0, 2), dtype=np.int64)]
    for iy in range(ny):
        for ix in range(nx):
            k = iy * nx + ix
            rec = records[iy, ix]
            if ix + 1 < nx:
                right = records[iy, ix + 1]
                links.append(_face_links(glob(rec.right, k), glob(right.left, k + 1), min_share))
            if iy + 1 < ny:
                below = records[iy + 1, ix]
                links.append(_face_links(glob(rec.bottom, k), glob(below.top, k + nx), min_share))
    edges = np.concatenate(links)
    n = total + 1
    graph = coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n)
    )
    _, comp = connected_components(graph, directed=False)
    # Final ids 1..N in order of each object's first piece; background stays 0.
    _, first, inverse = np.unique(comp[1:], return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(1, len(first) + 1)
    table = np.zeros(n, dtype=np.uint32)
    table[1:] = rank[inverse]
    n_objects = len(first)
    return offsets, table, n_objects, total - n_objects


def _relabel_tile(
    block: np.ndarray, *, block_info: dict[Any, Any], offsets: np.ndarray, table: np.ndarray
) -> np.ndarray:
    """Map one tile's own ids through the stitched table."""
    (iy, ix) = block_info[None]["chunk-location"]
    (_, nx) = block_info[None]["num-chunks"]
    g = block.astype(np.int64)
    g[g > 0] += offsets[iy * nx + ix]
    out: np.ndarray = table[g]
    return out


def _grid(n: int, block: int, overlap: int) -> tuple[int, ...]:
    """Tile sizes along one axis; a last tile thinner than the halo joins the one before."""
    sizes = [block] * (n // block)
    if n % block:
        sizes.append(n % block)
    if len(sizes) > 1 and sizes[-1] < max(overlap, 1):
        sizes[-2] += sizes.pop()
    return tuple(sizes)


def estimate_overlap(image: np.ndarray, chain: TileChain, pixel_size_um: float | None) -> int:
    """Twice the large-object diameter (95th percentile) in a sample tile, at least 16 px.

    This is cellpose's rule (blocks overlap by about twice the diameter): an object
    that crosses a tile border lies wholly inside the neighbour's halo.
    """
    labels = chain.segment(image, -1, pixel_size_um)
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if not areas.size:
        return 16
    diameter = 2.0 * math.sqrt(float(np.percentile(areas, 95)) / math.pi)
    return max(16, math.ceil(2 * diameter))


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


def write_ome_mosaic(
    out: str | os.PathLike[str],
    image: da.Array,
    labels: dict[str, da.Array],
    pixel_size_um: float | None,
    chunk: int,
    *,
    levels: Sequence[int] | None = None,
) -> None:
    """Write ``image`` and its ``labels`` (name -> array) as one OME-Zarr, chunk by chunk.

    The maintained ``ome_zarr`` writers do the metadata (NGFF multiscales, ``labels/``,
    ``image-label``, the pixel size as scale); the pyramids are strided (nearest) so every
    level of the image and of its labels has the same shape, and no level is computed
    from a whole array in memory. ``write_labels`` is not used: it reads every label
    value of the whole image first to give each a colour, which a slide with 10⁵ nuclei
    cannot afford.
    """
    import zarr
    from dask.base import compute

    with warnings.catch_warnings():
        # ome-zarr 0.18 builds a deprecated ``Scaler`` as a default argument on import.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from ome_zarr.writer import write_multiscale, write_multiscale_labels
        except ImportError:
            raise LivesegError("ome-zarr is not installed: pip install 'liveseg[dask]'") from None

    if levels is None:
        levels = [f for f in (2, 4, 8, 16) if min(image.shape) // f >= 256]
    factors = [1, *levels]
    scale = {"y": pixel_size_um, "x": pixel_size_um} if pixel_size_um else None
    units = {"y": "micrometer", "x": "micrometer"} if pixel_size_um else None
    opts = {"chunks": (chunk, chunk)}
    group = zarr.open_group(str(out), mode="a")
    tasks = write_multiscale(
        [image[::f, ::f] for f in factors],
        group,
        axes="yx",
        storage_options=opts,
        scale=scale,
        axes_units=units,
        compute=False,
    )
    for name, lab in labels.items():
        tasks += write_multiscale_labels(
            [lab[::f, ::f] for f in factors],
            group,
            name,
            axes="yx",
            storage_options=opts,
            scale=scale,
            axes_units=units,
            compute=False,
        )
    compute(*tasks)  # type: ignore[no-untyped-call]


def _provenance(out: Path, data: dict[str, Any]) -> None:
    """Record the run's provenance as the store's ``liveseg`` attribute.

    Input, chain, tiles, overlap, status and summary; an attribute rather than a
    ``run.json`` because a file would be foreign to the zarr hierarchy.
    """
    import zarr

    zarr.open_group(str(out), mode="a").attrs["liveseg"] = json.loads(
        json.dumps(data, default=str)
    )


def read_provenance(out: str | os.PathLike[str]) -> dict[str, Any]:
    """What :func:`segment_mosaic` recorded in ``out`` (``{}`` when it is not a mosaic)."""
    import zarr

    info = zarr.open_group(str(out), mode="r").attrs.get("liveseg", {})
    return dict(info) if isinstance(info, dict) else {}


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the CLI."""
    return (
        f"{summary['objects']} objects in {summary['tiles']} tiles "
        f"({summary['joined_across_tiles']} pieces joined across tile faces) → "
        f"{summary['labels']}"
    )
