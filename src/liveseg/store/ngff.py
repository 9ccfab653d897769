"""OME-NGFF 0.5 metadata for everything the store writes, through ``yaozarrs``.

pymmcore-plus writes the base images through ``ome-writers``, which writes its OME-Zarr
with ``yaozarrs``; the store writes what comes after (label images, the triggered
series, the collections' OME-XML) with the same library, so every group's metadata is
built and validated by ``yaozarrs``' pydantic models of the spec rather than by hand:

* :func:`multiscale` — axes with types and units, the µm/second scale of every axis;
* :func:`label_image` — a label image's ``multiscales`` plus ``image-label`` (colours,
  properties, source), the model rejecting a malformed block;
* :func:`open_label_array` / :func:`write_label_image` — the ``labels`` group and its
  label image (``yaozarrs.write.v05.LabelsBuilder``), streamed plane by plane or
  written whole;
* :func:`register_series` / :func:`write_ome_xml` — a multi-image collection in the
  bioformats2raw layout (the only multi-image layout OME-NGFF 0.5 has besides plates):
  root, ``OME/zarr.json`` with its ``series`` and ``OME/METADATA.ome.xml`` (written with
  ``ome-types``), which napari-ome-zarr reads to find the images.

Small JSON documents are replaced atomically (:func:`write_json_atomic`) so a run killed
at any moment leaves old or new metadata, never half of it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.store.tables import write_json_atomic

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from yaozarrs import v05

__all__ = [
    "OmeXml",
    "image_metadata",
    "image_multiscale",
    "label_image",
    "mend_scales",
    "multiscale",
    "open_label_array",
    "register_series",
    "series_paths",
    "write_label_image",
    "write_ome_xml",
]

log = logging.getLogger("liveseg.store")

UM = "micrometer"
SECOND = "second"
_OME_TYPES = {"float32": "float", "float64": "double"}  # OME-XML's names; ints match numpy


def multiscale(
    dims: Sequence[str],
    *,
    pixel_size_um: float | None = None,
    z_step_um: float | None = None,
    t_step_s: float | None = None,
) -> v05.Multiscale:
    """One-level ``multiscales`` entry for an array with dimension names ``dims``.

    ``y``/``x`` are space axes in µm scaled by ``pixel_size_um``, ``z`` in µm by
    ``z_step_um``, ``t`` in seconds by ``t_step_s``, ``c`` a channel axis; any other
    name is a custom axis (never mislabelled as time; the spec orders axes
    ``[time,] [channel,] space``, which the model enforces). A scale that is unknown or not
    positive is 1 and its axis carries no unit, so no number claims a size it does not
    know.
    """
    from yaozarrs import DimSpec, v05

    known = {"y": (pixel_size_um, UM), "x": (pixel_size_um, UM), "z": (z_step_um, UM)}
    known["t"] = (t_step_s, SECOND)
    specs = []
    for name in dims:
        scale, unit = known.get(name, (None, None))
        ok = scale is not None and scale > 0
        specs.append(
            DimSpec(
                name=name,
                scale=float(scale) if ok and scale is not None else 1.0,
                unit=unit if ok else None,
                type=_axis_type(name),
            )
        )
    return v05.Multiscale.from_dims(specs)


def _axis_type(name: str) -> str | None:
    """The OME-NGFF axis type of a dimension name (None: a custom axis)."""
    if name in ("x", "y", "z"):
        return "space"
    return {"t": "time", "c": "channel"}.get(name)


def image_metadata(group: Path) -> v05.Image | None:
    """The validated ``ome`` metadata of an image group (None if it has none).

    A scale of 0 (what ome-writers writes for the time axis of a sequence with
    ``interval: 0``, which napari refuses) becomes 1 without a unit.
    """
    from yaozarrs import v05

    meta = group / "zarr.json"
    if not meta.exists():
        return None
    attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes") or {}
    ome = attrs.get("ome") or {}
    if "multiscales" not in ome:
        return None
    ome = json.loads(json.dumps(ome))  # a deep copy to mend
    mend_scales(ome)
    return v05.Image.model_validate(ome)


def image_multiscale(group: Path, ndim: int) -> v05.Multiscale | None:
    """The full-resolution ``multiscales`` entry of an image group with ``ndim`` axes.

    What a label image beside the image takes so the two overlay (None when the group
    is no OME-NGFF image, or its axes do not match).
    """
    img = image_metadata(group)
    if img is None or len(img.multiscales[0].axes) != ndim:
        return None
    ms = img.multiscales[0]
    return ms.model_copy(update={"datasets": ms.datasets[:1], "name": None})


def mend_scales(ome: dict[str, Any]) -> bool:
    """Replace scales that are not positive by 1 (their axis loses its unit), in place.

    ome-writers writes the time axis of a sequence with ``interval: 0`` with scale 0,
    which the spec's readers refuse (napari: "scale values of 0"). Returns whether
    anything changed.
    """
    changed = False
    for ms in ome.get("multiscales") or []:
        for ds in ms.get("datasets", []):
            for tr in ds.get("coordinateTransformations", []):
                if tr.get("type") != "scale":
                    continue
                for i, value in enumerate(tr["scale"]):
                    if not value > 0:
                        tr["scale"][i] = 1.0
                        ms["axes"][i].pop("unit", None)
                        changed = True
    return changed


def label_image(
    ms: v05.Multiscale, image_label: Mapping[str, Any] | None = None
) -> v05.LabelImage:
    """A label image's metadata: ``ms`` and its ``image-label`` block.

    ``image_label`` adds ``colors`` and ``properties`` (a class map's names, see
    :meth:`liveseg.builtins.classes.ClassTable.ngff_image_label`); the source is the
    image two levels up, as the spec lays labels out.
    """
    block = {k: v for k, v in dict(image_label or {}).items() if k != "version"}
    block["source"] = {"image": "../../"}
    return _label_models().label_image(multiscales=[ms], **{"image-label": block})


class _LabelModels:
    """yaozarrs' label models, mended to keep what the spec allows.

    yaozarrs 0.3 drops a property's keys other than ``label-value`` (the spec allows
    any: the class name lives there) and writes ``label-value`` of a colour as a float
    (the spec: the label's integer). These subclasses keep its validation otherwise.
    """

    def __init__(self) -> None:
        from pydantic import ConfigDict, Field
        from yaozarrs import v05

        class Property(v05.LabelProperty):
            model_config = ConfigDict(extra="allow")

        class Color(v05.LabelColor):
            label_value: int = Field(alias="label-value")  # type: ignore[assignment]

        class Block(v05.ImageLabel):
            colors: list[Color] | None = None  # type: ignore[assignment]
            properties: list[Property] | None = None  # type: ignore[assignment]

        class Label(v05.LabelImage):
            image_label: Block = Field(alias="image-label")  # type: ignore[assignment]

        self.label_image = Label


@functools.cache
def _label_models() -> _LabelModels:
    return _LabelModels()


def _dump(model: Any) -> dict[str, Any]:
    """A yaozarrs model as the JSON of an ``ome`` attribute."""
    out: dict[str, Any] = model.model_dump(mode="json", exclude_none=True, by_alias=True)
    return out


@functools.cache
def warm_up_label_writing() -> None:
    """Pay label writing's one-time costs now, not on the first frame of a run.

    The first label image of a process imports zarr's codec pipeline and yaozarrs'
    writer, reads the codec entry points and starts zarr's I/O thread: about 0.4 s of
    Python that, during a live run, would hold the GIL the acquisition thread needs.
    A tiny array in memory goes through the same steps, once per process.
    """
    import zarr
    from yaozarrs.write.v05 import LabelsBuilder  # noqa: F401

    _label_models()
    arr = zarr.create_array(
        store=zarr.storage.MemoryStore(), shape=(1, 8, 8), chunks=(1, 8, 8), dtype="uint32"
    )
    arr[0] = np.ones((8, 8), dtype=np.uint32)


def open_label_array(
    image: Path,
    name: str,
    meta: v05.LabelImage,
    shape: Sequence[int],
    dtype: Any,
) -> Any:
    """Open ``<image>/labels/<name>/0`` for writing plane by plane, creating it if needed.

    A new label image is created by ``yaozarrs`` (labels group, label group, array:
    one chunk per plane, so each plane is written alone); an existing one is opened as
    it is (``liveseg resegment`` adds to a run's labels) and gets ``meta`` (a class map
    may have gained names).
    """
    import zarr
    from yaozarrs.write.v05 import LabelsBuilder

    labels = image / "labels"
    arr_meta = labels / name / "0" / "zarr.json"
    if arr_meta.exists():
        _set_ome(labels / name, meta)
        _add_label_name(labels, name)
        return zarr.open_array(str(labels / name / "0"), mode="r+")
    listed = name in _label_names(labels)
    chunks = (*([1] * (len(shape) - 2)), *shape[-2:])
    builder = LabelsBuilder(labels, writer="zarr", chunks=chunks, overwrite=listed)
    _, arrays = builder.add_label(name, meta, (tuple(shape), np.dtype(dtype))).prepare()
    return arrays[f"{name}/0"]


def write_label_image(
    image: str | Path,
    name: str,
    array: Any,
    *,
    dims: Sequence[str] | None = None,
    pixel_size_um: float | None = None,
    image_label: Mapping[str, Any] | None = None,
) -> Path:
    """Write a whole label image ``<image>/labels/<name>`` (numpy or dask ``array``).

    The axes and scale are the image group's own when it is an OME-NGFF image (so the
    labels overlay it), else built from ``dims`` (default: the last ``array.ndim`` of
    ``t, c, z, y, x``) and ``pixel_size_um``. ``image_label`` adds colours and
    properties. An existing label image of that name is replaced. Returns its path.
    """
    from yaozarrs.write.v05 import LabelsBuilder

    image = Path(image)
    ndim = len(array.shape)
    ms = image_multiscale(image, ndim)
    if ms is None:
        names = list(dims) if dims is not None else ["t", "c", "z", "y", "x"][-ndim:]
        ms = multiscale(names, pixel_size_um=pixel_size_um)
    labels = image / "labels"
    listed = name in _label_names(labels)
    chunks = (*([1] * (ndim - 2)), *array.shape[-2:])
    builder = LabelsBuilder(labels, writer="zarr", chunks=chunks, overwrite=listed)
    builder.write_label(name, label_image(ms, image_label), array)
    return labels / name


def _label_names(labels: Path) -> list[str]:
    meta = labels / "zarr.json"
    if not meta.exists():
        return []
    attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes") or {}
    return list((attrs.get("ome") or {}).get("labels") or [])


def _add_label_name(labels: Path, name: str) -> None:
    from yaozarrs import v05

    names = _label_names(labels)
    if name not in names:
        _set_ome(labels, v05.LabelsGroup(labels=[*names, name]))


def _set_ome(group: Path, model: Any) -> None:
    """Replace a group's ``ome`` attribute (other attributes kept), atomically."""
    set_attributes(group, {"ome": _dump(model)})


def set_image_metadata(group: Path, meta: v05.Image | v05.LabelImage) -> None:
    """Write an image (or label image) group's ``ome`` attribute, keeping the others."""
    _set_ome(group, meta)


def set_attributes(group: Path, attrs: Mapping[str, Any]) -> None:
    """Set non-OME attributes of a group (created if needed), atomically."""
    meta = group / "zarr.json"
    doc: dict[str, Any] = (
        json.loads(meta.read_text(encoding="utf-8"))
        if meta.exists()
        else {"zarr_format": 3, "node_type": "group"}
    )
    group.mkdir(parents=True, exist_ok=True)
    doc.setdefault("attributes", {}).update(attrs)
    write_json_atomic(meta, doc)


def series_paths(root: Path) -> list[str]:
    """The image paths of a bioformats2raw collection (``OME/zarr.json``'s ``series``)."""
    meta = root / "OME" / "zarr.json"
    if not meta.exists():
        return []
    attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes") or {}
    return [str(s) for s in (attrs.get("ome") or {}).get("series") or []]


def start_collection(root: Path) -> None:
    """Mark ``root`` a bioformats2raw collection (``bioformats2raw.layout``), once."""
    from yaozarrs import v05

    root_meta = root / "zarr.json"
    attrs = (
        json.loads(root_meta.read_text(encoding="utf-8")).get("attributes") or {}
        if root_meta.exists()
        else {}
    )
    if "bioformats2raw.layout" not in (attrs.get("ome") or {}):
        _set_ome(root, v05.Bf2Raw.model_validate({"bioformats2raw.layout": 3}))


def register_series(root: Path, series: str) -> None:
    """Make ``root`` a bioformats2raw collection listing image ``series``.

    Writes the root's ``bioformats2raw.layout`` and adds ``series`` to
    ``OME/zarr.json``; ``OME/METADATA.ome.xml`` is :class:`OmeXml`'s. Call it once the
    series' image array exists (a listed series must be an image).
    """
    from yaozarrs import v05

    start_collection(root)
    names = series_paths(root)
    if series not in names:
        _set_ome(root / "OME", v05.Series(series=[*names, series]))


def write_ome_xml(root: Path, series: Sequence[str]) -> None:
    """Write ``<root>/OME/METADATA.ome.xml`` describing the images ``series`` now.

    See :func:`ome_xml_image`; series without an array yet are left out.
    """
    images = [img for img in (ome_xml_image(root, path) for path in series) if img is not None]
    _write_xml(root, images)


def ome_xml_image(root: Path, path: str) -> Any:
    """The OME-XML ``Image`` of the collection's image ``path`` (None without an array).

    Its ID is ``Image:<path>``, as bioformats2raw writes and napari-ome-zarr reads; its
    pixels are ``MetadataOnly`` (the spec's rule for this layout) with sizes and type
    from the array and physical sizes from the OME-NGFF scale of axes with a unit.
    """
    from ome_types import model as ome

    arr_meta = root / path / "0" / "zarr.json"
    if not arr_meta.exists():
        return None
    arr = json.loads(arr_meta.read_text(encoding="utf-8"))
    shape = list(arr["shape"])
    sizes = dict(zip(list(arr.get("dimension_names") or []), shape, strict=False))
    img = image_metadata(root / path)
    scale: dict[str, float] = {}
    if img is not None:
        ms = img.multiscales[0]
        factors = getattr(ms.datasets[0].coordinateTransformations[0], "scale", [])
        scale = {a.name: float(f) for a, f in zip(ms.axes, factors, strict=False) if a.unit}
    dtype = np.dtype(arr["data_type"]).name
    px: dict[str, Any] = {
        "dimension_order": "XYZCT",
        "type": _OME_TYPES.get(dtype, dtype),
        "size_x": int(sizes.get("x", shape[-1])),
        "size_y": int(sizes.get("y", shape[-2])),
        "size_z": int(sizes.get("z", 1)),
        "size_c": int(sizes.get("c", 1)),
        "size_t": int(sizes.get("t", 1)),
        "metadata_only": ome.MetadataOnly(),
    }
    for ax in ("x", "y", "z"):
        if ax in scale:
            px[f"physical_size_{ax}"] = scale[ax]
    return ome.Image(id=f"Image:{path}", name=path, pixels=ome.Pixels(**px))


def _write_xml(root: Path, images: Sequence[Any]) -> None:
    from ome_types import model as ome

    xml = ome.OME(images=list(images), creator="liveseg").to_xml()
    target = root / "OME" / "METADATA.ome.xml"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.write_text(xml, encoding="utf-8")
    os.replace(tmp, target)


class OmeXml:
    """Keeps a growing collection's ``OME/METADATA.ome.xml`` current, off the caller's thread.

    Serialising the XML grows with the number of images (about 1 ms per image), too
    slow for the acquisition thread once a run has triggered hundreds of series. Each
    :meth:`update` computes one image's entry and wakes a writer thread, which rewrites
    the file at most every ``delay_s`` (or ten times as long as the last write took,
    whichever is longer); :meth:`close` writes what is left and stops it. A run killed
    in between has an XML that may lack its last series (``OME/zarr.json`` lists them
    all; napari-ome-zarr then opens the others).
    """

    def __init__(self, root: Path, delay_s: float = 1.0) -> None:
        self.root = Path(root)
        self.delay_s = delay_s
        self._images: dict[str, Any] = {}
        self._cv = threading.Condition()
        self._dirty = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wait = delay_s

    def update(self, path: str) -> None:
        """(Re)describe image ``path`` (its array and scale as they are on disk now)."""
        entry = ome_xml_image(self.root, path)
        if entry is None:
            return
        with self._cv:
            self._images[path] = entry
            self._dirty = True
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._loop, name="liveseg-ome-xml", daemon=True
                )
                self._thread.start()
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._dirty or self._closed)
                if self._closed:
                    return
                deadline = time.monotonic() + self._wait  # gather what comes meanwhile
                while not self._closed and (left := deadline - time.monotonic()) > 0:
                    self._cv.wait(timeout=left)
                if self._closed:
                    return
                self._dirty = False
                images = list(self._images.values())
            self._write(images)

    def _write(self, images: Sequence[Any]) -> None:
        t0 = time.perf_counter()
        try:
            _write_xml(self.root, images)
            # Never more than a tenth of the time spent writing it: the acquisition
            # thread shares the interpreter with this one.
            self._wait = max(self.delay_s, 10 * (time.perf_counter() - t0))
        except Exception as exc:  # the images and their NGFF metadata are written anyway
            log.warning("could not write %s/OME/METADATA.ome.xml: %r", self.root, exc)

    def close(self) -> None:
        """Stop the writer thread and write the XML if anything changed since its last write."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        with self._cv:
            dirty, self._dirty = self._dirty, False
            images = list(self._images.values())
        if dirty:
            self._write(images)
