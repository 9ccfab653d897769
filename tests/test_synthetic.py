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
