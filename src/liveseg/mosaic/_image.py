"""The mosaic's input (any 2-D image, lazily) and its output (one OME-Zarr, chunk by chunk)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveseg.errors import ConfigError, LivesegError

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    import dask.array as da

__all__ = ["MosaicImage", "open_mosaic_image", "read_provenance", "write_ome_mosaic"]


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
