"""The ONNX Runtime path: same maps and labels as torch, a checked export, clear refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from liveseg.errors import ModelError
from liveseg.metrics import aggregate, average_precision
from liveseg.pipeline import StepContext
from liveseg.synthetic import generate
from liveseg.types import Frame

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _backend(home, threads=1, device=None, **params):
    from liveseg_torch.plugin import UnetBackend, UnetParams

    return UnetBackend(
        UnetParams(**params), StepContext(home=home, threads=threads, device=device)
    )


def _model_dir(tmp_path, default_ckpt_path):
    """A model directory like a registry version: the shipped weights and card, copied."""
    d = tmp_path / "model"
    d.mkdir()
    shutil.copyfile(default_ckpt_path, d / "default.pt")
    shutil.copyfile(default_ckpt_path.parent / "model.json", d / "model.json")
    return d


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_onnx_matches_torch_maps_and_labels_on_the_test_set(tmp_path):
    """Probabilities within ATOL and AP@0.5 >= 0.99 between torch and ONNX labels."""
    from liveseg_torch.runtime import ATOL

    onnx_b = _backend(tmp_path, runtime="onnx")
    torch_b = _backend(tmp_path, runtime="torch")
    assert onnx_b.predictor.runtime == "onnx"
    assert torch_b.predictor.runtime == "torch"
    pairs = [generate(60_000 + i, (256, 256), "test_hard") for i in range(6)]
    pairs.append(generate(60_100, (200, 328), "train", bit_depths=(8,)))  # odd size, 8-bit
    results, worst = [], 0.0
    for img, _ in pairs:
        p_onnx = onnx_b.predictor.maps(img)
        p_torch = torch_b.predictor.maps(img)
        worst = max(
            worst, *(float(np.abs(a - b).max()) for a, b in zip(p_onnx, p_torch, strict=True))
        )
        frame = Frame(index=0, image=img)
        a, b = onnx_b.segment(frame, None), torch_b.segment(frame, None)
        assert a.extra["runtime"] == "onnx"
        results.append(average_precision(b.labels, a.labels, thresholds=(0.5,)))
    assert worst <= ATOL
    pooled = aggregate(results)
    assert pooled.n_true > 500
    assert pooled.ap[0.5] >= 0.99


def test_test_time_flips_and_tiles_agree_between_runtimes(tmp_path):
    from liveseg_torch.runtime import ATOL

    img, _ = generate(60_050, (200, 264), "train")
    kw = {"test_time_flips": True, "tile": 128, "overlap": 32, "batch_size": 3}
    onnx_maps = _backend(tmp_path, runtime="onnx", **kw).predictor.maps(img)
    torch_maps = _backend(tmp_path, runtime="torch", **kw).predictor.maps(img)
    for a, b in zip(onnx_maps, torch_maps, strict=True):
        assert a.shape == img.shape
        assert float(np.abs(a - b).max()) <= ATOL


def test_shipped_weights_export_once_into_the_cache(tmp_path):
    first = _backend(tmp_path)  # runtime auto on the CPU: ONNX Runtime
    path = first.onnx_path
    assert path is not None and path.parent.parent == tmp_path / "cache" / "onnx"
    record = json.loads((path.parent / "onnx.json").read_text())
    assert record["sha256"] == _sha(path)
    assert record["weights_sha256"] == _sha(first.weights_path)
    assert record["max_abs_diff_vs_torch"] <= 1e-4
    mtime = path.stat().st_mtime_ns
    second = _backend(tmp_path)
    assert second.onnx_path == path and path.stat().st_mtime_ns == mtime  # reused


def test_export_next_to_weights_is_recorded_and_used(tmp_path, default_ckpt_path):
    from liveseg_torch.runtime import export_onnx

    d = _model_dir(tmp_path, default_ckpt_path)
    out = export_onnx(d)
    assert out == d / "model.onnx"
    card = json.loads((d / "model.json").read_text())
    assert card["onnx"]["sha256"] == _sha(out)
    assert card["onnx"]["weights_sha256"] == _sha(d / "default.pt")
    assert card["metrics"]  # the rest of the card is kept
    home = tmp_path / "home"
    b = _backend(home, model=str(d))
    assert b.onnx_path == out
    assert not (home / "cache").exists()


def test_registry_hook_exports_into_a_staging_directory(tmp_path, default_ckpt_path):
    from liveseg_torch.plugin import UnetBackend

    d = _model_dir(tmp_path, default_ckpt_path)
    out = UnetBackend.prepare_model_dir(d)
    assert out == d / "model.onnx"
    assert json.loads((d / "model.json").read_text())["onnx"]["sha256"] == _sha(out)


def test_tampered_export_is_refused_with_both_hashes(tmp_path, default_ckpt_path):
    from liveseg_torch.runtime import export_onnx

    d = _model_dir(tmp_path, default_ckpt_path)
    out = export_onnx(d)
    recorded = _sha(out)
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    with pytest.raises(ModelError) as exc:
        _backend(tmp_path / "home", model=str(d))
    msg = str(exc.value)
    assert recorded in msg and _sha(out) in msg


def test_tampered_cached_export_is_refused(tmp_path):
    path = _backend(tmp_path).onnx_path
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="does not match its record"):
        _backend(tmp_path)


def test_stale_export_of_changed_weights_is_not_used(tmp_path, default_ckpt_path):
    from liveseg_torch.runtime import export_onnx
    from liveseg_torch.weights import load_checkpoint, save_checkpoint

    d = _model_dir(tmp_path, default_ckpt_path)
    export_onnx(d)
    ckpt = load_checkpoint(d / "default.pt")
    with torch.no_grad():
        ckpt.model.head.bias += 0.5  # the weights change after the export
    save_checkpoint(ckpt, d / "default.pt")
    home = tmp_path / "home"
    b = _backend(home, model=str(d), runtime="onnx")
    assert b.onnx_path is not None and b.onnx_path.is_relative_to(home / "cache")
    torch_b = _backend(home, model=str(d), runtime="torch")
    img, _ = generate(60_200, (128, 128), "train")
    diff = max(
        float(np.abs(a - c).max())
        for a, c in zip(b.predictor.maps(img), torch_b.predictor.maps(img), strict=True)
    )
    assert diff <= 1e-4  # the new export follows the new weights


@pytest.mark.slow
def test_missing_onnxruntime_falls_back_to_torch_with_one_notice(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["onnxruntime"] = None  # as if it were not installed
        from pathlib import Path
        from liveseg.pipeline import StepContext
        from liveseg_torch.plugin import UnetBackend, UnetParams
        b = UnetBackend(UnetParams(), StepContext(home=Path({str(tmp_path)!r}), threads=1))
        print("RUNTIME", b.predictor.runtime)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "RUNTIME torch" in proc.stdout
    notices = [line for line in proc.stderr.splitlines() if "onnxruntime" in line]
    assert len(notices) == 1 and "not installed" in notices[0]
    assert not (tmp_path / "cache").exists()


def test_runtime_param_is_validated(tmp_path):
    from pydantic import ValidationError

    from liveseg_torch.plugin import UnetParams

    with pytest.raises(ValidationError):
        UnetParams(runtime="openvino")
    with pytest.raises(ModelError, match="CPU only"):
        _backend(tmp_path, device="cuda", runtime="onnx")


@pytest.mark.parametrize("overlap", [False, True])
def test_segment_batch_gives_each_frame_its_segment_labels(tmp_path, overlap):
    b = _backend(tmp_path, threads=1, batch_size=2, overlap_decode=overlap)
    images = [generate(60_300 + i, (192, 256), "train")[0] for i in range(3)]
    images.append(np.full((192, 256), 500, np.uint16))  # blank
    images.append(generate(60_400, (160, 96), "sparse")[0])  # another shape
    frames = [Frame(index=i, image=img) for i, img in enumerate(images)]
    batch = b.segment_batch(frames)
    assert len(batch) == len(frames)
    for f, r in zip(frames, batch, strict=True):
        single = b.segment(f, None)
        assert r.labels.shape == f.shape and r.labels.dtype == np.uint32
        np.testing.assert_array_equal(r.labels, single.labels)
        assert r.scores == pytest.approx(single.scores)
    assert batch[3].count == 0 and batch[0].count > 0
    b.close()


@pytest.mark.gpu
@needs_cuda
def test_auto_runtime_on_cuda_is_torch_and_agrees_with_onnx_on_the_cpu(tmp_path):
    gpu = _backend(tmp_path, device="cuda")
    cpu = _backend(tmp_path, device="cpu", runtime="onnx")
    assert gpu.predictor.runtime == "torch" and gpu.predictor.device.type == "cuda"
    img, _ = generate(60_500, (512, 512), "train")
    frame = Frame(index=0, image=img)
    ap = average_precision(cpu.segment(frame, None).labels, gpu.segment(frame, None).labels)
    assert ap.ap[0.5] >= 0.99


def test_registered_and_cloned_versions_carry_their_own_checked_export(tmp_path):
    """The registry asks the backend for its export when a version is written: the
    README's `models import-default` then `models clone` each get a hash-checked
    `model.onnx`, and a clone never inherits its parent's export record."""
    from click.testing import CliRunner

    from liveseg.cli import main
    from liveseg.models import ModelRegistry

    home = tmp_path / "home"
    runner = CliRunner()
    res = runner.invoke(main, ["models", "import-default", "--home", str(home)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["models", "clone", "default@1", "--home", str(home)])
    assert res.exit_code == 0, res.output
    reg = ModelRegistry(home)
    for spec in ("default@1", "default@2"):
        mv = reg.resolve(spec)
        card = json.loads((mv.path / "model.json").read_text())
        onnx = mv.path / "model.onnx"
        assert onnx.is_file(), spec
        assert card["onnx"]["sha256"] == _sha(onnx)
        assert card["onnx"]["weights_sha256"] == card["weights_sha256"]
    backend = _backend(home, model="default@2")
    try:
        assert backend.predictor.runtime == "onnx"
        assert backend.onnx_path == reg.resolve("default@2").path / "model.onnx"
    finally:
        backend.close()


def test_additive_decoder_checkpoint_round_trips_through_onnx(tmp_path):
    """A ``decoder: add`` network trained, saved, loaded, exported: ONNX matches torch.

    What a person gets from ``pretrain --decoder add --batch-norm``: the checkpoint
    keeps its decoder, loads the same function, and its export next to the weights is
    hash-recorded and used, with maps within ATOL of torch's and the same labels.
    """
    from liveseg_torch.network import NetConfig, UNetLite
    from liveseg_torch.runtime import ATOL, export_onnx
    from liveseg_torch.train import make_sample, train_steps
    from liveseg_torch.weights import Checkpoint, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = UNetLite(NetConfig(channels=4, batch_norm=True, decoder="add"))
    samples = [make_sample(*generate(s, (64, 64))) for s in range(3)]
    train_steps(model, samples, steps=4, batch_size=4, crop=32, learning_rate=1e-2, seed=0)
    d = tmp_path / "model"
    d.mkdir()
    save_checkpoint(Checkpoint(model=model), d / "default.pt")
    ckpt = load_checkpoint(d / "default.pt")
    assert ckpt.model.config.decoder == "add" and ckpt.model.config.batch_norm is False
    x = torch.from_numpy(samples[0].image[None, None].copy())
    with torch.inference_mode():
        torch.testing.assert_close(ckpt.model(x), model.eval()(x), rtol=1e-4, atol=1e-4)
    out = export_onnx(d)
    card = json.loads((d / "model.json").read_text())
    assert card["onnx"]["sha256"] == _sha(out)
    home = tmp_path / "home"
    onnx_b = _backend(home, model=str(d), runtime="onnx")
    torch_b = _backend(home, model=str(d), runtime="torch")
    assert onnx_b.onnx_path == out
    img, _ = generate(60_300, (96, 160), "train")
    diff = max(
        float(np.abs(a - b).max())
        for a, b in zip(onnx_b.predictor.maps(img), torch_b.predictor.maps(img), strict=True)
    )
    assert diff <= ATOL
    frame = Frame(index=0, image=img)
    np.testing.assert_array_equal(
        onnx_b.segment(frame, None).labels, torch_b.segment(frame, None).labels
    )


def test_checkpoint_without_decoder_key_loads_as_concat(tmp_path):
    """Checkpoints written before the ``decoder`` field hold the concatenating decoder."""
    from liveseg_torch.network import NetConfig, UNetLite
    from liveseg_torch.weights import Checkpoint, load_checkpoint, save_checkpoint

    torch.manual_seed(1)
    model = UNetLite(NetConfig(channels=4)).eval()
    path = save_checkpoint(Checkpoint(model=model), tmp_path / "old.pt")
    raw = torch.load(path, weights_only=True)
    del raw["arch"]["decoder"]
    torch.save(raw, path)
    ckpt = load_checkpoint(path)
    assert ckpt.model.config.decoder == "concat"
    x = torch.rand(1, 1, 32, 48)
    with torch.inference_mode():
        torch.testing.assert_close(ckpt.model(x), model(x))
    with pytest.raises(ValueError, match="decoder must be one of concat, add"):
        NetConfig(decoder="sum")
