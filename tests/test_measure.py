import numpy as np
import pytest

from liveseg.coords import CameraGeometry, pixel_to_stage, stage_to_pixel
from liveseg.measure import OBJECT_COLUMNS, measure_objects
from liveseg.types import Frame, FrameResult


def test_measurements_of_known_objects():
    image = np.zeros((50, 60), np.uint16)
    labels = np.zeros((50, 60), np.uint32)
    labels[10:20, 10:14] = 3  # 10x4 rectangle, elongated
    image[10:20, 10:14] = 100
    labels[30:35, 40:45] = 7  # 5x5 square
    image[30:35, 40:45] = 50
    image[32, 42] = 90
    frame = Frame(0, image, stage_xy=(1000.0, 2000.0), pixel_size_um=0.5)
    cols = measure_objects(frame, FrameResult(labels=labels, scores={3: 0.4, 7: 0.8}))
    assert set(OBJECT_COLUMNS) <= set(cols)
    assert list(cols["label"]) == [3, 7]
    assert list(cols["area_px"]) == [40, 25]
    assert cols["area_um2"] == pytest.approx([10.0, 6.25])
    assert cols["centroid_row"] == pytest.approx([14.5, 32.0])
    assert cols["centroid_col"] == pytest.approx([11.5, 42.0])
    assert cols["centroid_x_um"][1] == pytest.approx(1000 + 0.5 * (42 - 30))
    assert cols["centroid_y_um"][1] == pytest.approx(2000 + 0.5 * (32 - 25))
    assert list(cols["bbox_max_row"]) == [20, 35]
    assert cols["mean_intensity"] == pytest.approx([100, (24 * 50 + 90) / 25])
    assert list(cols["max_intensity"]) == [100, 90]
    assert cols["integrated_intensity"][0] == 4000
    assert cols["eccentricity"][0] > 0.9 and cols["eccentricity"][1] == pytest.approx(0, abs=1e-9)
    assert list(cols["score"]) == [0.4, 0.8]
    assert not cols["touches_edge"].any()


def test_no_objects_gives_empty_columns():
    frame = Frame(0, np.zeros((8, 8)))
    cols = measure_objects(frame, FrameResult(labels=np.zeros((8, 8), np.uint32)))
    assert all(len(v) == 0 for v in cols.values())


def test_pixel_stage_roundtrip_with_mirror_and_affine():
    g = CameraGeometry(
        width=100,
        height=80,
        stage_xy=(5.0, -3.0),
        affine=(0.0, -0.5, 0, 0.5, 0.0, 0),
        mirror_x=True,
    )
    x, y = pixel_to_stage([10.0, 70.0], [20.0, 90.0], g)
    r, c = stage_to_pixel(x, y, g)
    assert r == pytest.approx([10.0, 70.0]) and c == pytest.approx([20.0, 90.0])


def test_label_ids_compact_and_sparse_agree_with_unique():
    from liveseg.types import label_ids

    compact = np.zeros((20, 20), np.uint32)
    compact[1:3, 1:3], compact[5, 5], compact[9:12, 2] = 3, 1, 7
    sparse = compact.copy()
    sparse[15, 15] = 4_000_000_000  # far above 4x the pixel count: the sorting path
    for labels in (compact, sparse):
        expected = np.unique(labels)[1:]
        assert list(label_ids(labels)) == list(expected)
        assert FrameResult(labels=labels).count == expected.size
    assert label_ids(np.zeros((0, 0), np.uint32)).size == 0


@pytest.mark.parametrize("id_scale", [1, 7919])  # compact ids, and sparse ones
def test_measurements_match_regionprops_on_a_synthetic_frame(id_scale):
    """Every column agrees with scikit-image's regionprops, object by object.

    A frame full of touching nuclei, objects cut by all four edges, compact and sparse
    ids: what the foreground-only sums must get right.
    """
    from skimage.measure import label, regionprops

    from liveseg.synthetic import generate

    image, truth = generate(70_000, (200, 170), "train")
    labels = (label(truth > 0).astype(np.uint32) * id_scale).astype(np.uint32)
    cols = measure_objects(Frame(0, image), FrameResult(labels=labels))
    props = regionprops(labels.astype(np.int64), intensity_image=image.astype(np.float64))
    assert len(props) > 20 and list(cols["label"]) == [p.label for p in props]
    assert list(cols["area_px"]) == [p.area for p in props]
    assert cols["centroid_row"] == pytest.approx([p.centroid[0] for p in props])
    assert cols["centroid_col"] == pytest.approx([p.centroid[1] for p in props])
    bbox = np.stack([cols[f"bbox_{k}"] for k in ("min_row", "min_col", "max_row", "max_col")], 1)
    assert bbox.tolist() == [list(p.bbox) for p in props]
    assert cols["mean_intensity"] == pytest.approx([p.intensity_mean for p in props])
    assert cols["max_intensity"] == pytest.approx([p.intensity_max for p in props])
    assert cols["eccentricity"] == pytest.approx([p.eccentricity for p in props], abs=1e-6)
    edge = [b[0] == 0 or b[1] == 0 or b[2] == 200 or b[3] == 170 for b in bbox.tolist()]
    assert cols["touches_edge"].tolist() == edge and any(edge)
