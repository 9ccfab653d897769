"""The ``cellpose`` step against liveseg's backend contract, on real cellpose networks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liveseg.errors import ConfigError, ModelError
from liveseg.pipeline import Backend, StepContext, validate_params
from liveseg.types import LABEL_DTYPE, Frame, FrameResult
from liveseg_cellpose.backend import CellposeBackend, CellposeParams, object_scores

# A random network predicts no cells at cellpose's defaults; these thresholds make its
# output still produce objects, so labels, scores and dtype conversion are exercised.
EAGER = {"cellprob_threshold": -6.0, "flow_threshold": 0.0, "min_size": 5}


def _build(params: dict[str, Any], tmp_path: Path, **ctx: Any) -> CellposeBackend:
    p = validate_params("seg", "cellpose", CellposeBackend, params)
    return CellposeBackend(p, StepContext(home=tmp_path, **ctx))


def _blobs(shape: tuple[int, int] = (200, 240), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = rng.normal(100, 5, shape)
    for cy, cx in rng.uniform(20, min(shape) - 20, (8, 2)):
        img += 400 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 8.0**2))
    return img.astype(np.uint16)


def test_registering_the_plugin_imports_neither_torch_nor_cellpose() -> None:
    code = (
        "import sys\n"
        "from liveseg.plugins import PluginHost\n"
        "h = PluginHost(entry_points=True)\n"
        "assert 'cellpose' in h.backends() and 'cellpose' in h.trainers(), h.backends()\n"
        "heavy = [m for m in ('cellpose', 'segment_anything') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import liveseg_cellpose.plugin\n"
        "assert 'torch' not in sys.modules or 'liveseg_torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_params_are_validated_with_liveseg_errors() -> None:
    with pytest.raises(ConfigError, match="nchannels"):
        validate_params("seg", "cellpose", CellposeBackend, {"nchannels": 2})
    with pytest.raises(ConfigError, match="channels"):
        validate_params("seg", "cellpose", CellposeBackend, {"channels": [0, 1, 2, 3]})
    p = validate_params("seg", "cellpose", CellposeBackend, {"diameter": 17})
    assert isinstance(p, CellposeParams) and p.model == "cpsam" and p.warmup


@pytest.mark.timeout(60)
def test_missing_weights_fail_at_session_start(empty_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="CELLPOSE_LOCAL_MODELS_PATH"):
        _build({"model": "cpsam", "download": False}, tmp_path)


def test_a_file_that_is_not_a_cellpose4_model_is_refused(tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "cp3.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ModelError, match="not a cellpose 4 model"):
        _build({"model": str(bad)}, tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read"):
        _build({"model": str(junk)}, tmp_path)


def test_cuda_override_without_cuda_fails_at_start(tiny_weights: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelError, match="CUDA is not available"):
        _build({"model": str(tiny_weights), "device": "cuda"}, tmp_path)


def test_object_scores_are_per_label_means() -> None:
    labels = np.array([[0, 1, 1], [2, 2, 0]], dtype=np.uint32)
    prob = np.array([[0.9, 0.2, 0.4], [1.0, 0.5, 0.1]], dtype=np.float32)
    assert object_scores(labels, prob) == pytest.approx({1: 0.3, 2: 0.75})
    assert object_scores(np.zeros((2, 2), np.uint32), prob[:, :2]) == {}


@pytest.mark.slow
def test_segment_runs_cellpose_eval_and_meets_the_contract(
    tiny_weights: Path, tmp_path: Path
) -> None:
    backend = _build({"model": str(tiny_weights), **EAGER}, tmp_path, threads=1)
    try:
        assert isinstance(backend, Backend)
        assert backend.warmup_ms > 0 and backend.device.type == "cpu"
        frame = Frame(index=3, image=_blobs())
        result = backend.segment(frame, None)
        assert isinstance(result, FrameResult)
        assert result.labels.shape == frame.shape and result.labels.dtype == LABEL_DTYPE
        ids = set(np.unique(result.labels).tolist()) - {0}
        assert ids and set(result.scores) == ids
        assert all(0.0 <= s <= 1.0 for s in result.scores.values())
        assert result.extra["backend_rate_fps"] > 0 and result.extra["cellpose_ms"] > 0
        assert backend.stats()["frames"] == 1
    finally:
        backend.close()
        backend.close()  # idempotent
    assert backend._model is None


@pytest.mark.slow
def test_upstream_float_image_is_not_normalised_again(tiny_weights: Path, tmp_path: Path) -> None:
    backend = _build({"model": str(tiny_weights), "warmup": False, **EAGER}, tmp_path)
    seen: list[Any] = []
    real_eval = backend._model.eval

    def spy(x: np.ndarray, **kw: Any) -> Any:
        seen.append((x.shape, kw["normalize"]["normalize"]))
        return real_eval(x, **kw)

    backend._model.eval = spy
    try:
        raw = _blobs((128, 128))
        frame = Frame(index=0, image=raw)
        backend.segment(frame, None)
        normed = (raw - raw.min()) / float(np.ptp(raw))
        up = FrameResult(labels=np.zeros(raw.shape, LABEL_DTYPE), image=normed.astype(np.float32))
        out = backend.segment(frame, up)
        assert out.image is up.image
        assert [s[1] for s in seen] == [True, False]
        assert seen[0][0] == (128, 128, 1)
    finally:
        backend.close()


@pytest.mark.slow
def test_batch_of_frames_matches_frame_by_frame(tiny_weights: Path, tmp_path: Path) -> None:
    backend = _build({"model": str(tiny_weights), "warmup": False, **EAGER}, tmp_path)
    try:
        frames = [Frame(index=i, image=_blobs((160, 160), seed=i)) for i in range(2)]
        batch = backend.segment_batch(frames)
        single = [backend.segment(f, None) for f in frames]
        for b, s in zip(batch, single, strict=True):
            assert b.labels.dtype == LABEL_DTYPE and b.labels.shape == (160, 160)
            np.testing.assert_array_equal(b.labels, s.labels)
    finally:
        backend.close()


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_cpsam_sized_network_on_512_frame(tmp_path: Path) -> None:
    """Cellpose-SAM-sized random network (or the real cpsam if cached) on CUDA."""
    from liveseg_cellpose.net import save_random_weights
    from liveseg_cellpose.weights import cache_dir

    cached = cache_dir() / "cpsam"
    model = cached if cached.is_file() else save_random_weights(tmp_path / "l.pt", "vit_l")
    backend = _build({"model": str(model), "device": "cuda", **EAGER}, tmp_path)
    try:
        assert backend.device.type == "cuda"
        frame = Frame(index=0, image=_blobs((512, 512)))
        result = backend.segment(frame, None)
        assert result.labels.shape == (512, 512) and result.labels.dtype == LABEL_DTYPE
        assert set(result.scores) == set(np.unique(result.labels).tolist()) - {0}
        assert result.extra["device"].startswith("cuda")
    finally:
        backend.close()
