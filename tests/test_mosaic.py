"""``liveseg mosaic``: one large image segmented block-wise, stitched into one label image.

The reference is the same chain run once on the whole image in this process; the mosaic
must agree with it (AP@0.5 >= 0.99), cut no object at a tile border, give every object
one id, and write one OME-Zarr label image that ``ome_zarr`` and liveseg both read.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

import liveseg
from liveseg.config import StepConfig
from liveseg.errors import LivesegError
from liveseg.imageio import read_image, read_pixel_size
from liveseg.metrics import average_precision
from liveseg.mosaic import LABELS_NAME, ChainSpec, TileChain, read_provenance, segment_mosaic
from liveseg.synthetic.mosaic import render_mosaic_chunk, write_nuclei_mosaic
from liveseg.testing import run_liveseg

PX = 0.65
# The classical chain with a local threshold: a tile's objects then depend on their
# neighbourhood only. (The default classical chain's Otsu level is one number per image,
# so a 384-px tile and the whole slide draw slightly different masks: AP 0.985-0.994.)
CLASSICAL = [
    StepConfig(backend="normalize"),
    StepConfig(backend="threshold", params={"method": "local"}),
    StepConfig(backend="size_filter", params={"min_area": 15}),
]


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024 x 1536 nuclei mosaic (about 800 nuclei, many across 384-px tile borders)."""
    path = tmp_path_factory.mktemp("slide") / "slide.ome.zarr"
    return write_nuclei_mosaic(path, (1024, 1536), seed=3, chunk=512, pixel_size_um=PX)


def _image(store: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")["s0"][...])


def _labels(out: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(out), mode="r")[f"labels/{LABELS_NAME}/s0"][...])


def _single_process(image: np.ndarray, steps: list[StepConfig], home: Path) -> np.ndarray:
    chain = TileChain(ChainSpec.of(steps, home))
    try:
        return chain.segment(image, 0, PX)
    finally:
        chain.close()


def _split_objects(labels: np.ndarray) -> set[tuple[int, int, int, int]]:
    """Bounding boxes of the ids whose pixels form more than one connected region."""
    split = set()
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is not None and ndi.label(labels[sl] == i)[1] > 1:
            split.add((sl[0].start, sl[0].stop, sl[1].start, sl[1].stop))
    return split


def _check_stitched(labels: np.ndarray, ref: np.ndarray, block: int) -> None:
    """Agreement, no object cut at a tile border, one connected region per id."""
    assert labels.dtype == np.uint32
    assert average_precision(ref, labels).ap[0.5] >= 0.99
    ids = np.unique(labels)
    ids = ids[ids > 0]
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))  # ids 1..N
    # No id names separate regions (two tiles' objects sharing an id), except where the
    # chain itself gives one object two pieces (the unet's decoder can).
    assert _split_objects(labels) <= _split_objects(ref)
    h, w = labels.shape
    crossing = 0
    for axis, size in ((0, h), (1, w)):
        for line in range(block, size - block // 2, block):
            before = labels.take(line - 1, axis=axis)
            after = labels.take(line, axis=axis)
            ref_before = ref.take(line - 1, axis=axis)
            ref_after = ref.take(line, axis=axis)
            # Every reference object on both sides of the line is one mosaic object there.
            for r in np.intersect1d(ref_before[ref_before > 0], ref_after[ref_after > 0]):
                crossing += 1
                got_before = np.bincount(before[ref_before == r]).argmax()
                got_after = np.bincount(after[ref_after == r]).argmax()
                assert got_before == got_after != 0, f"object cut at {'yx'[axis]}={line}"
    assert crossing > 20  # the slide really has objects across the tile borders


def test_mosaic_in_process_matches_single_process(slide, tmp_path):
    out = tmp_path / "seg.ome.zarr"
    summary = segment_mosaic(slide, out, steps=CLASSICAL, home=tmp_path / "home", block=384)
    labels = _labels(out)
    assert summary["tiles"] == 12 and summary["objects"] == int(labels.max())
    assert summary["joined_across_tiles"] > 20
    _check_stitched(labels, _single_process(_image(slide), CLASSICAL, tmp_path / "home"), 384)
    info = read_provenance(out)
    # overlap auto: twice the large-object diameter (nuclei of radius ~8 px here)
    assert info["status"] == "finished" and 32 <= info["overlap"] <= 96
    assert not (out / ".mosaic-work").exists()


@pytest.mark.slow
def test_mosaic_on_a_local_cluster(slide, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        out = tmp_path / "seg.ome.zarr"
        summary = segment_mosaic(
            slide,
            out,
            steps=CLASSICAL,
            home=tmp_path / "home",
            block=384,
            overlap=96,
            scheduler=cluster.scheduler_address,
        )
    labels = _labels(out)
    assert summary["objects"] == int(labels.max())
    _check_stitched(labels, _single_process(_image(slide), CLASSICAL, tmp_path / "home"), 384)
    # The same chain in this process gives the same stitched labels.
    local = tmp_path / "local.ome.zarr"
    segment_mosaic(slide, local, steps=CLASSICAL, home=tmp_path / "home", block=384, overlap=96)
    np.testing.assert_array_equal(_labels(local), labels)


def test_mosaic_output_is_one_ome_zarr_label_image(slide, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    out = tmp_path / "seg.ome.zarr"
    segment_mosaic(slide, out, steps=CLASSICAL, home=tmp_path / "home", block=512, overlap=64)
    nodes = list(Reader(parse_url(str(out / "labels" / LABELS_NAME)))())
    node = nodes[0]
    assert node.load(Label) is not None and node.load(Multiscales) is not None
    level0 = np.asarray(node.data[0])
    np.testing.assert_array_equal(level0, _labels(out))
    assert level0.shape == (1024, 1536) and len(node.data) > 1  # a pyramid
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == [PX, PX]
    # liveseg reads it back like any OME-Zarr: the plane and the pixel size.
    np.testing.assert_array_equal(read_image(out / "labels" / LABELS_NAME), level0)
    size = read_pixel_size(out / "labels" / LABELS_NAME)
    assert size is not None and size.um == pytest.approx(PX)
    np.testing.assert_array_equal(read_image(out), _image(slide))  # and the image beside it


def test_generated_mosaic_has_no_seams():
    # Chunks drawn alone match the same region drawn as one piece (nuclei across borders).
    _, whole = render_mosaic_chunk(5, 0, 0, (256, 512), cell=256)
    _, left = render_mosaic_chunk(5, 0, 0, (256, 256), cell=256)
    _, right = render_mosaic_chunk(5, 0, 256, (256, 256), cell=256)
    np.testing.assert_array_equal(np.hstack([left, right]), whole)
    shared = np.intersect1d(whole[:, 255], whole[:, 256])
    assert shared[shared > 0].size > 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_liveseg("mosaic", *args, timeout=120)


@pytest.mark.slow
def test_cli_mosaic_and_its_errors(slide, tmp_path):
    out = tmp_path / "cli.ome.zarr"
    cfg = tmp_path / "chain.yaml"
    cfg.write_text(
        "pipeline:\n  steps:\n    - backend: normalize\n    - backend: threshold\n"
        "    - backend: size_filter\n      params: {min_area: 15}\n"
    )
    home = ["--home", str(tmp_path / "home"), "--config", str(cfg)]
    done = _cli(str(slide), "-o", str(out), "--block", "512", "--json", *home)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["objects"] == int(_labels(out).max()) > 500
    again = _cli(str(slide), "-o", str(out), *home)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr
    stack = tmp_path / "stack.ome.zarr"
    zarr.create_array(str(stack), shape=(3, 64, 64), dtype=np.uint16)
    bad = _cli(str(stack), "-o", str(tmp_path / "x.ome.zarr"), *home)
    assert bad.returncode == 2 and "one 2-D plane" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_mosaic_with_the_shipped_unet(slide, tmp_path):
    pytest.importorskip("liveseg_torch")
    steps = [
        StepConfig(backend="unet", params={"model": "default"}),
        StepConfig(backend="size_filter", params={"min_area": 15}),
    ]
    out = tmp_path / "seg.ome.zarr"
    segment_mosaic(slide, out, steps=steps, home=tmp_path / "home", block=384)
    _check_stitched(_labels(out), _single_process(_image(slide), steps, tmp_path / "home"), 384)


@pytest.mark.slow
@pytest.mark.hardware
def test_grid_acquisition_stitched_by_stage_position(make_session, tmp_path):
    """A real 2 x 2 grid_plan run on the demo hardware: one mosaic, then one label image."""
    from liveseg.config import SimulationConfig
    from liveseg.coords import CameraGeometry, stage_to_pixel
    from liveseg.grid import grid_layout, grid_mosaic
    from liveseg.simulation import sample_objects
    from liveseg.testing import classical_config

    sim = {"n_objects": 120, "extent_um": 900, "seed": 4, "radius_um": [5.0, 7.0]}
    cfg = classical_config(
        hardware={"mm_config": "demo", "exposure_ms": 5, "simulate": sim},
        sequence={
            "grid_plan": {
                "rows": 2,
                "columns": 2,
                "overlap": 10,
                "fov_width": 512,
                "fov_height": 512,
            }
        },
    )
    run = tmp_path / "grid"
    make_session(cfg).run(output=run)
    tiles, shape, px = grid_layout(run)
    assert len(tiles) == 4 and px == 1.0
    assert shape == (973, 973)  # two 512-px fields overlapping by 10 %: 1024 - 51
    mosaic = np.asarray(grid_mosaic(run)[0])
    # Every frame sits in the mosaic where its stage position says (later frames on top).
    last = tiles[-1]
    np.testing.assert_array_equal(
        mosaic[last.row : last.row + 512, last.col : last.col + 512], last.read()
    )
    out = tmp_path / "grid-seg.ome.zarr"
    summary = segment_mosaic(run, out, steps=CLASSICAL, home=tmp_path / "home", block=512)
    labels = _labels(out)
    assert labels.shape == shape
    # Each simulated nucleus well inside the mosaic is one object at its stage position,
    # also the ones in the overlaps (seen by two frames) and across the 512-px tile border.
    rows = liveseg.open_run(run).frames()
    first = next(r for r in rows if r["index"] == tiles[0].index)
    geom = CameraGeometry(512, 512, (first["stage_x_um"], first["stage_y_um"]), px)
    found = []
    for x, y, r, _ in sample_objects(SimulationConfig.model_validate(sim)):
        row, col = (float(v) for v in stage_to_pixel(x, y, geom))
        row, col = row + tiles[0].row, col + tiles[0].col
        if r + 3 < row < shape[0] - r - 3 and r + 3 < col < shape[1] - r - 3:
            found.append(int(labels[round(row), round(col)]))
    assert len(found) > 60 and 0 not in found
    assert len(set(found)) == len(found)  # no nucleus counted twice, none merged
    assert summary["objects"] <= len(found) + 10  # only the ones cut by the outer edge on top


_FAILING_PLUGIN = """
from liveseg import hookimpl

class Broken:
    def __init__(self, params, context):
        pass
    def segment(self, frame, upstream):
        raise RuntimeError("out of GPU memory")
    def close(self):
        pass

@hookimpl
def register_backends(register):
    register("broken", Broken)
"""


def test_a_failing_tile_fails_the_mosaic_and_leaves_no_store(slide, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "brokenplug.py").write_text(_FAILING_PLUGIN)
    out = tmp_path / "seg.ome.zarr"
    with pytest.raises(LivesegError, match=r"tile \d+: segmentation failed: .*out of GPU memory"):
        segment_mosaic(
            slide,
            out,
            steps=[StepConfig(backend="broken")],
            home=tmp_path / "home",
            block=512,
            overlap=32,
            plugins_dir=str(plugins),
        )
    assert not out.exists()  # a hole in a label image would read as empty tissue


@pytest.mark.hardware
def test_grid_run_frames_and_labels_are_in_their_tiles_image(make_session, tmp_path):
    """Each grid tile is its own image group: open_run reads each frame from it, the live
    labels sit beside it, and resegment finds them there."""
    import zarr

    from liveseg.store import IMAGES, image_group
    from liveseg.testing import classical_config

    sim = {"n_objects": 80, "extent_um": 900, "seed": 5, "radius_um": [5.0, 7.0]}
    cfg = classical_config(
        hardware={"mm_config": "demo", "exposure_ms": 5, "simulate": sim},
        sequence={
            "stage_positions": [{"x": 0, "y": 0, "z": 0}, {"x": 2000, "y": 0, "z": 0}],
            "grid_plan": {"rows": 1, "columns": 2, "fov_width": 512, "fov_height": 512},
        },
    )
    run_dir = tmp_path / "grid"
    make_session(cfg).run(output=run_dir)
    run = liveseg.open_run(run_dir)
    rows = run.frames()
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert sorted(r["position"] for r in rows) == [0, 1, 2, 3]  # one image per (p, g)
    seen = set()
    for r in rows:
        group = image_group(run_dir / IMAGES, int(r["position"]))
        seen.add(group.name)
        arr = zarr.open_array(str(group / "0"), mode="r")
        plane = np.asarray(arr[(0,) * (arr.ndim - 2)])
        np.testing.assert_array_equal(run.image(r["index"]), plane)
        labels = run.labels(r["index"])
        assert labels is not None and labels.max() > 0
    assert len(seen) == 4
