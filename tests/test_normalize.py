"""Percentile normalisation: exact histogram percentiles for camera dtypes, sampled otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from liveseg.builtins.normalize import normalize_image, percentiles
from liveseg.synthetic import generate


@pytest.mark.parametrize("bits", [8, 16])
def test_camera_frames_get_the_exact_percentiles_of_every_pixel(bits):
    img, _ = generate(5, (512, 384), "train", bit_depths=(bits,))
    assert img.dtype == (np.uint8 if bits == 8 else np.uint16)
    for qs in ((1.0, 99.8), (0.0, 100.0), (37.5, 50.0)):
        np.testing.assert_allclose(percentiles(img, qs), np.percentile(img, qs), rtol=1e-12)


def test_float_frames_are_sampled_within_two_percent_of_the_range():
    img, _ = generate(6, (512, 512), "train", bit_depths=(16,))
    flt = img.astype(np.float64) / 7.0
    lo, hi = percentiles(flt, (1.0, 99.8))
    ref_lo, ref_hi = np.percentile(flt, (1.0, 99.8))
    span = ref_hi - ref_lo
    assert abs(lo - ref_lo) <= 0.02 * span and abs(hi - ref_hi) <= 0.02 * span


def test_normalized_frame_maps_the_percentiles_to_zero_and_one():
    img, _ = generate(7, (256, 256), "train", bit_depths=(12,))
    out = normalize_image(img, 1.0, 99.8)
    assert out.dtype == np.float32 and out.shape == img.shape
    lo, hi = np.percentile(img, (1.0, 99.8))
    expected = (img.astype(np.float64) - lo) / (hi - lo)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    clipped = normalize_image(img, 1.0, 99.8, clip=True)
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0
