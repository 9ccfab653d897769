"""The run directory's layout: output checks, the live lock, OME-Zarr image groups and labels."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
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
    and a multi-position one as a bioformats2raw layout with one image per position.
    """
    root_meta = images / "zarr.json"
    if root_meta.exists():
        attrs = json.loads(root_meta.read_text()).get("attributes", {})
        if "multiscales" in attrs.get("ome", {}):
            return images
    return images / str(position)


def _image_array_meta(images: Path, position: int) -> tuple[list[int], list[str], dict[str, Any]]:
    """Shape, dimension names and group attrs of a position's image array, if present."""
    meta_file = image_group(images, position) / "0" / "zarr.json"
    group_file = image_group(images, position) / "zarr.json"
    if not meta_file.exists():
        return [], [], {}
    meta = json.loads(meta_file.read_text())
    attrs = json.loads(group_file.read_text()).get("attributes", {}) if group_file.exists() else {}
    dims = meta.get("dimension_names") or [f"d{i}" for i in range(len(meta["shape"]))]
    return list(meta["shape"]), list(dims), attrs


def create_label_array(
    images: Path,
    position: int,
    name: str,
    plane: tuple[int, ...],
    *,
    dtype: Any = LABEL_DTYPE,
    image_label: Mapping[str, Any] | None = None,
) -> tuple[Any, list[str]]:
    """Create (or open) the OME-NGFF label image for one position of an OME-Zarr store.

    The label array mirrors the image array's shape and axes so that ome-zarr tools and
    napari overlay the two; without an image array it is ``(t, y, x)`` and grows.
    ``image_label`` adds to the label image's ``image-label`` block (a class map's
    ``colors`` and ``properties``); ``dtype`` is ``uint32`` for instances, ``uint8`` for
    class maps.
    """
    import zarr

    shape, dims, attrs = _image_array_meta(images, position)
    if not shape:
        shape, dims = [1, *plane], ["t", "y", "x"]
    labels_dir = image_group(images, position) / "labels"
    root = zarr.open_group(str(labels_dir), mode="a", zarr_format=3)
    ome_attrs: Any = root.attrs.get("ome") or {}
    existing = list(ome_attrs.get("labels", []))
    if name not in existing:
        root.attrs["ome"] = {"version": "0.5", "labels": [*existing, name]}
    grp = root.require_group(name)
    multiscales = attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        multiscales = [
            {
                "axes": [{"name": d, "type": "space" if d in "yx" else "time"} for d in dims],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1.0] * len(dims)}
                        ],
                    }
                ],
            }
        ]
    grp.attrs["ome"] = {
        "version": "0.5",
        "multiscales": multiscales,
        "image-label": {
            **dict(image_label or {}),
            "version": "0.5",
            "source": {"image": "../../"},
        },
    }
    if "0" in grp:
        arr = grp["0"]
    else:
        chunks = tuple([1] * (len(shape) - 2) + list(shape[-2:]))
        arr = grp.create_array(
            "0",
            shape=tuple(shape),
            chunks=chunks,
            dtype=np.dtype(dtype).name,
            fill_value=0,
            dimension_names=dims,
        )
    return arr, dims
