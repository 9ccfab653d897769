"""The run directory's OME-Zarr, read by the community's own tools.

A demo-hardware run (two positions, a class-map chain, a trigger that writes triggered
z-stacks) is checked the way a microscopist would: ``ome-zarr-models`` and ``yaozarrs``
validate every group, ``ome-zarr-py``'s reader (what ``ome_zarr info`` prints) finds
every image and label image, and napari-ome-zarr opens the roots and each position
with image and labels layers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import liveseg
from liveseg.plugins import PluginHost
from liveseg.testing import classical_config

SIZE = 256
SMALL_CAMERA = [["Camera", "OnCameraCCDXSize", SIZE], ["Camera", "OnCameraCCDYSize", SIZE]]
OBJECTS = [(40.0, -30.0), (-55.0, 25.0), (20.0, 60.0)]
PIXEL_UM = 0.5
Z_STEP_UM = 2.0
INTERVAL_S = 0.2
NAMES = ["background", "nucleus"]
KMEANS = {
    "steps": [
        {"backend": "normalize"},
        {"backend": "kmeans", "params": {"class_names": NAMES}},
    ]
}


def _config(sequence, triggers=()):
    return classical_config(
        hardware={
            "mm_config": "demo",
            "exposure_ms": 5,
            "pixel_size_um": PIXEL_UM,
            "properties": SMALL_CAMERA,
            "simulate": {
                "objects": [{"x": x, "y": y, "radius": 8.0} for x, y in OBJECTS],
                "seed": 2,
            },
        },
        sequence=sequence,
        pipeline=KMEANS,
        triggers=list(triggers),
        # On a loaded machine the k-means chain may lag the camera: the triggers wait
        # for every base frame to be evaluated rather than give up after 10 s.
        selection={"drain_timeout_s": 120},
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A finished two-position run with triggered z-stacks (built once for the module)."""
    from liveseg.session import Session

    tmp = tmp_path_factory.mktemp("ngff")
    home = tmp / "home"
    home.mkdir()
    cfg = _config(
        {
            "stage_positions": [{"x": 0, "y": 0, "z": 0}, {"x": 900, "y": 900, "z": 0}],
            "time_plan": {"interval": INTERVAL_S, "loops": 2},
        },
        [
            {
                "trigger": "visit_objects",
                "params": {
                    "filter": "area_um2 > 50",
                    "z_range_um": 2 * Z_STEP_UM,
                    "z_step_um": Z_STEP_UM,
                },
            }
        ],
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("LIVESEG_HOME", str(home))
    session = Session(cfg, host=PluginHost(entry_points=False), home=home)
    try:
        session.run(output=tmp / "run")
    finally:
        session.close()
        mp.undo()
    return tmp / "run"


def _groups(root):
    """Every Zarr group under ``root`` (itself included), as paths."""
    out = []
    for meta in sorted(root.rglob("zarr.json")):
        if json.loads(meta.read_text())["node_type"] == "group":
            out.append(meta.parent)
    return out


def _ome(group):
    return json.loads((group / "zarr.json").read_text()).get("attributes", {}).get("ome", {})


def _validate(group):
    """The ome-zarr-models class that validates ``group`` (raises if none does)."""
    import zarr
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.bioformats2raw import BioFormats2Raw

    zgroup = zarr.open_group(str(group), mode="r")
    if "bioformats2raw.layout" in _ome(group):
        # open_ome_zarr tries the 0.4 model only for this layout; 0.5 has its own.
        return BioFormats2Raw.from_zarr(zgroup)
    return open_ome_zarr(zgroup)


def _napari_layers(path):
    """(kind, name, shape, scale) of every layer napari-ome-zarr opens from ``path``.

    napari's headless ViewerModel is the viewer (napari.Viewer(show=False) needs
    OpenGL to add layers, which Qt's offscreen platform lacks), with napari's plugins
    initialised as napari.Viewer does.
    """
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    viewer = ViewerModel()
    viewer.open(str(path), plugin="napari-ome-zarr")
    return [
        (
            type(layer).__name__.lower(),
            layer.name,
            tuple(layer.level_shapes[0]),
            tuple(layer.scale),
        )
        for layer in viewer.layers
    ]


@pytest.mark.hardware
@pytest.mark.slow
def test_every_group_of_a_demo_run_validates(demo_run):
    import yaozarrs

    run = liveseg.open_run(demo_run)
    assert run.triggered(), "the trigger wrote no triggered series"
    kinds = {}
    for store in ("images.ome.zarr", "triggered.ome.zarr"):
        yaozarrs.validate_zarr_store(str(demo_run / store))  # the whole hierarchy
        for group in _groups(demo_run / store):
            rel = group.relative_to(demo_run).as_posix()
            if group.name == "OME":  # bioformats2raw's OME group: validated above
                assert _ome(group)["series"], rel
                continue
            kinds[rel] = type(_validate(group)).__name__
    assert kinds["images.ome.zarr"] == "BioFormats2Raw"
    assert kinds["triggered.ome.zarr"] == "BioFormats2Raw"
    for p in ("0", "1"):
        assert kinds[f"images.ome.zarr/{p}"] == "Image"
        assert kinds[f"images.ome.zarr/{p}/labels"] == "Labels"
        assert kinds[f"images.ome.zarr/{p}/labels/segmentation"] == "ImageLabel"
        assert kinds[f"images.ome.zarr/{p}/labels/classes"] == "ImageLabel"
    for s in run.triggered():
        name = s["series"]
        assert kinds[f"triggered.ome.zarr/{name}"] == "Image"
        assert kinds[f"triggered.ome.zarr/{name}/labels/segmentation"] == "ImageLabel"
        assert kinds[f"triggered.ome.zarr/{name}/labels/classes"] == "ImageLabel"
    assert set(kinds.values()) <= {"BioFormats2Raw", "Image", "Labels", "ImageLabel"}


@pytest.mark.hardware
@pytest.mark.slow
def test_scales_units_and_class_names_are_the_runs_own(demo_run):
    run = liveseg.open_run(demo_run)

    def axes_and_scale(group):
        ms = _ome(group)["multiscales"][0]
        scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
        return {a["name"]: (s, a.get("unit")) for a, s in zip(ms["axes"], scale, strict=True)}

    base = axes_and_scale(demo_run / "images.ome.zarr" / "0")
    assert base["t"] == (pytest.approx(INTERVAL_S), "second")
    assert base["y"] == base["x"] == (PIXEL_UM, "micrometer")
    for s in run.triggered():
        group = demo_run / "triggered.ome.zarr" / s["series"]
        stack = axes_and_scale(group)
        assert stack["z"] == (pytest.approx(Z_STEP_UM, abs=0.01), "micrometer")
        assert stack["y"] == stack["x"] == (PIXEL_UM, "micrometer")
        assert stack["c"][1] is None  # a channel axis has no unit
        # Labels overlay their image: the same axes and scale.
        assert axes_and_scale(group / "labels" / "segmentation") == stack
        classes = _ome(group / "labels" / "classes")["image-label"]
        assert [p["class"] for p in classes["properties"]] == NAMES
        assert [c["label-value"] for c in classes["colors"]] == [0, 1]
    base_classes = _ome(demo_run / "images.ome.zarr" / "1" / "labels" / "classes")
    assert [p["class"] for p in base_classes["image-label"]["properties"]] == NAMES
    assert axes_and_scale(demo_run / "images.ome.zarr" / "1" / "labels" / "classes") == base


@pytest.mark.hardware
@pytest.mark.slow
def test_ome_zarr_py_describes_every_image_and_label_image(demo_run):
    """What ``ome_zarr info`` prints: a node with data for every image and label image.

    ome-zarr-py has no reader for the bioformats2raw layout (ome/ome-zarr-py#421), so
    it is pointed at each image group of the two collections.
    """
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    run = liveseg.open_run(demo_run)
    images = [demo_run / "images.ome.zarr" / p for p in ("0", "1")]
    images += [demo_run / "triggered.ome.zarr" / s["series"] for s in run.triggered()]
    for image in images:
        nodes = list(Reader(parse_url(str(image)))())
        found = {}
        for node in nodes:
            name = str(node.zarr.path).rstrip("/").split("/")[-1]
            if node.load(Label):
                found[name] = node.data[0].shape
            elif node.load(Multiscales):
                found["image"] = node.data[0].shape
        assert found["image"][-2:] == (SIZE, SIZE), image
        assert found["segmentation"] == found["classes"] == found["image"], image


# napari's note that a colormap without a default colour leaves unknown values
# transparent (the class tables name every value).
NAPARI_COLOR_NOTE = "ignore:color_dict did not provide:UserWarning"


@pytest.mark.hardware
@pytest.mark.slow
@pytest.mark.filterwarnings(NAPARI_COLOR_NOTE)
def test_napari_opens_the_roots_and_each_position_with_labels(demo_run):
    run = liveseg.open_run(demo_run)
    root = _napari_layers(demo_run / "images.ome.zarr")
    assert [k for k, *_ in root].count("image") == 2  # both positions
    assert [k for k, *_ in root].count("labels") == 4  # segmentation + classes each
    assert all(0 not in scale for *_, scale in root)
    for p in ("0", "1"):
        layers = _napari_layers(demo_run / "images.ome.zarr" / p)
        assert sorted(k for k, *_ in layers) == ["image", "labels", "labels"]
    stacks = _napari_layers(demo_run / "triggered.ome.zarr")
    n = len(run.triggered())
    assert [k for k, *_ in stacks].count("image") == n
    assert [k for k, *_ in stacks].count("labels") == 2 * n
    # Every layer of a z-stack is scaled in µm: z step, pixel size.
    for _, name, shape, scale in stacks:
        assert shape[-3:] == (3, SIZE, SIZE), name
        assert scale[-3:] == pytest.approx((Z_STEP_UM, PIXEL_UM, PIXEL_UM), abs=0.01), name


@pytest.mark.hardware
@pytest.mark.slow
@pytest.mark.filterwarnings(NAPARI_COLOR_NOTE)
def test_an_interval_zero_run_opens_in_napari(make_session, tmp_path):
    """``interval: 0`` made ome-writers write a time scale of 0, which napari refuses."""
    cfg = _config({"time_plan": {"interval": 0, "loops": 2}})
    make_session(cfg, host=PluginHost(entry_points=False)).run(output=tmp_path / "run")
    image = tmp_path / "run" / "images.ome.zarr"
    assert type(_validate(image)).__name__ == "Image"  # one position: the root is the image
    t_axis = _ome(image)["multiscales"][0]["axes"][0]
    assert t_axis == {"name": "t", "type": "time"}  # no unit: no time step is known
    layers = _napari_layers(image)
    assert sorted(k for k, *_ in layers) == ["image", "labels", "labels"]
    assert all(0 not in scale for *_, scale in layers)
    run = liveseg.open_run(tmp_path / "run")
    assert [r["status"] for r in run.frames()] == ["ok", "ok"]
    assert run.labels(1) is not None


def test_write_label_image_beside_an_image_takes_its_axes_and_scale(tmp_path):
    """The public helper a mosaic (or any writer) uses for one whole label image."""
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel
    from yaozarrs import v05
    from yaozarrs.write.v05 import write_image

    from liveseg.builtins.classes import ClassTable
    from liveseg.store import ngff, write_label_image

    ms = ngff.multiscale(["z", "y", "x"], pixel_size_um=0.25, z_step_um=1.5)
    write_image(tmp_path / "img.ome.zarr", v05.Image(multiscales=[ms]), np.ones((2, 8, 9), "u2"))
    classes = np.zeros((2, 8, 9), np.uint8)
    classes[1, 2:5, 3:6] = 1
    table = ClassTable.default(NAMES)
    path = write_label_image(
        tmp_path / "img.ome.zarr", "classes", classes, image_label=table.ngff_image_label()
    )
    import zarr

    model = ImageLabel.from_zarr(zarr.open_group(str(path), mode="r"))
    props = model.attributes.ome.image_label.properties
    assert [p.model_dump(by_alias=True)["class"] for p in props] == NAMES
    image = Image.from_zarr(zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="r"))
    assert image.labels is not None
    scale = _ome(path)["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale["scale"] == [1.5, 0.25, 0.25]
    assert np.array_equal(zarr.open_array(str(path / "0"), mode="r")[:], classes)
    # Written again (a second mosaic pass): replaced, still listed once.
    write_label_image(tmp_path / "img.ome.zarr", "classes", classes * 0)
    assert _ome(tmp_path / "img.ome.zarr" / "labels")["labels"] == ["classes"]
    assert not zarr.open_array(str(path / "0"), mode="r")[:].any()


def test_axes_without_an_image_are_typed_by_name_not_called_time(tmp_path):
    from liveseg.store import ngff, write_label_image

    ms = ngff.multiscale(["t", "c", "z", "y", "x"], pixel_size_um=0.5)
    axes = {a.name: (a.type, getattr(a, "unit", None)) for a in ms.axes}
    assert axes == {  # no step known for t and z: no unit claimed for them
        "t": ("time", None),
        "c": ("channel", None),
        "z": ("space", None),
        "y": ("space", "micrometer"),
        "x": ("space", "micrometer"),
    }
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    path = write_label_image(
        tmp_path / "g", "mosaic", np.zeros((3, 4), np.uint32), pixel_size_um=2.0
    )
    axes_json = _ome(path)["multiscales"][0]["axes"]
    assert axes_json == [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
