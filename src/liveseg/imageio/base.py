"""What every image path shares: the error type, the 2-D check, file names and listings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liveseg.errors import LivesegError

__all__ = ["IMAGE_SUFFIXES", "ImageError", "check_image", "image_stem", "list_images"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".czi", ".nd2", ".lif")
_ALLOWED = {"uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32", "float64"}


class ImageError(LivesegError, ValueError):
    """An input image cannot be segmented as it is (dtype, shape, values)."""


def check_image(image: np.ndarray, source: str = "image") -> np.ndarray:
    """Return ``image`` as a 2-D array or raise :class:`ImageError` saying what is wrong."""
    arr = np.asarray(image)
    if arr.dtype.name not in _ALLOWED:
        raise ImageError(
            f"{source}: unsupported pixel type {arr.dtype} — expected a grayscale intensity "
            f"image (uint8, uint16, int16, float32, …); convert it (e.g. in Fiji: "
            f"Image ▸ Type ▸ 16-bit) or check you did not pass a mask or label file"
        )
    if arr.ndim > 2:
        arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ImageError(
            f"{source}: expected a single-channel 2-D image, got shape {tuple(image.shape)}; "
            f"save one plane/channel per file"
        )
    if arr.size == 0:
        raise ImageError(f"{source}: the image is empty (shape {arr.shape})")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageError(f"{source}: contains NaN or infinite values")
    return arr


_STEM_SUFFIXES = (".ome.zarr", ".ome.tif", ".ome.tiff", ".zarr", *IMAGE_SUFFIXES)


def image_stem(name: str) -> str:
    """A file name without its image suffix (``a.ome.tif`` -> ``a``): an output's name."""
    for suffix in _STEM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder (not label/valid masks), sorted by name."""
    f = Path(folder)
    return sorted(
        p
        for p in f.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not p.stem.endswith(("_labels", "_valid", "_masks", "_classes"))
    )
