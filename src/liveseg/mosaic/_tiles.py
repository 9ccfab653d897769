"""One tile of a mosaic: the chain that segments it (built once per worker) and its record."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
from liveseg.types import Frame, FrameStatus

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from liveseg.assembly import Assembly
    from liveseg.config import LivesegConfig, StepConfig

__all__ = ["ChainSpec", "TileChain", "TileRecord", "estimate_overlap"]


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
