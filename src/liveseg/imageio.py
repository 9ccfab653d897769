"""Reading user images and writing label images, with errors a microscopist can act on.

Pixel sizes travel with images: :func:`read_pixel_size` (and :func:`read_image_data`,
which returns the image with it) reads the physical pixel size that other tools wrote
into the file, so measurements offline are in µm like those of a live run:

* OME-TIFF: ``PhysicalSizeX/Y`` (+ units) of the first image's ``Pixels``;
* ImageJ/Fiji TIFF: the X/Y resolution tags in the ImageJ ``unit`` (micron, nm, mm…);
* other TIFFs: resolution tags in centimetres, millimetres or micrometres (inch-based
  resolutions are screen/print dpi, not microscopy, and are ignored);
* OME-Zarr: the ``scale`` of the first dataset of ``multiscales`` with its axes' units.

:func:`write_labels_tif` writes the pixel size back as standard TIFF resolution tags
(pixels per centimetre), which Fiji, QuPath, napari and tifffile read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import ConfigError, LivesegError
from liveseg.types import CLASS_DTYPE, LABEL_DTYPE

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageData",
    "ImageError",
    "PixelSize",
    "check_image",
    "list_images",
    "read_classes_tif",
    "read_image",
    "read_image_data",
    "read_pixel_size",
    "resolution_tags",
    "resolve_pixel_size",
    "write_classes_tif",
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
        and not p.stem.endswith(("_labels", "_valid", "_masks", "_classes"))
    )


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


# -- pixel sizes ---------------------------------------------------------------------------
_UNIT_UM = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
}


@dataclass(frozen=True, slots=True)
class PixelSize:
    """A physical pixel size read from a file: y and x in µm, and where it came from."""

    y_um: float
    x_um: float
    source: str  # "ome-tiff", "imagej", "tiff-resolution", "ome-zarr"

    @property
    def um(self) -> float:
        """The x pixel size (µm), the one measurements use for square pixels."""
        return self.x_um


@dataclass(frozen=True, slots=True)
class ImageData:
    """An image as read from a file, with the pixel size the file states (or ``None``)."""

    array: np.ndarray
    pixel_size_um: float | None
    source: str | None  # where the pixel size came from; None: the file does not say


def _unit_factor(unit: Any) -> float | None:
    if unit is None:
        return 1.0  # OME's default unit is the micrometre
    key = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").lower()
    return _UNIT_UM.get(key)


def _valid(*sizes: float) -> bool:
    return all(math.isfinite(v) and v > 0 for v in sizes)


def _rational(value: Any) -> float:
    if isinstance(value, tuple):
        num, den = value
        return float(num) / float(den) if den else float("nan")
    return float(value)


def _tiff_pixel_size(path: Path) -> PixelSize | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            found = _ome_xml_pixel_size(tif.ome_metadata)
            if found is not None:
                return found
        page = tif.pages.first
        tags = page.tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        xres = _rational(tags["XResolution"].value)
        yres = _rational(tags["YResolution"].value)
        if not _valid(xres, yres):
            return None
        if tif.is_imagej:
            meta = tif.imagej_metadata or {}
            factor = _unit_factor(meta.get("unit")) if meta.get("unit") else None
            if factor is None:
                return None  # "pixel" or no unit: ImageJ does not know the size either
            return _rounded(factor / yres, factor / xres, "imagej")
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        factor = {3: 1e4, 4: 1e3, 5: 1.0}.get(unit)
        if factor is None:
            return None  # inch (dpi) or none: not a microscopy calibration
        return _rounded(factor / yres, factor / xres, "tiff-resolution")


def _rounded(y_um: float, x_um: float, source: str) -> PixelSize | None:
    if not _valid(y_um, x_um):
        return None
    # Resolution tags are rationals: 0.65 µm comes back as 0.6500000000x.
    return PixelSize(float(f"{y_um:.9g}"), float(f"{x_um:.9g}"), source)


def _ome_xml_pixel_size(xml: str) -> PixelSize | None:
    """``PhysicalSizeX/Y`` (and units) of the first ``Pixels`` element of OME-XML."""
    match = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", xml)
    if match is None:
        return None
    attrs: dict[str, str] = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
    try:
        x = float(attrs["PhysicalSizeX"])
        y = float(attrs.get("PhysicalSizeY", attrs["PhysicalSizeX"]))
    except (KeyError, ValueError):
        return None
    fx = _unit_factor(attrs.get("PhysicalSizeXUnit"))
    fy = _unit_factor(attrs.get("PhysicalSizeYUnit", attrs.get("PhysicalSizeXUnit")))
    if fx is None or fy is None:
        return None
    return _rounded(y * fy, x * fx, "ome-tiff")


def _zarr_pixel_size(path: Path) -> PixelSize | None:
    import zarr

    node: Any = zarr.open(str(path), mode="r")
    for _ in range(4):  # the image group, or a store holding image groups (positions)
        if not isinstance(node, zarr.Group):
            return None
        attrs = dict(node.attrs)
        multiscales = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
        if multiscales:
            return _multiscales_pixel_size(multiscales[0])
        keys = sorted(k for k in node.keys() if k not in ("labels", "OME"))
        if not keys:
            return None
        node = node[keys[0]]
    return None


def _multiscales_pixel_size(ms: dict[str, Any]) -> PixelSize | None:
    axes = ms.get("axes") or []
    datasets = ms.get("datasets") or []
    if not datasets:
        return None
    scale = None
    for transform in datasets[0].get("coordinateTransformations") or []:
        if transform.get("type") == "scale":
            scale = [float(v) for v in transform.get("scale", [])]
    if not scale or len(scale) < 2:
        return None
    names = [a.get("name") if isinstance(a, dict) else str(a) for a in axes]
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    iy, ix = (names.index("y"), names.index("x")) if {"x", "y"} <= set(names) else (-2, -1)
    fy = _unit_factor(units[iy]) if units else 1.0
    fx = _unit_factor(units[ix]) if units else 1.0
    if fx is None or fy is None:
        return None
    if units and units[ix] is None and scale[ix] == 1.0:
        return None  # the writer's default scale, not a calibration
    return _rounded(scale[iy] * fy, scale[ix] * fx, "ome-zarr")


def read_pixel_size(path: str | Path) -> PixelSize | None:
    """The physical pixel size a file states, or ``None`` when it does not say.

    Reads OME-TIFF ``PhysicalSizeX/Y``, ImageJ resolution + unit, TIFF resolution tags
    in metric units, and OME-Zarr ``multiscales`` scales (see the module docstring).
    A PNG, or a file whose metadata cannot be read, gives ``None``; this never raises
    for metadata problems (the image itself may still be fine).
    """
    p = Path(path)
    name = p.name.lower()
    try:
        if name.endswith((".tif", ".tiff")):
            return _tiff_pixel_size(p)
        if name.endswith(".zarr") or p.is_dir():
            return _zarr_pixel_size(p)
    except Exception:
        return None
    return None


def read_image_data(path: str | Path) -> ImageData:
    """:func:`read_image` plus the pixel size the file states (:func:`read_pixel_size`).

    Raises
    ------
    ImageError, ConfigError
        Like :func:`read_image`.
    """
    image = read_image(path)
    size = read_pixel_size(path)
    return ImageData(
        array=image,
        pixel_size_um=size.um if size is not None else None,
        source=size.source if size is not None else None,
    )


def resolve_pixel_size(
    path: str | Path, override: float | None = None
) -> tuple[float, str | None]:
    """The pixel size (µm) to measure an image file with, and where it came from.

    In order: ``override`` (the config's ``hardware.pixel_size_um``), the file's own
    metadata (:func:`read_pixel_size`), else 1.0 with source ``None`` — µm columns are
    then pixels, which callers must say.
    """
    if override is not None:
        return float(override), "config"
    size = read_pixel_size(path)
    if size is not None:
        return size.um, size.source
    return 1.0, None
