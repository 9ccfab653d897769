"""Reading user images and writing label images, with errors a microscopist can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from liveseg.errors import ConfigError, LivesegError
from liveseg.types import LABEL_DTYPE

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageError",
    "check_image",
    "list_images",
    "read_image",
    "write_labels_tif",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
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


def read_image(path: str | Path) -> np.ndarray:
    """Read one 2-D grayscale image from TIFF, PNG or OME-Zarr (first array, first plane)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"image not found: {p}")
    name = p.name.lower()
    try:
        if name.endswith((".tif", ".tiff")):
            import tifffile

            arr = tifffile.imread(p)
        elif name.endswith(".png"):
            from skimage.io import imread

            arr = imread(p)
            if arr.ndim == 3 and arr.shape[-1] in (3, 4):
                raise ImageError(f"{p}: is an RGB(A) PNG; save a single-channel image instead")
        elif name.endswith(".zarr") or p.is_dir():
            arr = _read_zarr_plane(p)
        else:
            raise ImageError(f"{p}: unsupported file type (use .tif, .tiff, .png or .ome.zarr)")
    except LivesegError:
        raise
    except Exception as exc:
        raise ImageError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return check_image(arr, str(p))


def _read_zarr_plane(path: Path) -> np.ndarray:
    import zarr

    node = zarr.open(str(path), mode="r")
    while isinstance(node, zarr.Group):
        keys = sorted(k for k in node.keys() if k not in ("labels", "OME"))
        if not keys:
            raise ImageError(f"{path}: no image array in this zarr store")
        node = node[keys[0]]
    plane: Any = node
    while plane.ndim > 2:
        plane = plane[0]
    return np.asarray(plane)


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder (not label/valid masks), sorted by name."""
    f = Path(folder)
    return sorted(
        p
        for p in f.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not p.stem.endswith(("_labels", "_valid", "_masks"))
    )


def write_labels_tif(path: str | Path, labels: np.ndarray) -> None:
    """Write a uint32 label image atomically (a crash never leaves a half file)."""
    import tifffile

    p = Path(path)
    tmp = p.with_name(p.name + ".part")
    tifffile.imwrite(tmp, np.asarray(labels, dtype=LABEL_DTYPE), compression="zlib")
    tmp.replace(p)
