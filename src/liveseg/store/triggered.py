"""TriggeredStore: the OME-Zarr series of triggered sub-acquisitions."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.store import ngff
from liveseg.store.tables import CLASSES, TRIGGERED
from liveseg.types import CLASS_DTYPE, LABEL_DTYPE

if TYPE_CHECKING:
    from collections.abc import Mapping


log = logging.getLogger("liveseg.store")


class TriggeredStore:
    """``<run>/triggered.ome.zarr``: one OME-Zarr image group per triggered series.

    The store is a bioformats2raw collection (like a multi-position ``images.ome.zarr``):
    each series is listed in ``OME/zarr.json`` and ``OME/METADATA.ome.xml`` once its
    image array exists, so napari-ome-zarr opens the root with every series.

    Each series ``<name>/0`` is a ``(c, z, y, x)`` array (its sizes are declared when the
    proposal is accepted; y and x come with the first frame) with its labels in
    ``<name>/labels/segmentation/0``; the group's ``liveseg`` attributes link it to the
    trigger, the frame and the object label that caused it. Written by the worker.
    """

    def __init__(self, run_dir: Path, label_name: str = "segmentation") -> None:
        self.path = Path(run_dir) / TRIGGERED
        self.label_name = label_name
        self._lock = threading.Lock()
        self._sizes: dict[str, dict[str, int]] = {}
        self._arrays: dict[tuple[str, str], Any] = {}
        self._z_um: dict[str, dict[int, float]] = {}
        self._scaled: set[str] = set()
        self._z_steps: dict[str, float] = {}
        self._pixel_size: dict[str, float] = {}
        self._image_label: dict[str, dict[str, Any]] = {}
        self._label_meta: dict[tuple[str, str], Any] = {}
        self._xml = ngff.OmeXml(self.path)

    def declare(self, series: str, sizes: Mapping[str, int], link: Mapping[str, Any]) -> None:
        """Record a series' shape and what triggered it (before any frame arrives)."""
        with self._lock:
            if not self._sizes:  # the first series: the store is a collection from now on
                ngff.start_collection(self.path)
            link_attrs = {"series": series, "sizes": dict(sizes), **dict(link)}
            ngff.set_attributes(self.path / series, {"liveseg": link_attrs})
            self._sizes[series] = {"c": int(sizes.get("c", 1)), "z": int(sizes.get("z", 1))}

    def _set_scale(self, series: str, kind: str, pixel_size_um: float, z_step_um: float) -> None:
        """Write the OME-NGFF metadata of a series' image or labels with its µm scale.

        ``z_step_um`` 0 means not known yet (the z axis then has scale 1 and no unit).
        """
        group = self.path / series
        ms = ngff.multiscale(
            ["c", "z", "y", "x"], pixel_size_um=pixel_size_um, z_step_um=z_step_um or None
        )
        if kind == "image":
            from yaozarrs import v05

            ngff.set_image_metadata(group, v05.Image(multiscales=[ms]))
            return
        name = self._label_group(kind)
        extra = self._image_label.get(kind, {}) if kind == CLASSES else {}
        meta = ngff.label_image(ms, extra)
        labels = group / "labels"
        if (labels / name / "zarr.json").exists():
            ngff.set_image_metadata(labels / name, meta)
        self._label_meta[(series, kind)] = meta

    def _label_group(self, kind: str) -> str:
        """The label image a kind is stored in (``labels``: the instance label name)."""
        return self.label_name if kind == "labels" else kind

    def _z_step(self, series: str, z: int, z_um: float | None) -> float | None:
        """The series' z-step from two planes' stage z (None until two are known)."""
        if z_um is None:
            return None
        seen = self._z_um.setdefault(series, {})
        seen[z] = float(z_um)
        if len(seen) < 2:
            return None
        (z0, u0), (z1, u1) = sorted(seen.items())[:2]
        step = abs(u1 - u0) / (z1 - z0)
        return step if step > 0 else None

    def _array(
        self,
        series: str,
        kind: str,
        plane: tuple[int, int],
        dtype: Any,
        pixel_size_um: float = 1.0,
    ) -> Any:
        key = (series, kind)
        with self._lock:
            if key in self._arrays:
                return self._arrays[key]
            import zarr

            sizes = self._sizes.get(series, {"c": 1, "z": 1})
            self._pixel_size[series] = pixel_size_um
            self._set_scale(series, kind, pixel_size_um, self._z_steps.get(series, 0.0))
            shape = (sizes["c"], sizes["z"], *plane)
            if kind == "image":
                # Opened at its own path: the groups above are the store's to write.
                arr = zarr.create_array(
                    str(self.path / series / "0"),
                    shape=shape,
                    chunks=(1, 1, *plane),
                    dtype=dtype,
                    fill_value=0,
                    dimension_names=["c", "z", "y", "x"],
                    overwrite=True,
                )
                ngff.register_series(self.path, series)
                self._xml.update(series)
            else:
                meta = self._label_meta[key]
                arr = ngff.open_label_array(
                    self.path / series, self._label_group(kind), meta, shape, dtype
                )
            self._arrays[key] = arr
            return arr

    def write(
        self,
        series: str,
        index: Mapping[str, int],
        *,
        image: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        z_um: float | None = None,
        pixel_size_um: float = 1.0,
        classes: np.ndarray | None = None,
        image_label: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the image, labels and/or class map of one plane (``index``: c and z).

        ``z_um`` (the plane's stage z) gives the stack its z-step in the OME-NGFF scale
        as soon as two planes are known; ``pixel_size_um`` its y/x scale. A class map
        goes to ``<series>/labels/classes`` with ``image_label`` (colours, class names).
        """
        key = (int(index.get("c", 0)), int(index.get("z", 0)))
        if image is not None:
            arr = self._array(series, "image", image.shape[-2:], image.dtype, pixel_size_um)
            arr[key] = image
            step = self._z_step(series, key[1], z_um)
            if step is not None and series not in self._scaled:
                with self._lock:
                    self._scaled.add(series)
                    self._z_steps[series] = step
                    self._set_scale(series, "image", self._pixel_size.get(series, 1.0), step)
                    self._xml.update(series)
                    for kind in ("labels", CLASSES):
                        if (series, kind) in self._arrays:
                            self._set_scale(series, kind, self._pixel_size.get(series, 1.0), step)
        if labels is not None:
            arr = self._array(
                series, "labels", labels.shape[-2:], LABEL_DTYPE, self._pixel_size.get(series, 1.0)
            )
            arr[key] = np.asarray(labels, dtype=LABEL_DTYPE)
        if classes is not None:
            if image_label is not None:
                self._image_label.setdefault(CLASSES, dict(image_label))
            arr = self._array(
                series, CLASSES, classes.shape[-2:], CLASS_DTYPE, self._pixel_size.get(series, 1.0)
            )
            arr[key] = np.asarray(classes, dtype=CLASS_DTYPE)

    def close(self) -> None:
        """Write the collection's OME-XML as it ends (see :class:`ngff.OmeXml`)."""
        self._xml.close()
