"""Label images and class maps written as TIFFs that Fiji, QuPath and napari read.

:func:`write_labels_tif` writes the pixel size as standard TIFF resolution tags (pixels
per centimetre); :func:`read_classes_tif` gives back a class map with its class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.imageio.base import ImageError
from liveseg.types import CLASS_DTYPE, LABEL_DTYPE

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["read_classes_tif", "resolution_tags", "write_classes_tif", "write_labels_tif"]


def resolution_tags(pixel_size_um: float | None) -> dict[str, Any]:
    """Tifffile keywords stating a pixel size as TIFF resolution (pixels per cm).

    Centimetres are the metric unit Fiji, QuPath and napari read; none when unknown.
    """
    if pixel_size_um is None or pixel_size_um <= 0:
        return {}
    per_cm = 1e4 / float(pixel_size_um)
    return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}


def write_labels_tif(
    path: str | Path, labels: np.ndarray, pixel_size_um: float | None = None
) -> None:
    """Write a uint32 label image atomically (a crash never leaves a half file).

    With ``pixel_size_um`` the file carries it as resolution tags (pixels per cm), so
    the labels overlay their image at the right scale in Fiji, QuPath or napari.
    """
    import tifffile

    p = Path(path)
    tmp = p.with_name(p.name + ".part")
    extra = resolution_tags(pixel_size_um)
    tifffile.imwrite(tmp, np.asarray(labels, dtype=LABEL_DTYPE), compression="zlib", **extra)
    tmp.replace(p)


def write_classes_tif(
    path: str | Path,
    classes: np.ndarray,
    class_names: Sequence[str],
    pixel_size_um: float | None = None,
) -> None:
    """Write a ``uint8`` class map atomically, its class names in the TIFF description.

    The description is JSON (``{"class_names": [...]}``, tifffile's shaped metadata),
    so :func:`read_classes_tif` gives back the names with the map; Fiji and napari open
    the pixels as an ordinary 8-bit label image.
    """
    import tifffile

    p = Path(path)
    tmp = p.with_name(p.name + ".part")
    extra = resolution_tags(pixel_size_um)
    tifffile.imwrite(
        tmp,
        np.asarray(classes, dtype=CLASS_DTYPE),
        compression="zlib",
        metadata={"class_names": list(class_names)},
        **extra,
    )
    tmp.replace(p)


def read_classes_tif(path: str | Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """A class map written by :func:`write_classes_tif` and its class names.

    Raises
    ------
    ImageError
        When the file cannot be read or is not a 2-D class map.
    """
    import tifffile

    p = Path(path)
    try:
        with tifffile.TiffFile(p) as tif:
            data = tif.asarray()
            meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ImageError(f"{p}: not a readable class map ({exc})") from None
    if data.ndim != 2 or data.dtype.kind not in "ui":
        raise ImageError(f"{p}: a class map is a 2-D integer image, got {data.dtype} {data.shape}")
    names = tuple(str(n) for n in meta.get("class_names", ()))
    return np.asarray(data, dtype=CLASS_DTYPE), names
