import numpy as np
import pytest

from liveseg.builtins.normalize import normalize_image
from liveseg.builtins.size_filter import SizeFilterParams, filter_labels
from liveseg.builtins.threshold import ThresholdParams, threshold_segment
from liveseg.config import StepConfig
from liveseg.defaults import CLASSICAL_STEPS
from liveseg.pipeline import Pipeline, StepContext
from liveseg.testing import disk_image
from liveseg.types import Frame, FrameStatus


def _classical(host, tmp_path):
    return Pipeline.build(list(CLASSICAL_STEPS), host.backends(), StepContext(tmp_path))


def test_classical_chain_finds_separate_disks(liveseg_host, tmp_path):
    centers = [(20, 20), (20, 60), (60, 40), (100, 100)]
    image, _truth = disk_image((128, 128), centers, radius=6)
    result = _classical(liveseg_host, tmp_path).run(Frame(0, image))
    assert result.status is FrameStatus.OK
    assert result.labels.dtype == np.uint32
    assert result.count == 4
    for r, c in centers:
        assert result.labels[r, c] > 0


def test_classical_chain_splits_two_touching_disks():
    image, _ = disk_image((96, 96), [(48, 40), (48, 55)], radius=8, noise=2)
    labels = threshold_segment(image, ThresholdParams(min_distance=4))
    assert len(np.unique(labels)) - 1 == 2


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), np.uint16),
        np.full((64, 64), 4095, np.uint16),  # saturated
        np.full((64, 64), 65535, np.uint16),
        np.random.default_rng(0).normal(100, 3, (64, 64)).astype(np.float32),  # noise only
    ],
    ids=["empty", "saturated-12bit", "saturated-16bit", "noise"],
)
def test_empty_constant_and_saturated_frames_give_zero_objects(liveseg_host, tmp_path, image):
    result = _classical(liveseg_host, tmp_path).run(Frame(0, image))
    assert result.status is FrameStatus.OK
    assert result.count == 0


def test_normalize_constant_image_is_zero_not_nan():
    out = normalize_image(np.full((10, 10), 7, np.uint16))
    assert np.isfinite(out).all() and (out == 0).all()


def test_normalize_maps_percentiles():
    img = np.arange(10000, dtype=np.float32).reshape(100, 100)
    out = normalize_image(img, 0, 100)
    assert out.dtype == np.float32
    assert out.min() == pytest.approx(0, abs=1e-3) and out.max() == pytest.approx(1, abs=1e-3)


def test_size_filter_area_and_edge():
    labels = np.zeros((20, 20), np.uint32)
    labels[0:3, 0:3] = 1  # edge, 9 px
    labels[8:10, 8:10] = 2  # 4 px
    labels[12:17, 12:17] = 3  # 25 px
    out = filter_labels(labels, SizeFilterParams(min_area=5))
    assert sorted(np.unique(out)) == [0, 1, 2]  # relabelled: 1 (edge) and 3 survive
    out = filter_labels(labels, SizeFilterParams(min_area=5, drop_edge=True))
    assert sorted(np.unique(out)) == [0, 1]
    assert out[14, 14] == 1


def test_size_filter_keeps_scores(liveseg_host, tmp_path):
    from liveseg.builtins.size_filter import SizeFilter
    from liveseg.types import FrameResult

    labels = np.zeros((20, 20), np.uint32)
    labels[1:3, 1:3] = 1
    labels[10:16, 10:16] = 2
    up = FrameResult(labels=labels, scores={1: 0.2, 2: 0.9})
    step = SizeFilter(SizeFilterParams(min_area=10), StepContext(tmp_path))
    out = step.segment(Frame(0, np.zeros((20, 20))), up)
    assert out.scores == {1: 0.9}


def test_pipeline_rejects_non_2d(liveseg_host, tmp_path):
    result = _classical(liveseg_host, tmp_path).run(Frame(0, np.zeros((2, 8, 8))))
    assert result.status is FrameStatus.FAILED
    assert "2-D" in result.error


def test_step_config_rejects_unknown_keys():
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="bogus"):
        StepConfig(backend="x", bogus=1)
