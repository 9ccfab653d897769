"""Reading image files through bioio: one 2-D plane and the pixel size the file states.

The reader plugins are tried by file ending (:data:`_BIOIO_READERS`); what bioio does
not do (unit conversion for OME-TIFF, telling a calibration from a writer's default,
PNG, plain zarr) is here and listed in docs/architecture.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from liveseg.errors import ConfigError, LivesegError
from liveseg.imageio.base import ImageError, check_image

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ImageData",
    "ImageSelection",
    "PixelSize",
    "installed_readers",
    "read_image",
    "read_image_data",
    "read_pixel_size",
    "resolve_pixel_size",
]


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
    source: str  # the bioio reader that read it: "ome-tiff", "tifffile", "ome-zarr", "czi"…

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

    def measure_with(self, override: float | None = None) -> tuple[float, str | None]:
        """The pixel size (µm) to measure with, and its source.

        In order: ``override`` (the config's ``hardware.pixel_size_um``), the file's own
        metadata, else 1.0 with source ``None`` — µm columns are then pixels, which
        callers must say.
        """
        if override is not None:
            return float(override), "config"
        if self.pixel_size_um is not None:
            return self.pixel_size_um, self.source
        return 1.0, None


def _unit_factor(unit: Any) -> float | None:
    """µm per ``unit`` (a name, an OME unit symbol or a pint unit); ``None`` if unknown."""
    if unit is None:
        return 1.0  # OME's default unit, and what bioio readers report in
    key = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").lower()
    return _UNIT_UM.get(key)


def _valid(*sizes: float) -> bool:
    return all(math.isfinite(v) and v > 0 for v in sizes)


def _rounded(y_um: float, x_um: float, source: str) -> PixelSize | None:
    if not _valid(y_um, x_um):
        return None
    # Resolution tags are rationals: 0.65 µm comes back as 0.6500000000x.
    return PixelSize(float(f"{y_um:.9g}"), float(f"{x_um:.9g}"), source)


# -- reading through bioio ---------------------------------------------------------------
# (reader module, file name endings it is tried for), in the order they are tried.
_BIOIO_READERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bioio_ome_tiff", (".ome.tif", ".ome.tiff", ".tif", ".tiff")),
    ("bioio_tifffile", (".tif", ".tiff")),
    ("bioio_ome_zarr", (".zarr",)),
    ("bioio_czi", (".czi",)),
    ("bioio_nd2", (".nd2",)),
    ("bioio_lif", (".lif",)),
)
_PNG = (".png",)
# The names bioio makes up for channels a file does not name ("Channel:0:1").
_GENERATED_CHANNEL = re.compile(r"^Channel:[^:]*:\d+$")
# What the ome-types that bioio-ome-tiff calls says on every read; not the user's concern.
_QUIET = (
    (DeprecationWarning, r".*parser argument is ignored"),
    (UserWarning, r"Could not parse tiff pixel size"),
)


@dataclass(frozen=True, slots=True)
class ImageSelection:
    """Which 2-D plane of a multi-dimensional file to segment.

    ``channel`` and ``scene`` are an index or a name the file gives; ``timepoint`` an
    index; ``z`` a plane index or ``"max"`` (maximum-intensity projection). ``None``
    means "the file has only one": a file with several and no choice is refused with
    an error that lists them, since picking one silently would segment the wrong data.
    """

    channel: int | str | None = None
    scene: int | str | None = None
    timepoint: int | None = None
    z: int | Literal["max"] | None = None

    def describe(self) -> dict[str, Any]:
        """The choices made, for run.json and events (``None`` entries dropped)."""
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


def installed_readers() -> dict[str, tuple[str, ...]]:
    """The bioio reader plugins installed here and the file endings each is tried for."""
    import importlib.util

    found = {
        name.replace("_", "-"): ends
        for name, ends in _BIOIO_READERS
        if importlib.util.find_spec(name) is not None
    }
    found["png (scikit-image)"] = _PNG
    return found


def _is_zarr(p: Path) -> bool:
    return p.is_dir() and (
        p.name.lower().endswith(".zarr")
        or (p / "zarr.json").is_file()
        or (p / ".zgroup").is_file()
    )


def _candidates(p: Path) -> list[str]:
    name = p.name.lower()
    if _is_zarr(p):
        return [m for m, ends in _BIOIO_READERS if ".zarr" in ends]
    return [m for m, ends in _BIOIO_READERS if name.endswith(ends)]


def _unknown_format(p: Path) -> ImageError:
    readers = "; ".join(f"{n} ({', '.join(e)})" for n, e in installed_readers().items())
    return ImageError(f"{p}: no installed reader for this file type; installed: {readers}")


def _open_bioimage(p: Path) -> Any:
    """A ``bioio.BioImage`` of ``p`` with the first reader (by file ending) that takes it."""
    import importlib
    import warnings

    modules = _candidates(p)
    failures: dict[str, list[str]] = {}  # reason -> readers that gave it
    for module in modules:
        try:
            reader_cls = importlib.import_module(module).Reader
        except ImportError:
            continue
        try:
            with warnings.catch_warnings():
                for category, message in _QUIET:
                    warnings.filterwarnings("ignore", message, category)
                reader_cls(str(p))  # raises when this reader does not take the file
                from bioio import BioImage

                return BioImage(str(p), reader=reader_cls)
        except Exception as exc:
            failures.setdefault(_reason(exc), []).append(module.replace("_", "-"))
    if not failures:
        raise _unknown_format(p)
    said = "; ".join(f"{', '.join(readers)}: {why}" for why, readers in failures.items())
    raise ImageError(f"{p}: cannot read image ({said})")


def _reason(exc: Exception) -> str:
    """A reader's complaint in one line, without bioio's "does not support 'path'" preamble."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^.*?does not support the image: '[^']*'\.?\s*", "", text)
    return text[:200] or type(exc).__name__


def _pick(value: int | str | None, names: Sequence[str], what: str, option: str, p: Path) -> int:
    """The index that ``value`` (index or name) chooses among ``names``."""
    if all(n == str(i) for i, n in enumerate(names)):
        listed = f"indices 0-{len(names) - 1}" if len(names) > 1 else "only index 0"
    else:
        listed = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    if value is None:
        if len(names) == 1:
            return 0
        raise ImageError(f"{p}: has {len(names)} {what}s ({listed}); choose one with {option}")
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        if value in names:
            return list(names).index(value)
        raise ImageError(f"{p}: no {what} named {value!r}; it has {listed}")
    index = int(value)
    if not 0 <= index < len(names):
        raise ImageError(f"{p}: {what} {index} is out of range; it has {listed}")
    return index


def _bioio_plane(p: Path, sel: ImageSelection) -> tuple[np.ndarray, PixelSize | None]:
    import warnings

    img = _open_bioimage(p)
    try:
        with warnings.catch_warnings():
            for category, message in _QUIET:
                warnings.filterwarnings("ignore", message, category)
            scene = _pick(sel.scene, [str(s) for s in img.scenes], "scene", "--scene", p)
            img.set_scene(scene)
            dims = img.dims
            if "S" in dims.order and dims.S > 1:
                raise ImageError(
                    f"{p}: is an RGB image ({dims.S} samples per pixel); liveseg segments "
                    f"one intensity channel — save one channel (e.g. Fiji: Image ▸ Color ▸ "
                    f"Split Channels)"
                )
            names = [str(n) for n in (img.channel_names or [])]
            if len(names) != dims.C or all(_GENERATED_CHANNEL.match(n) for n in names):
                names = [str(i) for i in range(dims.C)]  # the file names none
            channel = _pick(sel.channel, names, "channel", "--channel", p)
            times = [str(i) for i in range(dims.T)]
            t = _pick(sel.timepoint, times, "time point", "-t/--timepoint", p)
            planes = [str(i) for i in range(dims.Z)]
            index: dict[str, int] = {"T": t, "C": channel}
            if "S" in dims.order:
                index["S"] = 0
            stack = img.get_image_dask_data("ZYX", **index)
            if sel.z == "max":
                plane = np.asarray(stack.max(axis=0).compute())
            else:
                if sel.z is None and dims.Z > 1:
                    raise ImageError(
                        f"{p}: is a 3-D stack of {dims.Z} z-planes; choose one with --z N "
                        f"or project it with --z max"
                    )
                z = _pick(sel.z, planes, "z-plane", "--z", p)
                plane = np.asarray(stack[z].compute())
            size = _bioio_pixel_size(p, img)
    except LivesegError:
        raise
    except Exception as exc:
        raise ImageError(f"{p}: cannot read image data ({type(exc).__name__}: {exc})") from exc
    return plane, size


def _bioio_pixel_size(p: Path, img: Any) -> PixelSize | None:
    """The file's Y/X pixel size in µm, from ``physical_pixel_sizes`` and the units.

    bioio gives the numbers in the file's own units (µm for nearly every writer); units
    come from ``dimension_properties`` (OME-Zarr, ND2) or the OME metadata (OME-TIFF).
    Two bioio defaults are not calibrations and give ``None``: a plain TIFF's
    resolution in inches (screen dpi) or without a unit, and an OME-Zarr scale of 1
    without a unit (the writer's default).
    """
    sizes = img.physical_pixel_sizes
    y, x = sizes.Y, sizes.X
    if y is None or x is None or not _valid(float(y), float(x)):
        return None
    module = type(img.reader).__module__.split(".")[0]
    source = module.removeprefix("bioio_").replace("_", "-")
    unit: Any = None
    try:
        unit = img.dimension_properties.X.unit
    except Exception:
        unit = None
    if module == "bioio_ome_tiff":
        pixels = img.ome_metadata.images[img.current_scene_index].pixels
        unit = getattr(pixels.physical_size_x_unit, "value", None)
    elif module == "bioio_tifffile" and not _tiff_calibrated(p):
        return None
    elif module == "bioio_ome_zarr" and unit is None and float(x) == 1.0 == float(y):
        return None
    factor = _unit_factor(unit)
    if factor is None:
        return None
    return _rounded(float(y) * factor, float(x) * factor, source)


def _tiff_calibrated(p: Path) -> bool:
    """Whether a plain TIFF's resolution is a metric calibration (ImageJ, cm, mm, µm)."""
    import tifffile

    with tifffile.TiffFile(p) as tif:
        if tif.is_imagej:
            return bool((tif.imagej_metadata or {}).get("unit"))
        tag = tif.pages.first.tags.get("ResolutionUnit")
        return tag is not None and int(tag.value) in (3, 4, 5)


def _png_plane(p: Path) -> np.ndarray:
    from skimage.io import imread

    arr = imread(p)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        raise ImageError(f"{p}: is an RGB(A) PNG; save a single-channel image instead")
    return np.asarray(arr)


def _plain_zarr_plane(p: Path) -> np.ndarray:
    """First plane of a zarr store with no OME metadata (bioio-ome-zarr reads OME only)."""
    import zarr

    node = zarr.open(str(p), mode="r")
    while isinstance(node, zarr.Group):
        keys = sorted(k for k in node.keys() if k not in ("labels", "OME"))
        if not keys:
            raise ImageError(f"{p}: no image array in this zarr store")
        node = node[keys[0]]
    plane: Any = node
    while plane.ndim > 2:
        plane = plane[0]
    return np.asarray(plane)


def _ome_image_groups(p: Path) -> list[str]:
    """Paths (relative to ``p``) of the OME-Zarr image groups in a store, sorted.

    ``[""]`` when ``p`` is an image group; a multi-position store (a run's, a plate's
    ``row/col/field``) gives every image group up to three levels down.
    """
    import zarr

    found: list[str] = []

    def walk(node: Any, rel: str, depth: int) -> None:
        if not isinstance(node, zarr.Group):
            return
        attrs = dict(node.attrs)
        if (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales"):
            found.append(rel)
            return
        if depth < 3:
            for key in sorted(k for k in node.keys() if k not in ("labels", "OME")):
                walk(node[key], f"{rel}/{key}" if rel else key, depth + 1)

    walk(zarr.open(str(p), mode="r"), "", 0)
    return found


def _zarr_target(p: Path, sel: ImageSelection) -> tuple[Path, ImageSelection] | None:
    """The image group to open and the choice left for it; ``None``: no OME metadata.

    In a store of several image groups (positions, wells) ``--scene`` picks the group,
    by index or path (``A1``, ``B/3/0``).
    """
    groups = _ome_image_groups(p)
    if not groups:
        return None
    if groups == [""]:
        return p, sel
    index = _pick(sel.scene, groups, "position", "--scene", p)
    return p / groups[index], replace(sel, scene=None)


def read_image_data(path: str | Path, selection: ImageSelection | None = None) -> ImageData:
    """One 2-D grayscale plane of an image file and the pixel size the file states.

    TIFF, OME-TIFF, OME-Zarr and the vendor formats whose bioio reader is installed
    (CZI, ND2, LIF) are read through ``bioio``; ``selection`` picks the scene, channel,
    time point and z-plane. PNG is read with scikit-image (one plane, no pixel size).

    Raises
    ------
    ConfigError
        When the file does not exist.
    ImageError
        Unknown format (the message lists the installed readers), unreadable or
        truncated file, a choice out of range or missing, RGB, or not a 2-D image.
    """
    p = Path(path)
    sel = selection or ImageSelection()
    if not p.exists():
        raise ConfigError(f"image not found: {p}")
    size: PixelSize | None = None
    try:
        if p.name.lower().endswith(_PNG):
            arr = _png_plane(p)
        elif _is_zarr(p) and (target := _zarr_target(p, sel)) is not None:
            arr, size = _bioio_plane(*target)
        elif _is_zarr(p):
            arr = _plain_zarr_plane(p)
        elif not _candidates(p):
            raise _unknown_format(p)
        else:
            arr, size = _bioio_plane(p, sel)
    except LivesegError:
        raise
    except Exception as exc:
        raise ImageError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from exc
    image = check_image(arr, str(p))
    return ImageData(
        array=image,
        pixel_size_um=size.um if size is not None else None,
        source=size.source if size is not None else None,
    )


def read_image(path: str | Path, selection: ImageSelection | None = None) -> np.ndarray:
    """One 2-D grayscale plane of an image file (see :func:`read_image_data`)."""
    return read_image_data(path, selection).array


def read_pixel_size(path: str | Path, selection: ImageSelection | None = None) -> PixelSize | None:
    """The physical pixel size a file states, or ``None`` when it does not say.

    This never raises: a file whose image or metadata cannot be read gives ``None``
    (reading the image reports the problem).
    """
    p = Path(path)
    try:
        if _is_zarr(p):
            target = _zarr_target(p, selection or ImageSelection())
            return _bioio_pixel_size(target[0], _open_bioimage(target[0])) if target else None
        if p.name.lower().endswith(_PNG) or not _candidates(p):
            return None
        img = _open_bioimage(p)
        if selection is not None and selection.scene is not None:
            img.set_scene(_pick(selection.scene, [str(s) for s in img.scenes], "scene", "", p))
        return _bioio_pixel_size(p, img)
    except Exception:
        return None


def resolve_pixel_size(
    path: str | Path, override: float | None = None, selection: ImageSelection | None = None
) -> tuple[float, str | None]:
    """The pixel size (µm) to measure an image file with, and where it came from.

    :meth:`ImageData.measure_with` for the size :func:`read_pixel_size` reads, without
    reading the pixels.
    """
    size = None if override is not None else read_pixel_size(path, selection)
    data = ImageData(np.empty((0, 0)), size.um if size else None, size.source if size else None)
    return data.measure_with(override)
