"""The run directory's layout: output checks, the live lock, OME-Zarr image groups and labels."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveseg.errors import LivesegError
from liveseg.store.ngff import (
    image_multiscale,
    label_image,
    multiscale,
    open_label_array,
    series_paths,
)
from liveseg.store.tables import LOCK
from liveseg.types import LABEL_DTYPE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


log = logging.getLogger("liveseg.store")


def check_output_dir(
    path: Path, command: str, own: Callable[[Mapping[str, Any]], bool] | None = None
) -> None:
    """Refuse an output directory that holds another run: never destroy one.

    ``own`` says whether an existing run.json is this command's own earlier output
    (``batch`` resumes its own output); anything else with a run.json or frames.csv is
    refused with a one-line error.

    Raises
    ------
    LivesegError
        When ``path`` holds another run.
    """
    info_path, frames = path / "run.json", path / "frames.csv"
    if not info_path.exists() and not frames.exists():
        return
    try:
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    if own is not None and info and own(info):
        return
    kind = info.get("kind") or "acquisition"
    raise LivesegError(
        f"{command}: {path} already holds another liveseg run ({kind}); "
        f"choose a new output directory"
    )


def run_is_live(run_dir: Path) -> bool:
    """Whether a process still holds ``run_dir``'s lock (portable: ``filelock``).

    A run without a lock file (written before liveseg held one) is taken as not live.
    """
    from filelock import FileLock, Timeout

    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    probe = FileLock(path, timeout=0, thread_local=False)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:  # a read-only run directory: nobody can be writing it
        return False
    probe.release()
    return False


def image_group(images: Path, position: int) -> Path:
    """The OME-Zarr image group of one position.

    pymmcore-plus writes a single-position acquisition as one image at the store's root
    and a multi-position one as a bioformats2raw layout with one image per position,
    listed in order in ``OME/zarr.json`` (named after the positions when they have
    names); a store without that list has its images at ``0``, ``1``, ….
    """
    root_meta = images / "zarr.json"
    if root_meta.exists():
        attrs = json.loads(root_meta.read_text()).get("attributes", {})
        if "multiscales" in attrs.get("ome", {}):
            return images
    series = series_paths(images)
    if 0 <= position < len(series):
        return images / series[position]
    return images / str(position)


def image_series_index(sequence: Any) -> dict[tuple[int, int], int]:
    """``(p, g)`` of a grid acquisition's events → the index of its image group.

    ome-writers stores every grid tile of every stage position as an image of its own
    (positions first, each with its grid, unless the axis order puts the grid first);
    a frame's ``position`` is that image's index, so its labels and every reader find
    it. Empty for an acquisition without a grid (there ``position`` is ``p``).
    """
    from useq import Axis, MDASequence

    if not isinstance(sequence, MDASequence):
        return {}
    global_grid = list(sequence.grid_plan) if sequence.grid_plan else []
    positions = list(sequence.stage_positions)
    if not positions:
        return {(0, g): g for g in range(len(global_grid))}
    order = sequence.axis_order
    if global_grid and Axis.GRID in order and Axis.POSITION in order:
        if order.index(Axis.GRID) < order.index(Axis.POSITION):
            n = len(positions)
            return {(p, g): g * n + p for g in range(len(global_grid)) for p in range(n)}
    out: dict[tuple[int, int], int] = {}
    has_grid = False
    for p, pos in enumerate(positions):
        sub = getattr(pos, "sequence", None)
        grid = list(sub.grid_plan) if sub is not None and sub.grid_plan else global_grid
        has_grid = has_grid or bool(grid)
        for g in range(max(len(grid), 1)):
            out[(p, g)] = len(out)
    return out if has_grid else {}


def create_label_array(
    images: Path,
    position: int,
    name: str,
    plane: tuple[int, ...],
    *,
    dtype: Any = LABEL_DTYPE,
    image_label: Mapping[str, Any] | None = None,
    pixel_size_um: float | None = None,
) -> tuple[Any, list[str]]:
    """Create (or open) the OME-NGFF label image for one position of an OME-Zarr store.

    The label array mirrors the image array's shape, axes and scale so that ome-zarr
    tools and napari overlay the two; without an image array it is ``(t, y, x)`` (scaled
    by ``pixel_size_um``) and grows. ``image_label`` adds to the label image's
    ``image-label`` block (a class map's ``colors`` and ``properties``); ``dtype`` is
    ``uint32`` for instances, ``uint8`` for class maps. The metadata is built and
    validated by yaozarrs (:mod:`liveseg.store.ngff`).
    """
    group = image_group(images, position)
    shape, dims = _image_array_meta(group)
    ms = image_multiscale(group, len(shape)) if shape else None
    if ms is None:
        if not shape:
            shape, dims = [1, *plane], ["t", "y", "x"]
        ms = multiscale(dims, pixel_size_um=pixel_size_um)
    arr = open_label_array(group, name, label_image(ms, image_label), shape, dtype)
    return arr, list(dims)


def _image_array_meta(group: Path) -> tuple[list[int], list[str]]:
    """Shape and dimension names of an image group's full-resolution array, if present."""
    meta_file = group / "0" / "zarr.json"
    if not meta_file.exists():
        return [], []
    meta = json.loads(meta_file.read_text())
    dims = meta.get("dimension_names") or [f"d{i}" for i in range(len(meta["shape"]))]
    return list(meta["shape"]), list(dims)
