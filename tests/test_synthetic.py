"""Tests of the seeded synthetic nuclei generator."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from liveseg.synthetic import STYLES, SyntheticStyle, generate, get_style, iter_dataset


def test_same_seed_same_frame_other_seed_differs():
    a_img, a_lab = generate(3, (96, 128))
    b_img, b_lab = generate(3, (96, 128))
    c_img, _ = generate(4, (96, 128))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert a_img.shape == (96, 128)
    assert a_lab.shape == (96, 128)
    assert not np.array_equal(a_img.astype(float), c_img.astype(float)[: a_img.shape[0]])


def test_labels_are_consecutive_uint32_and_meet_min_area():
    for seed in range(5):
        _, lab = generate(seed, (128, 128))
        assert lab.dtype == np.uint32
        ids = np.unique(lab)
        assert ids[0] == 0
        np.testing.assert_array_equal(ids, np.arange(ids.size))
        areas = np.bincount(lab.ravel())[1:]
        assert (areas >= STYLES["train"].min_area).all()


def test_each_object_is_one_connected_piece():
    from scipy import ndimage as ndi

    _, lab = generate(11, (128, 128), "test_hard")
    for idx, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        _, n = ndi.label(lab[sl] == idx)
        assert n == 1


def test_objects_are_brighter_than_background():
    img, lab = generate(5, (128, 128), "sparse")
    img = img.astype(float)
    assert lab.max() > 0
    assert np.median(img[lab > 0]) > np.median(img[lab == 0])


def test_inverted_style_has_dark_objects():
    img, lab = generate(5, (128, 128), "inverted", density=(8, 8))
    img = img.astype(float)
    assert np.median(img[lab > 0]) < np.median(img[lab == 0])


def test_dtypes_cover_bit_depths():
    dtypes = {generate(s, (32, 32))[0].dtype for s in range(40)}
    assert {np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)} <= dtypes
    img8, _ = generate(0, (32, 32), bit_depths=(8,))
    img12, _ = generate(0, (32, 32), bit_depths=(12,))
    assert img8.dtype == np.uint8
    assert img12.dtype == np.uint16 and img12.max() <= 4095


def test_hard_style_is_denser_than_train():
    train = np.mean([generate(s, (128, 128))[1].max() for s in range(8)])
    hard = np.mean([generate(s, (128, 128), "test_hard")[1].max() for s in range(8)])
    assert hard > 1.5 * train


def test_empty_when_density_zero():
    img, lab = generate(1, (64, 64), density=(0.0, 0.0))
    assert lab.max() == 0
    assert img.shape == (64, 64)


def test_style_lookup_and_override():
    assert get_style("train") is STYLES["train"]
    custom = STYLES["train"].replace(radius=(4.0, 4.0))
    assert isinstance(custom, SyntheticStyle)
    assert get_style(custom) is custom
    with pytest.raises(ValueError, match="unknown synthetic style"):
        get_style("nope")


def test_iter_dataset_disjoint_seeds():
    a = [img for img, _ in iter_dataset(2, seed=0, shape=(32, 32))]
    b = [img for img, _ in iter_dataset(2, seed=1, shape=(32, 32))]
    assert len(a) == 2
    assert not any(np.array_equal(x, y) for x in a for y in b if x.dtype == y.dtype)


def test_does_not_import_torch():
    code = "import liveseg.synthetic, liveseg.metrics, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the other sample types ------------------------------------------------------------

KINDS = ["cells", "bacteria", "transmitted"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_sample_types_are_seeded_and_well_formed(kind, split):
    from scipy import ndimage as ndi

    from liveseg.synthetic import generate_sample

    a_img, a_lab = generate_sample(kind, 7, (96, 128), split)
    b_img, b_lab = generate_sample(kind, 7, (96, 128), split)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert a_img.shape == a_lab.shape == (96, 128)
    assert a_img.dtype in (np.uint8, np.uint16, np.float32)
    assert a_lab.dtype == np.uint32
    ids = np.unique(a_lab)
    np.testing.assert_array_equal(ids, np.arange(ids.size))
    for idx, sl in enumerate(ndi.find_objects(a_lab), start=1):
        assert sl is not None
        assert ndi.label(a_lab[sl] == idx)[1] == 1
    others = [generate_sample(kind, s, (96, 128), split)[1] for s in (8, 9)]
    assert not all(np.array_equal(a_lab, o) for o in others)


@pytest.mark.parametrize("kind", KINDS)
def test_each_sample_type_has_objects_in_most_frames(kind):
    from liveseg.synthetic import generate_sample

    counts = [int(generate_sample(kind, s, (128, 128), "test")[1].max()) for s in range(6)]
    assert sum(c > 0 for c in counts) >= 5


def test_fluorescent_cells_are_brighter_than_background_and_nuclei_brightest():
    from liveseg.synthetic import CELL_STYLES, generate_cells

    style = CELL_STYLES["train"].replace(bit_depths=(32,), photons=(3000.0, 3000.0))
    img, lab = generate_cells(3, (128, 128), style)
    inside = img[lab > 0]
    assert np.median(inside) > np.median(img[lab == 0])
    # The nucleus is a small bright part of each cell: the top decile of a cell is far
    # brighter than its median (dim cytoplasm around a bright nucleus).
    assert np.percentile(inside, 95) > 1.8 * np.median(inside)


def test_cells_in_the_test_style_touch_their_neighbours():
    from liveseg.synthetic import generate_cells
    from liveseg.synthetic._common import boundaries

    _, lab = generate_cells(2, (192, 192), "test")
    seam = boundaries(lab) & (lab > 0)
    shifted = [np.roll(lab, s, axis=a) for s in (1, -1) for a in (0, 1)]
    touching = {
        int(v)
        for v in np.unique(lab[seam & np.any([(x > 0) & (x != lab) for x in shifted], axis=0)])
    }
    assert len(touching) >= 0.6 * lab.max()


def test_confluent_cell_frames_are_seeded_and_crowded():
    from liveseg.synthetic import CELL_STYLES, generate_cells

    wide = CELL_STYLES["train"].replace(density=(1.0, 9.0), packing=(0.45, 1.1))
    confluent = wide.replace(confluent=1.0)
    a_img, a_lab = generate_cells(5, (128, 128), confluent)
    b_img, b_lab = generate_cells(5, (128, 128), confluent)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    # Confluent frames draw from the crowded halves (density 5-9, packing 0.45-0.775);
    # the complementary halves, never confluent, give far fewer cells per frame.
    sparse = wide.replace(density=(1.0, 5.0), packing=(0.775, 1.1), confluent=0.0)
    crowded = [int(generate_cells(s, (128, 128), confluent)[1].max()) for s in range(8)]
    loose = [int(generate_cells(s, (128, 128), sparse)[1].max()) for s in range(8)]
    assert np.mean(crowded) > 1.8 * np.mean(loose)


@pytest.mark.parametrize("kind", ["cells", "transmitted"])
def test_val_style_is_its_own_set(kind):
    from liveseg.synthetic import generate_sample

    val = generate_sample(kind, 1_000_003, (96, 96), "val")
    assert val[1].max() > 0
    for split in ("train", "test"):
        other = generate_sample(kind, 1_000_003, (96, 96), split)
        assert not np.array_equal(val[1], other[1])


def test_phase_contrast_bacteria_are_dark_with_bright_halo():
    from scipy import ndimage as ndi

    from liveseg.synthetic import BACTERIA_STYLES, generate_bacteria

    style = BACTERIA_STYLES["train"].replace(
        phase_fraction=1.0, colony_fraction=0.0, bit_depths=(32,), photons=(2000.0, 2000.0)
    )
    img, lab = generate_bacteria(4, (192, 192), style)
    cells = lab > 0
    ring = ndi.binary_dilation(cells, iterations=3) & ~ndi.binary_dilation(cells)
    far = ~ndi.binary_dilation(cells, iterations=15)
    assert np.median(img[cells]) < np.median(img[far]) < np.median(img[ring])


def test_held_out_brightfield_bacteria_stay_visible():
    """The held-out style is hard, but its rods' outlines stand out of the background.

    The former held-out style (``test_photon_starved``: 20-200 photons, a quarter of the
    phase contrast) drew brightfield rods that vanish in the noise even for a person.
    """
    from scipy import ndimage as ndi

    from liveseg.synthetic import BACTERIA_STYLES, generate_bacteria

    def edge_over_background(style_name: str) -> float:
        style = BACTERIA_STYLES[style_name].replace(phase_fraction=0.0)
        ratios = []
        for seed in range(8):
            img, lab = generate_bacteria(seed, (192, 192), style)
            grad = ndi.gaussian_gradient_magnitude(img.astype(np.float64), 1.0)
            cells = lab > 0
            edges = ndi.binary_dilation(cells) & ~ndi.binary_erosion(cells)
            far = ~ndi.binary_dilation(cells, iterations=10)
            ratios.append(np.median(grad[edges]) / np.median(grad[far]))
        return float(np.median(ratios))

    assert edge_over_background("test") > 2.0
    assert edge_over_background("test_photon_starved") < 1.6


def test_colony_rods_form_a_monolayer():
    """A rod never lies over another, so every label is a whole convex capsule.

    Before, a rod turned across its row was drawn over its neighbours, and the labels
    kept the notched remains: 8.5 % of the held-out rods had a solidity below 0.85.
    """
    from skimage.measure import regionprops

    from liveseg.synthetic import generate_bacteria

    solidity = []
    for seed in range(6):
        _, lab = generate_bacteria(seed, (192, 192), "test")
        solidity += [p.solidity for p in regionprops(lab) if p.area >= 30]
    assert len(solidity) > 100
    assert np.mean(np.asarray(solidity) < 0.85) < 0.03


def test_touching_phase_rods_meet_at_a_lighter_line():
    """A rod is a cylinder: its optical path falls to zero at its edge, so the contact
    line of two touching cells is lighter than their centre lines, with no seam term."""
    from scipy import ndimage as ndi

    from liveseg.synthetic import BACTERIA_STYLES, generate_bacteria
    from liveseg.synthetic._common import boundaries

    style = BACTERIA_STYLES["train"].replace(
        phase_fraction=1.0,
        colony_fraction=1.0,
        high_mag_fraction=1.0,
        gap=(0.0, 0.0),
        seam_light=(0.0, 0.0),
        blur=(0.6, 0.6),
        bit_depths=(32,),
        photons=(20000.0, 20000.0),
    )
    seam, centre = [], []
    for seed in range(4):
        img, lab = generate_bacteria(seed, (192, 192), style)
        cells = lab > 0
        seams = boundaries(lab) & cells & ndi.binary_erosion(cells, iterations=2)
        dist = ndi.distance_transform_edt(~boundaries(lab) & cells)
        core = dist >= 4  # well inside a rod, away from its edges and seams
        seam.append(np.median(img[seams]))
        centre.append(np.median(img[core]))
    assert np.median(seam) > np.median(centre) * 1.05


def test_bacteria_conditions_tell_how_each_frame_was_drawn():
    """The breakdown of ``model_accuracy.py`` groups frames by these: they must match."""
    from skimage.measure import regionprops

    from liveseg.synthetic import bacteria_conditions, generate_bacteria

    seen = set()
    checked = 0
    for seed in range(12):
        cond = bacteria_conditions(seed, (160, 160), "test")
        _, lab = generate_bacteria(seed, (160, 160), "test")
        widths = [p.axis_minor_length for p in regionprops(lab)]
        if len(widths) < 3:  # a sparse field with hardly a rod in it
            continue
        checked += 1
        assert abs(np.median(widths) / cond["width"] - 1) < 0.25
        assert (cond["magnification"] == "high") == (cond["width"] >= 10)
        seen.add((cond["modality"], cond["magnification"]))
    assert checked >= 8
    assert {m for m, _ in seen} == {"phase", "brightfield"}


def test_bacteria_are_rods():
    from skimage.measure import regionprops

    from liveseg.synthetic import generate_bacteria

    _, lab = generate_bacteria(5, (256, 256), "test")
    ratios = [p.axis_major_length / max(p.axis_minor_length, 1) for p in regionprops(lab)]
    assert np.median(ratios) > 1.5


def test_transmitted_objects_show_edges():
    from scipy import ndimage as ndi

    from liveseg.synthetic import TRANSMITTED_STYLES, generate_transmitted

    for mode in ("dic", "brightfield"):
        style = TRANSMITTED_STYLES["train"].replace(
            modes=(mode,), droplet_fraction=1.0, bit_depths=(32,), photons=(3000.0, 3000.0)
        )
        img, lab = generate_transmitted(6, (192, 192), style)
        grad = ndi.gaussian_gradient_magnitude(img.astype(np.float64), 1.5)
        edges = ndi.binary_dilation(lab > 0, iterations=2) & ~ndi.binary_erosion(
            lab > 0, iterations=2
        )
        far = ~ndi.binary_dilation(lab > 0, iterations=10)
        assert far.any() and edges.any()
        assert np.median(grad[edges]) > 2 * np.median(grad[far])


def test_generate_sample_rejects_unknown_kind():
    from liveseg.synthetic import generate_sample

    with pytest.raises(ValueError, match="unknown sample type"):
        generate_sample("plankton", 0)


def test_gallery_writes_a_png(tmp_path):
    from liveseg.synthetic.gallery import write_gallery

    out = write_gallery("bacteria", tmp_path / "g.png", shape=(64, 64))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
