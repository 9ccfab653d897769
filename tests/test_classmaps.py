"""Class maps through the whole frame path, on the demo hardware and offline.

A semantic chain (``normalize → kmeans``) on a simulated sample: the run stores its
class maps as OME-NGFF labels that ome-zarr and napari read with the class names and
colours, measures them into frames.csv and the summary, and a trigger on a class
fraction fires.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import liveseg
from liveseg.builtins.classes import ClassTable
from liveseg.plugins import PluginHost
from liveseg.testing import classical_config, run_liveseg

SIZE = 256
SMALL_CAMERA = [["Camera", "OnCameraCCDXSize", SIZE], ["Camera", "OnCameraCCDYSize", SIZE]]
OBJECTS = [(40.0, -30.0), (-55.0, 25.0), (20.0, 60.0)]
RADIUS = 8.0
NAMES = ["background", "nucleus"]
KMEANS = {
    "steps": [
        {"backend": "normalize"},
        {"backend": "kmeans", "params": {"class_names": NAMES}},
    ]
}


def _config(triggers=(), **extra):
    return classical_config(
        hardware={
            "mm_config": "demo",
            "exposure_ms": 5,
            "properties": SMALL_CAMERA,
            "simulate": {
                "objects": [{"x": x, "y": y, "radius": RADIUS} for x, y in OBJECTS],
                "seed": 2,
            },
        },
        sequence={"stage_positions": [{"x": 0, "y": 0, "z": 0}]},
        pipeline=KMEANS,
        triggers=list(triggers),
        **extra,
    )


def _ome_zarr_labels(image_group):
    """The label images ome-zarr finds beside an image: {name: (array, metadata)}."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    out = {}
    for node in Reader(parse_url(str(image_group)))():
        if node.load(Label):
            name = str(node.zarr.path).rstrip("/").split("/")[-1]
            out[name] = (np.asarray(node.data[0]), node.metadata)
    return out


def _napari_layers(image_group):
    """The layers napari builds from the store through the napari-ome-zarr reader."""
    import warnings

    import napari.layers
    from napari_ome_zarr import napari_get_reader

    reader = napari_get_reader(str(image_group))
    assert reader is not None, "napari-ome-zarr does not recognise the store"
    layers = {}
    for data, kwargs, kind in reader(str(image_group)):
        with warnings.catch_warnings():
            # napari's own note that a colormap without a default colour leaves unknown
            # values transparent (our class tables name every value).
            warnings.filterwarnings("ignore", "color_dict did not provide", UserWarning)
            layer = napari.layers.Layer.create(data, kwargs, kind)
        layers[str(kwargs.get("name", kind)).split("/")[-1]] = layer
    return layers


@pytest.mark.hardware
@pytest.mark.slow
def test_class_fraction_trigger_fires_and_class_maps_are_ngff_labels(tmp_path, make_session):
    cfg = _config(
        [
            {
                "trigger": "visit_objects",
                "params": {"filter": "class_fraction.nucleus > 0.005 and area_um2 > 50"},
            }
        ],
        flags=[
            {"policy": "when", "params": {"condition": "class_fraction.nucleus > 0.005"}},
            {"policy": "when", "params": {"condition": "class_fraction.nucleus > 0.5"}},
        ],
    )
    session = make_session(cfg, host=PluginHost(entry_points=False))
    summary = session.run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    base = [r for r in run.frames() if r["series"] == "base"]
    assert len(base) == 1
    row = base[0]
    classes = run.labels(row["index"], name="classes")
    assert classes is not None and classes.dtype == np.uint8
    # frames.csv carries what the stored class map says.
    fraction = float(np.mean(classes == 1))
    assert fraction > 0.005
    assert row["class_fraction.nucleus"] == pytest.approx(fraction, abs=1e-5)
    assert row["class_objects.nucleus"] == len(OBJECTS)
    assert summary["class_summary_mean"]["class_fraction.nucleus"] == pytest.approx(
        fraction, abs=1e-5
    )
    # The trigger on the class fraction fired: accepted proposals, triggered series on disk.
    accepted = [e for e in run.events("proposal") if e.get("accepted")]
    assert len(accepted) == len(OBJECTS)
    series = run.triggered()
    assert len(series) == len(OBJECTS)
    for s in series:
        (index,) = s["frames"]
        t_classes = run.labels(index, name="classes")
        assert t_classes is not None and t_classes.max() == 1
        group = tmp_path / "run" / "triggered.ome.zarr" / s["series"]
        meta = json.loads((group / "labels" / "classes" / "zarr.json").read_text())
        assert meta["attributes"]["ome"]["image-label"]["properties"][1]["class"] == "nucleus"
    # The flag policy on the class fraction flagged the frames where it holds, only.
    flags = run.events("flag")
    assert row["index"] in {f["frame"] for f in flags}
    assert {f["reason"] for f in flags} == {"class_fraction.nucleus > 0.005 holds"}
    # ome-zarr reads the base class map as a label image with names and colours.
    table = ClassTable.default(NAMES)
    labels = _ome_zarr_labels(tmp_path / "run" / "images.ome.zarr")
    assert set(labels) >= {"segmentation", "classes"}
    data, meta = labels["classes"]
    assert data.reshape(classes.shape).tolist() == classes.tolist()
    assert {k: p["class"] for k, p in meta["properties"].items()} == dict(enumerate(NAMES))
    assert np.allclose(meta["color"][1], np.array(table.colors[1]) / 255)
    assert meta["color"][0][3] == 0  # background transparent
    # napari opens it as a Labels layer with the class names and colours.
    layers = _napari_layers(tmp_path / "run" / "images.ome.zarr")
    layer = layers["classes"]
    assert type(layer).__name__ == "Labels"
    assert list(layer.features["class"]) == NAMES
    assert np.allclose(layer.colormap.map([1])[0], np.array(table.colors[1]) / 255)


@pytest.mark.hardware
@pytest.mark.slow
def test_materials_demo_prints_g_per_frame_matching_the_section(tmp_path):
    """``liveseg run configs/materials-demo.yaml``: a grain sample, G per frame ≈ truth."""
    import re
    from pathlib import Path

    from liveseg.materials import grain_size
    from liveseg.materials.sample import grain_sample

    config = Path(__file__).parents[1] / "configs" / "materials-demo.yaml"
    out = run_liveseg(
        "run",
        config,
        "-o",
        tmp_path / "run",
        "--home",
        tmp_path / "home",
        "--set",
        "sequence.time_plan.loops=1",
        "--set",
        "backlog.policy=all",
    )
    assert out.returncode == 0, out.stderr
    printed = {
        int(m[1]): float(m[2])
        for m in re.finditer(r"frame (\d+): G (\d+\.\d+) \(planimetric\)", out.stderr)
    }
    run = liveseg.open_run(tmp_path / "run")
    rows = run.frames()
    assert len(rows) == 4 and sorted(printed) == [r["index"] for r in rows]
    for row in rows:
        assert row["grain.g_planimetric"] == pytest.approx(printed[row["index"]], abs=0.005)
    assert "class maps (mean)" in out.stdout and "G " in out.stdout
    # The frame at the stage origin sees the section's centre: compare with its truth.
    _, sec = grain_sample(3, extent_um=1024)
    (first,) = [r for r in rows if r["stage_x_um"] == 0 and r["stage_y_um"] == 0]
    h, w = run.image(first["index"]).shape
    r0, c0 = (1024 - h) // 2, (1024 - w) // 2
    truth = grain_size(sec.labels[r0 : r0 + h, c0 : c0 + w], 1.0)
    assert abs(first["grain.g_planimetric"] - truth.g_planimetric) <= 0.25
    classes = run.labels(first["index"], name="classes")
    assert classes is not None and set(np.unique(classes)) <= {0, 1, 2, 3}


def _pore_images(folder, seeds=(11, 12)):
    """Generated porous sections as TIFFs (the ``pores`` chain's material)."""
    import tifffile

    from liveseg.materials import porous_section

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        sec = porous_section(seed, (256, 256), style="test")
        paths.append(folder / f"section{seed}.tif")
        tifffile.imwrite(paths[-1], sec.image)
    return paths


def test_segment_and_batch_write_class_map_tiffs_with_names(tmp_path):
    from pathlib import Path

    from click.testing import CliRunner

    from liveseg.cli import main
    from liveseg.imageio import read_classes_tif

    pores = Path(__file__).parents[1] / "configs" / "pipelines" / "pores.yaml"
    images = _pore_images(tmp_path / "in")
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    seg = runner.invoke(
        main,
        ["segment", *map(str, images), "-o", str(tmp_path / "seg"), "--config", str(pores), *home],
    )
    assert seg.exit_code == 0, seg.output
    run = liveseg.open_run(tmp_path / "seg")
    for row, path in zip(run.frames(), images, strict=True):
        classes, names = read_classes_tif(tmp_path / "seg" / f"{path.stem}_classes.tif")
        assert names == ("matrix", "pore")
        assert row["class_fraction.pore"] == pytest.approx(np.mean(classes == 1), abs=1e-5)
        assert 0.01 < row["pore.area_fraction"] < 0.6
    batch = runner.invoke(
        main,
        [
            "batch",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "batch"),
            "--config",
            str(pores),
            *home,
        ],
    )
    assert batch.exit_code == 0, batch.output
    for path in images:
        b_classes, names = read_classes_tif(tmp_path / "batch" / f"{path.stem}_classes.tif")
        s_classes, _ = read_classes_tif(tmp_path / "seg" / f"{path.stem}_classes.tif")
        assert names == ("matrix", "pore") and np.array_equal(b_classes, s_classes)
    # A second batch over the output folder does not take the class maps for images.
    from liveseg.imageio import list_images

    assert all("_classes" not in p.name for p in list_images(tmp_path / "batch"))


@pytest.mark.hardware
def test_resegment_with_a_semantic_chain_adds_class_maps(make_session, tmp_path):
    from liveseg.config import parse_config
    from liveseg.offline import resegment_run

    session = make_session(
        classical_config(
            **{
                "hardware": _config().hardware.model_dump(mode="json"),
                "sequence": {"stage_positions": [{"x": 0, "y": 0, "z": 0}]},
            }
        )
    )
    session.run(output=tmp_path / "run")
    run = liveseg.open_run(tmp_path / "run")
    (row,) = run.frames()
    assert run.labels(row["index"], name="classes") is None  # the classical chain has none
    cfg = parse_config({**_config().model_dump(mode="json"), "triggers": []})
    assert resegment_run(tmp_path / "run", config=cfg, all_frames=True, progress=False)["ok"] == 1
    classes = liveseg.open_run(tmp_path / "run").labels(row["index"], name="classes")
    assert classes is not None and classes.max() == 1
    row = liveseg.open_run(tmp_path / "run").frames()[0]
    assert row["class_fraction.nucleus"] == pytest.approx(np.mean(classes == 1), abs=1e-5)


@pytest.mark.slow
def test_class_map_scribbles_flow_queue_retrain_validate_promote_through_the_cli(tmp_path):
    """Sparse class-map scribbles: queue add --classes → retrain → per-class IoU → promote."""
    from pathlib import Path

    import tifffile

    from liveseg.builtins import pixel_classifier as pc
    from liveseg.imageio import read_classes_tif, write_classes_tif
    from liveseg.materials import porous_section
    from liveseg.materials.shipped import shipped_dir

    home = tmp_path / "home"

    def cli(*args):
        out = run_liveseg(*args, "--home", home)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    cli("models", "import", shipped_dir("pores"), "--name", "pores", "--promote")
    # The microscope now shows bright pores; the operator scribbles two frames' classes.
    shift = {"style": "test", "pore_level": (1.05, 1.15)}
    corr = tmp_path / "corrections"
    corr.mkdir()
    images, classes, valid = [], [], []
    for seed in (60, 61):
        frame = porous_section(seed, (192, 192), **shift)
        painted = pc.scribbles_from_classes(frame.classes, 0.02, seed=seed) > 0
        assert painted.mean() <= 0.03
        images.append(corr / f"f{seed}.tif")
        tifffile.imwrite(images[-1], frame.image)
        classes.append(corr / f"f{seed}_classes.tif")
        write_classes_tif(classes[-1], frame.classes, ("matrix", "pore"))
        valid.append(corr / f"f{seed}_valid.tif")
        tifffile.imwrite(valid[-1], painted.astype(np.uint8))
    out = cli("queue", "add", *images, "--classes", *classes, "--valid", *valid)
    assert out.count("corrected") == 2
    # Exported for review, a class-map correction stays a class map.
    cli("queue", "export", "--state", "corrected", "-o", tmp_path / "review")
    for seed, path in zip((60, 61), classes, strict=True):
        exported = read_classes_tif(tmp_path / "review" / f"f{seed}_classes.tif")[0]
        assert np.array_equal(exported, read_classes_tif(path)[0])
        assert not (tmp_path / "review" / f"f{seed}_labels.tif").exists()
    refs = tmp_path / "refs"
    refs.mkdir()
    for k in range(2):
        ref = porous_section(70 + k, (192, 192), **shift)
        tifffile.imwrite(refs / f"ref{k}.tif", ref.image)
        tifffile.imwrite(refs / f"ref{k}_labels.tif", ref.labels)
        write_classes_tif(refs / f"ref{k}_classes.tif", ref.classes, ("matrix", "pore"))
    before = json.loads(cli("validate", refs, "--model", "pores@prod", "--json"))
    report = json.loads(
        cli(
            "retrain",
            "--model",
            "pores@prod",
            "--from-queue",
            "--val",
            refs,
            "--metric",
            "class_iou.pore",
            "--base-items",
            "0",
            "--guard-images",
            "0",
            "--json",
        )
    )
    assert report["promoted"], report["reason"]
    parent, cand = report["parent_metrics"], report["candidate_metrics"]
    assert cand["class_iou.pore"] > parent["class_iou.pore"] + 0.1, (parent, cand)
    # ``liveseg validate`` reports the per-class IoU: the parent's, then the promoted one's.
    after = json.loads(cli("validate", refs, "--model", "pores@prod", "--json"))
    (b,) = [v for k, v in before.items() if k != "report"]
    (a,) = [v for k, v in after.items() if k != "report"]
    assert b["class_iou.pore"] == pytest.approx(parent["class_iou.pore"])
    assert a["class_iou.pore"] == pytest.approx(cand["class_iou.pore"])
    assert "class_iou.pore" in Path(after["report"]).read_text(encoding="utf-8")


def test_class_iou_per_class_and_inside_the_valid_region():
    from liveseg.metrics import class_iou, class_overlaps

    true = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0]])
    iou = class_iou(true, pred, 3)
    # class 0: 3 common of 4 true + 5 pred → 3 / 6; class 1: 4 / 5; class 2: 2 / 4.
    assert iou.tolist() == pytest.approx([3 / 6, 4 / 5, 2 / 4])
    valid = np.zeros_like(true, bool)
    valid[:2] = True  # scribbles on the top rows only: class 2 was never painted
    iou = class_iou(true, pred, 3, valid)
    assert iou[:2].tolist() == pytest.approx([3 / 4, 4 / 5]) and np.isnan(iou[2])
    inter, union = class_overlaps(true, pred, 3)
    assert inter.tolist() == [3, 4, 2] and union.tolist() == [6, 5, 4]


def test_queue_add_refuses_a_class_map_of_another_size_and_adds_nothing(tmp_path):
    import tifffile
    from click.testing import CliRunner

    from liveseg.cli import main
    from liveseg.imageio import write_classes_tif
    from liveseg.retrain.queue import RetrainQueue

    home = tmp_path / "home"
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((64, 64), np.uint16))
    write_classes_tif(tmp_path / "a_classes.tif", np.ones((64, 64), np.uint8), ("m", "p"))
    write_classes_tif(tmp_path / "b_classes.tif", np.ones((32, 64), np.uint8), ("m", "p"))
    args = ["queue", "add", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--classes"]
    args += [str(tmp_path / "a_classes.tif"), str(tmp_path / "b_classes.tif")]
    res = CliRunner().invoke(main, [*args, "--home", str(home)])
    assert res.exit_code != 0
    assert "b_classes.tif: shape (32, 64) does not match the image's (64, 64)" in res.output
    assert RetrainQueue(home).items() == []
    a, a_classes = str(tmp_path / "a.tif"), str(tmp_path / "a_classes.tif")
    both = CliRunner().invoke(
        main,
        ["queue", "add", a, "--labels", a_classes, "--classes", a_classes, "--home", str(home)],
    )
    assert both.exit_code == 2 and "not both" in both.output
