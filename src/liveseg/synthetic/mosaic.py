"""A synthetic nuclei mosaic of any size, written chunk by chunk to OME-Zarr.

:func:`liveseg.synthetic.generate` draws one frame in memory; a 20 000 × 20 000 px
slide does not fit that way. Here nuclei are placed per grid cell (128 px by default)
from the cell's own seed, and each chunk draws the nuclei of the cells under it and
around it, so a nucleus that crosses a chunk border is drawn whole and identically on
both sides (no seams), and no chunk needs any other chunk's pixels. Dask computes the
chunks; memory is a few chunks, never the image.

The store gets the image (``uint16``, axes ``yx``, the pixel size) and, with
``truth=True``, its exact instance labels as ``labels/truth`` (ids unique but not
consecutive: the ``j``-th nucleus of grid cell ``(iy, ix)`` is
``(iy * 256 + ix) * 65536 + j + 1``, unique up to 256 × 256 cells, 32 768 px square at
the default cell).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from liveseg.synthetic.nuclei import _Blob, _random_blob, _render

if TYPE_CHECKING:
    import os

__all__ = ["MosaicStyle", "render_mosaic_chunk", "write_nuclei_mosaic"]

_STRIDE = 65536  # truth ids per grid cell
_GRID = 256  # truth ids stay unique up to 256 x 256 cells (32 768 px at cell=128)


@dataclasses.dataclass(frozen=True)
class MosaicStyle:
    """Fixed frame-level settings of a mosaic (one slide: no per-chunk draws).

    Attributes
    ----------
    density : float
        Nuclei per 10 000 px².
    radius : float
        Mean nucleus radius in pixels (each varies by 20 %).
    blur : float
        Optical blur sigma in pixels.
    photons : float
        Expected photons at a median nucleus.
    background : float
        Background relative to the median nucleus.
    read_noise : float
        Gaussian read noise in photons.
    """

    density: float = 6.0
    radius: float = 8.0
    blur: float = 1.0
    photons: float = 400.0
    background: float = 0.1
    read_noise: float = 2.0


def _cell_blobs(seed: int, iy: int, ix: int, cell: int, style: MosaicStyle) -> list[_Blob]:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), iy, ix, 7]))
    n = int(rng.poisson(style.density * cell * cell / 1e4))
    blobs = []
    for _ in range(min(n, _STRIDE - 1)):
        r = max(3.0, style.radius * (1 + 0.2 * rng.standard_normal()))
        blobs.append(
            _random_blob(
                rng,
                iy * cell + rng.uniform(0, cell),
                ix * cell + rng.uniform(0, cell),
                r,
                elong=float(rng.uniform(1.0, 1.6)),
                wobble=0.08,
                brightness=float(rng.lognormal(0.0, 0.25)),
                edge=1.0,
            )
        )
    return blobs


def render_mosaic_chunk(
    seed: int,
    y0: int,
    x0: int,
    shape: tuple[int, int],
    cell: int,
    style: MosaicStyle | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The image (``uint16``) and truth labels (``uint32``) of one chunk of the mosaic.

    ``(y0, x0)`` is the chunk's corner and ``cell`` the placement grid (at least the
    largest nucleus and smaller than no chunk dimension is needed; the chunk size works).
    """
    st = style or MosaicStyle()
    h, w = shape
    margin = int(4 * st.blur) + 2
    gy0, gx0 = y0 - margin, x0 - margin
    gh, gw = h + 2 * margin, w + 2 * margin
    blobs: list[_Blob] = []
    ids: list[int] = []
    for iy in range(max(0, (gy0 - cell) // cell), (gy0 + gh + cell) // cell + 1):
        for ix in range(max(0, (gx0 - cell) // cell), (gx0 + gw + cell) // cell + 1):
            for j, b in enumerate(_cell_blobs(seed, iy, ix, cell, st)):
                blobs.append(dataclasses.replace(b, cy=b.cy - gy0, cx=b.cx - gx0))
                ids.append((iy * _GRID + ix) * _STRIDE + j + 1)
    signal = np.zeros((gh, gw), dtype=np.float32)
    local = np.zeros((gh, gw), dtype=np.int64)
    best = np.full((gh, gw), np.inf, dtype=np.float32)
    _render(blobs, (gh, gw), signal, local, best)
    image = ndi.gaussian_filter(signal + st.background, st.blur)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), y0, x0, 8]))
    counts = rng.poisson(np.clip(image, 0, None) * st.photons).astype(np.float32)
    counts += rng.normal(0.0, st.read_noise, size=counts.shape).astype(np.float32)
    pixels = np.clip(np.round(counts * 20 + 100), 0, 65535).astype(np.uint16)
    lut = np.zeros(len(ids) + 1, dtype=np.uint32)
    lut[1:] = ids
    crop = (slice(margin, margin + h), slice(margin, margin + w))
    return pixels[crop], lut[local[crop]]


def _chunk(
    block: np.ndarray,
    *,
    block_info: dict[Any, Any],
    seed: int,
    cell: int,
    style: MosaicStyle,
    truth: bool,
) -> np.ndarray:
    (y0, _), (x0, _) = block_info[0]["array-location"]
    image, labels = render_mosaic_chunk(seed, y0, x0, block.shape[-2:], cell, style)
    out: np.ndarray = np.stack([image.astype(np.uint32), labels]) if truth else image
    return out


def write_nuclei_mosaic(
    path: str | os.PathLike[str],
    shape: tuple[int, int],
    *,
    seed: int = 0,
    chunk: int = 1024,
    pixel_size_um: float = 0.65,
    truth: bool = True,
    style: MosaicStyle | None = None,
    levels: tuple[int, ...] = (),
    cell: int = 128,
) -> Path:
    """Write a nuclei mosaic of ``shape`` to the OME-Zarr ``path`` chunk by chunk.

    Runs on whatever Dask scheduler is current (threads by default; inside
    ``with distributed.Client(...)`` on the cluster). ``levels`` are extra pyramid
    levels (downsampling factors; none by default). ``cell`` is the placement grid
    (at most ``chunk``; larger than the biggest nucleus): a chunk also draws the
    nucleus lists of the cells around it, so a cell much smaller than the chunk wastes
    little of that work. Returns ``path``.
    """
    cell = min(int(cell), int(chunk))
    if cell < 64:
        raise ValueError(f"cell must be at least 64 px (nuclei span up to ~40), got {cell}")
    import dask.array as da
    import zarr

    st = style or MosaicStyle()
    h, w = int(shape[0]), int(shape[1])
    base = da.zeros((h, w), dtype=np.uint16, chunks=(chunk, chunk))
    if truth:
        both = base.map_blocks(
            _chunk,
            seed=seed,
            cell=cell,
            style=st,
            truth=True,
            new_axis=0,
            chunks=((2,), *base.chunks),
            dtype=np.uint32,
        )
        image = both[0].astype(np.uint16)
    else:
        image = base.map_blocks(_chunk, seed=seed, cell=cell, style=st, truth=False)
    from liveseg.mosaic import write_ome_mosaic

    out = Path(path)
    zarr.open_group(str(out), mode="w")
    labels = {"truth": both[1]} if truth else {}
    write_ome_mosaic(out, image, labels, pixel_size_um, chunk, levels=levels)
    return out
