"""Behaviour of the unet backend: weights, accuracy, tiling, inputs, errors, plugin wiring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from liveseg.errors import ConfigError, ModelError
from liveseg.metrics import aggregate, average_precision
from liveseg.pipeline import Pipeline, StepContext, validate_params
from liveseg.synthetic import generate
from liveseg.types import Frame
from liveseg_torch.inference import Predictor, prepare_image
from liveseg_torch.plugin import UnetBackend, UnetParams, resolve_weights
from liveseg_torch.representation import decode, targets
from liveseg_torch.weights import load_checkpoint, save_checkpoint

# Frames the model never trained on (training uses seeds 0..n of dataset seed 0).
EVAL_SEEDS = [987_654_321 + i for i in range(4)]


def test_default_weights_segment_synthetic_frames(predictor):
    results = []
    for seed in EVAL_SEEDS:
        img, true = generate(seed, (256, 256), "train", photons=(100.0, 3000.0))
        labels, scores = predictor.predict(img)
        assert labels.dtype == np.uint32 and labels.shape == img.shape
        assert set(scores) == set(np.unique(labels[labels > 0]).tolist())
        assert all(0.0 <= s <= 1.0 for s in scores.values())
        results.append(average_precision(true, labels, (0.5, 0.75)))
    pooled = aggregate(results)
    assert pooled.ap[0.5] >= 0.8, pooled.as_dict()
    assert pooled.mean_matched_iou >= 0.75


def test_backend_via_pipeline_with_default_params(tmp_path):
    params = validate_params("seg", "unet", UnetBackend, {})
    backend = UnetBackend(params, StepContext(home=tmp_path, threads=1))
    pipe = Pipeline([("seg", "unet", backend)])
    img, true = generate(EVAL_SEEDS[0], (200, 232), "sparse")
    result = pipe.run(Frame(index=0, image=img))
    pipe.close()
    assert result.error is None
    assert result.labels.shape == (200, 232)
    assert average_precision(true, result.labels).ap[0.5] >= 0.7


def test_params_reject_unknown_fields():
    with pytest.raises(ConfigError, match="valid fields"):
        validate_params("seg", "unet", UnetBackend, {"tiles": 3})


def test_tiling_matches_single_pass(default_ckpt_path):
    ckpt = load_checkpoint(default_ckpt_path)
    img, _ = generate(EVAL_SEEDS[1], (256, 256), "train", density=(10.0, 10.0))
    single = Predictor(ckpt, device="cpu", tile=512)
    tiled = Predictor(ckpt, device="cpu", tile=128, overlap=32, batch_size=3)
    p1, d1 = single.maps(img)
    p2, d2 = tiled.maps(img)
    assert np.mean(np.abs(p1 - p2)) < 0.01
    assert np.mean(np.abs(d1 - d2)) < 0.01
    l1, _ = single.predict(img)
    l2, _ = tiled.predict(img)
    agree = average_precision(l1, l2, (0.5, 0.9))
    assert agree.ap[0.5] >= 0.97
    assert agree.ap[0.9] >= 0.85


def test_any_dtype_and_size(predictor):
    img, true = generate(EVAL_SEEDS[2], (150, 97), "sparse", bit_depths=(16,))
    ref, _ = predictor.predict(img)
    for cast in (np.float32, np.float64):
        out, _ = predictor.predict(img.astype(cast))
        assert out.shape == (150, 97)
        assert average_precision(ref, out).ap[0.5] >= 0.95
    as8 = (img.astype(float) / img.max() * 255).astype(np.uint8)
    out8, _ = predictor.predict(as8)
    assert average_precision(true, out8).ap[0.5] >= 0.6


def test_blank_and_tiny_frames(predictor):
    for shape in ((64, 64), (5, 3), (1, 1)):
        labels, scores = predictor.predict(np.full(shape, 100, np.uint16))
        assert labels.shape == shape
        assert labels.max() == 0 and scores == {}
    # Blank, saturated and constant float frames: no objects, without the network.
    for frame in (
        np.zeros((96, 64), np.uint16),
        np.full((96, 64), 65535, np.uint16),
        np.full((96, 64), 0.25, np.float32),
    ):
        labels, scores = predictor.predict(frame)
        assert labels.shape == frame.shape and labels.dtype == np.uint32
        assert labels.max() == 0 and scores == {}
    with pytest.raises(ValueError, match="2-D"):
        predictor.predict(np.zeros((2, 8, 8), np.uint16))


def test_predict_batch_matches_predict(predictor):
    frames = [generate(s, (128, 128), "sparse")[0] for s in EVAL_SEEDS[:3]]
    frames.append(generate(EVAL_SEEDS[3], (96, 160), "sparse")[0])
    batch = predictor.predict_batch(frames)
    for img, (labels, _) in zip(frames, batch, strict=True):
        single, _ = predictor.predict(img)
        assert average_precision(single, labels, (0.9,)).ap[0.9] >= 0.95


def test_test_time_flips_agree(default_ckpt_path):
    ckpt = load_checkpoint(default_ckpt_path)
    img, true = generate(EVAL_SEEDS[0], (128, 128), "sparse")
    plain = Predictor(ckpt, device="cpu").predict(img)[0]
    flipped = Predictor(ckpt, device="cpu", test_time_flips=True).predict(img)[0]
    assert average_precision(plain, flipped).ap[0.5] >= 0.8
    assert average_precision(true, flipped).ap[0.5] >= 0.7


def test_targets_and_decode_roundtrip():
    _, true = generate(5, (128, 128), "test_hard")
    fg, dist = targets(true)
    assert fg.max() == 1 and dist.max() == pytest.approx(1.0)
    assert np.all(dist[true == 0] == 0)
    for scale in (1, 2):
        labels = decode(fg, dist, seed_threshold=0.5, min_size=1, scale=scale)
        r = average_precision(true, labels, (0.5, 0.75))
        assert r.ap[0.5] >= 0.95, scale
        assert r.ap[0.75] >= 0.9, scale


def test_prepare_image_is_float32_and_bounded():
    out = prepare_image(np.array([[0, 65535], [3, 4]], dtype=np.uint16))
    assert out.dtype == np.float32
    assert out.min() >= -1 and out.max() <= 8


# -- errors -------------------------------------------------------------------------


def test_missing_file_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_garbage_file_is_model_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ModelError, match=r"bad\.pt.*corrupt"):
        load_checkpoint(bad)


def test_truncated_file_is_model_error(tmp_path, default_ckpt_path):
    cut = tmp_path / "cut.pt"
    data = default_ckpt_path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(cut)


def test_wrong_kind_of_checkpoint_is_model_error(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(ModelError, match="not a liveseg-torch unet checkpoint"):
        load_checkpoint(other)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("channels", 8, "does not fit"), ("levels", 7, "levels must be 3 or 4")],
)
def test_architecture_that_does_not_fit_is_model_error(
    tmp_path, default_ckpt_path, field, value, message
):
    raw = torch.load(default_ckpt_path, weights_only=True)
    raw["arch"][field] = value
    wrong = tmp_path / "wrong.pt"
    torch.save(raw, wrong)
    with pytest.raises(ModelError, match=message):
        load_checkpoint(wrong)


def test_three_level_checkpoints_without_levels_key_still_load(tmp_path):
    # Checkpoints written before the `levels` field existed hold a 3-level network.
    from liveseg_torch.network import NetConfig, UNetLite
    from liveseg_torch.weights import Checkpoint

    path = save_checkpoint(Checkpoint(model=UNetLite(NetConfig(channels=4))), tmp_path / "o.pt")
    raw = torch.load(path, weights_only=True)
    del raw["arch"]["levels"]
    torch.save(raw, path)
    ckpt = load_checkpoint(path)
    assert ckpt.model.config.levels == 3 and ckpt.model.config.multiple == 8
    labels, _ = Predictor(ckpt, device="cpu").predict(generate(1, (40, 56))[0])
    assert labels.shape == (40, 56)


def test_four_level_network_trains_on_any_crop_size():
    from liveseg_torch.network import NetConfig, UNetLite
    from liveseg_torch.train import make_sample, train_steps

    model = UNetLite(NetConfig(channels=4, levels=4))
    assert model.config.multiple == 16
    assert model(torch.zeros(1, 1, 48, 80)).shape == (1, 2, 48, 80)
    img, lab = generate(3, (64, 64))
    # 40 is not a multiple of 16: the loop rounds the crop up instead of failing.
    losses = train_steps(
        model, [make_sample(img, lab)], steps=2, batch_size=2, crop=40, learning_rate=1e-3, seed=0
    )
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_noise_augmentation_adds_zero_mean_noise_to_half_the_crops_only():
    """``pretrain --noise``: about half the crops get extra noise, their targets never."""
    from liveseg_torch.train import _crop, make_sample

    sample = make_sample(*generate(4, (64, 64)))

    def crops(noise):
        return [_crop(np.random.default_rng(i), sample, 64, False, noise) for i in range(40)]

    plain, noisy = crops(0.0), crops(0.5)
    # The same crop positions and flips per seed (the noise draws come after them).
    extra = [n[0] - p[0] for p, n in zip(plain, noisy, strict=True)]
    assert all(np.array_equal(p[1:], n[1:]) for p, n in zip(plain, noisy, strict=True))
    changed = [e for e in extra if np.abs(e).max() > 0]
    assert 10 <= len(changed) <= 30  # about half
    assert all(abs(e.mean()) < 0.05 and e.std() < 0.5 * 1.1 for e in changed)
    assert max(e.std() for e in changed) > 0.25


def test_batch_norm_training_is_saved_as_an_equivalent_plain_network(tmp_path):
    # Pretraining uses BatchNorm; the checkpoint must hold the folded network that
    # computes the same maps, so inference and fine-tuning never see batch statistics.
    from liveseg_torch.network import NetConfig, UNetLite, fold_batch_norm
    from liveseg_torch.train import make_sample, train_steps
    from liveseg_torch.weights import Checkpoint

    torch.manual_seed(0)
    model = UNetLite(NetConfig(channels=4, batch_norm=True))
    samples = [make_sample(*generate(s, (64, 64))) for s in range(3)]
    train_steps(model, samples, steps=4, batch_size=4, crop=32, learning_rate=1e-2, seed=0)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 9 and not any(torch.allclose(b.running_var, torch.ones(4)) for b in bns[:2])
    x = torch.from_numpy(samples[0].image[None, None].copy())
    with torch.inference_mode():
        expected = model.eval()(x)
        folded = fold_batch_norm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-4)
        assert fold_batch_norm(folded) is folded
        ckpt = load_checkpoint(save_checkpoint(Checkpoint(model=model), tmp_path / "bn.pt"))
        assert ckpt.model.config.batch_norm is False
        torch.testing.assert_close(ckpt.model(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_pretrain_from_weights_with_another_decoder_keeps_their_encoder(tmp_path):
    # `pretrain --init OLD.pt --decoder add`: the new network starts from the old one's
    # encoder and head (same names and shapes) and a fresh decoder; the card says so.
    import json

    from liveseg_torch.network import NetConfig, UNetLite
    from liveseg_torch.pretrain import main
    from liveseg_torch.weights import Checkpoint

    torch.manual_seed(0)
    old = save_checkpoint(Checkpoint(model=UNetLite(NetConfig(channels=4))), tmp_path / "old.pt")
    out = tmp_path / "new"
    args = ["--out", str(out), "--steps", "2", "--n-train", "2", "--batch-size", "2"]
    args += ["--crop", "32", "--lr", "1e-12", "--threads", "1", "--no-progress"]
    assert main([*args, "--init", str(old), "--decoder", "add"]) == 0
    new, before = load_checkpoint(out / "default.pt").model, load_checkpoint(old).model
    assert new.config == NetConfig(channels=4, decoder="add")
    for name in ("stem.0.weight", "enc1.0.weight", "enc3.1.0.weight", "head.weight"):
        torch.testing.assert_close(new.state_dict()[name], before.state_dict()[name])
    assert new.state_dict()["dec1.0.weight"].shape != before.state_dict()["dec1.0.weight"].shape
    card = json.loads((out / "model.json").read_text())
    assert card["architecture"]["decoder"] == "add"
    assert "--decoder add" in card["command"] and f"--init {old}" in card["command"]


TINY_PRETRAIN = ["--steps", "3", "--n-train", "2", "--batch-size", "2", "--crop", "32"]
TINY_PRETRAIN += ["--lr", "1e-2", "--threads", "1", "--no-progress"]
"""A pretraining run of a few seconds: enough to reach the training and the card."""


def _pretrain_cli(*args: object) -> subprocess.CompletedProcess[str]:
    """``python -m liveseg_torch.pretrain ARGS``, the documented command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "liveseg_torch.pretrain", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_pretrain_command_noise_and_train_style_reach_the_training_and_the_card(tmp_path):
    # The documented command, as a user runs it: `python -m liveseg_torch.pretrain` with
    # `--noise S` and with `--train-style NAME`. From the same weights and seed, each
    # reaches the training (other weights than a run without it) and the card records
    # it; a negative noise level or an unknown style is refused before anything is written.
    import json

    from liveseg_torch.network import NetConfig, UNetLite
    from liveseg_torch.weights import Checkpoint

    torch.manual_seed(0)
    old = save_checkpoint(Checkpoint(model=UNetLite(NetConfig(channels=4))), tmp_path / "old.pt")

    def run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return _pretrain_cli(*TINY_PRETRAIN, "--init", old, "--out", out, *extra)

    runs = {"plain": (), "noisy": ("--noise", "0.5"), "dim": ("--train-style", "low_snr")}
    for name, extra in runs.items():
        done = run(tmp_path / name, *extra)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "ap@0.5" in json.loads(done.stdout.strip().splitlines()[-1])["metrics"]["test_hard"]
    plain = load_checkpoint(tmp_path / "plain" / "default.pt").model.state_dict()
    noisy = load_checkpoint(tmp_path / "noisy" / "default.pt").model.state_dict()
    assert not torch.equal(plain["stem.0.weight"], noisy["stem.0.weight"])
    card = json.loads((tmp_path / "noisy" / "model.json").read_text())
    assert "--noise 0.5" in card["command"]
    assert "Gaussian noise up to 0.5 on half the crops" in card["training"]["augmentation"]
    plain_card = json.loads((tmp_path / "plain" / "model.json").read_text())
    assert "--noise" not in plain_card["command"]
    assert "noise" not in plain_card["training"]["augmentation"].lower()

    dim = load_checkpoint(tmp_path / "dim" / "default.pt").model.state_dict()
    assert not torch.equal(plain["stem.0.weight"], dim["stem.0.weight"])
    dim_card = json.loads((tmp_path / "dim" / "model.json").read_text())
    assert dim_card["training_data"]["style"] == "low_snr"
    assert plain_card["training_data"]["style"] == "train"
    assert "--train-style low_snr" in dim_card["command"]

    refused = run(tmp_path / "bad", "--noise", "-0.2")
    assert refused.returncode == 2
    assert "--noise: must be a number >= 0, got -0.2" in refused.stderr
    refused = run(tmp_path / "bad", "--kind", "bacteria", "--train-style", "tset")
    assert refused.returncode == 2
    assert "--train-style: unknown bacteria style 'tset'; known: train, val" in refused.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_pretrain_widen_keeps_the_trained_network_and_adds_channels(tmp_path, capsys):
    # `pretrain --init OLD.pt --widen C`: the old network embedded in a wider one computes
    # the same maps before training (here at a negligible rate, so after it too), the card
    # says how it was made, and a narrower width or a missing --init is refused.
    import json

    from liveseg_torch.network import NetConfig, UNetLite
    from liveseg_torch.pretrain import main, widen_network
    from liveseg_torch.weights import Checkpoint

    torch.manual_seed(0)
    config = NetConfig(channels=4, levels=4, decoder="add")
    old = save_checkpoint(Checkpoint(model=UNetLite(config)), tmp_path / "old.pt")
    source = load_checkpoint(old).model.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        expected = source(x)
        wide = widen_network(source, 7).eval()
        assert wide.config == NetConfig(channels=7, levels=4, decoder="add")
        torch.testing.assert_close(wide(x), expected)
        assert not torch.equal(wide.state_dict()["enc1.0.weight"][4:, :4], torch.zeros(3, 4, 3, 3))

    out = tmp_path / "new"
    args = ["--out", str(out), "--steps", "2", "--n-train", "2", "--batch-size", "2"]
    args += ["--crop", "32", "--lr", "1e-12", "--threads", "1", "--no-progress"]
    assert main([*args, "--init", str(old), "--widen", "6"]) == 0
    trained = load_checkpoint(out / "default.pt").model.eval()
    assert trained.config.channels == 6
    with torch.inference_mode():
        torch.testing.assert_close(trained(x), expected, rtol=1e-4, atol=1e-4)
    card = json.loads((out / "model.json").read_text())
    assert card["architecture"]["channels"] == 6
    assert "--widen 6" in card["command"] and f"--init {old}" in card["command"]

    capsys.readouterr()
    for extra, message in (
        (
            ["--init", str(old), "--widen", "4"],
            "--widen: widen to 4 channels: must be more than the network's 4",
        ),
        (["--widen", "8"], "--widen: needs --init (the weights to widen)"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*args[:1], str(tmp_path / "refused"), *args[2:], *extra])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_pretrain_half_weights_halves_the_file_and_scores_what_it_saves(tmp_path):
    # `pretrain --half-weights` stores float16 weights that load into the float32
    # network; `--rescore --half-weights` converts a float32 file to exactly the weights
    # and scores a training run with the flag would have written.
    import json
    import shutil

    from liveseg_torch.network import NetConfig, UNetLite
    from liveseg_torch.weights import Checkpoint

    torch.manual_seed(0)
    config = NetConfig(channels=8, levels=4, decoder="add")
    old = save_checkpoint(Checkpoint(model=UNetLite(config)), tmp_path / "old.pt")

    def pretrain(*extra: str) -> None:
        done = _pretrain_cli(*TINY_PRETRAIN, "--seed", "1", "--init", old, *extra)
        assert done.returncode == 0, done.stderr[-2000:]

    pretrain("--out", str(tmp_path / "full"))
    pretrain("--out", str(tmp_path / "half"), "--half-weights")
    raw = {
        name: torch.load(tmp_path / name / "default.pt", weights_only=True)["state_dict"]
        for name in ("full", "half")
    }
    assert {v.dtype for v in raw["full"].values()} == {torch.float32}
    assert {v.dtype for v in raw["half"].values()} == {torch.float16}
    sizes = {name: (tmp_path / name / "default.pt").stat().st_size for name in raw}
    assert sizes["half"] < 0.6 * sizes["full"]

    full = load_checkpoint(tmp_path / "full" / "default.pt")
    half = load_checkpoint(tmp_path / "half" / "default.pt")
    assert (full.weights_dtype, half.weights_dtype) == ("float32", "float16")
    for name, tensor in half.model.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, full.model.state_dict()[name].half().float()), name
    image = generate(seed=5, shape=(64, 64))[0]
    labels = Predictor(half, device="cpu").predict(image)[0]
    assert labels.shape == image.shape

    half_card = json.loads((tmp_path / "half" / "model.json").read_text())
    assert half_card["architecture"]["weights_dtype"] == "float16"
    assert half_card["command"].count(" --half-weights") == 1

    converted = tmp_path / "converted"
    shutil.copytree(tmp_path / "full", converted)
    done = _pretrain_cli("--out", converted, "--rescore", "--half-weights", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    stored = torch.load(converted / "default.pt", weights_only=True)["state_dict"]
    for name, tensor in stored.items():
        assert torch.equal(tensor, raw["half"][name]), name
    card = json.loads((converted / "model.json").read_text())
    assert card["architecture"]["weights_dtype"] == "float16"
    assert card["command"].count("--half-weights") == 1
    assert card["metrics"] == half_card["metrics"]


def test_pickled_code_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "liveseg-torch/unet", "obj": Path("x")}, evil)
    with pytest.raises(ModelError, match="corrupt or not a torch checkpoint"):
        load_checkpoint(evil)


def test_backend_reports_bad_model(tmp_path):
    with pytest.raises(ModelError):
        UnetBackend(UnetParams(model=str(tmp_path / "x.pt")), StepContext(home=tmp_path))


def test_resolve_weights(tmp_path, default_ckpt_path):
    assert resolve_weights("default") == default_ckpt_path
    ckpt = load_checkpoint(default_ckpt_path)
    save_checkpoint(ckpt, tmp_path / "m" / "weights.pt")
    assert resolve_weights(str(tmp_path / "m")) == tmp_path / "m" / "weights.pt"
    assert resolve_weights("m", home=tmp_path) == tmp_path / "m" / "weights.pt"
    with pytest.raises(ModelError, match="no weights"):
        (tmp_path / "empty").mkdir()
        resolve_weights(str(tmp_path / "empty"))


def test_save_load_roundtrip_keeps_settings(tmp_path, default_ckpt_path):
    ckpt = load_checkpoint(default_ckpt_path)
    copy = load_checkpoint(save_checkpoint(ckpt, tmp_path / "c.pt"))
    assert copy.decode == ckpt.decode and copy.normalize == ckpt.normalize
    for (k, a), (_, b) in zip(
        ckpt.model.state_dict().items(), copy.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k


# -- plugin wiring ------------------------------------------------------------------


def test_entry_point_registers_backend_and_trainer():
    import importlib.metadata

    import liveseg_torch.plugin
    from liveseg.plugins import PluginHost

    eps = importlib.metadata.entry_points(group="liveseg")
    assert any(ep.value == "liveseg_torch.plugin" for ep in eps)
    host = PluginHost(entry_points=False)
    host.register(liveseg_torch.plugin, name="torch")
    assert host.backends()["unet"] is UnetBackend
    assert "unet" in host.trainers()


def test_plugin_module_import_is_light():
    code = "import liveseg_torch.plugin, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_shipped_card_matches_weights(default_ckpt_path):
    import json

    card = json.loads((default_ckpt_path.parent / "model.json").read_text())
    ckpt = load_checkpoint(default_ckpt_path)
    assert card["backend"] == "unet"
    assert (default_ckpt_path.parent / card["weights"]) == default_ckpt_path
    assert card["architecture"]["channels"] == ckpt.model.config.channels
    assert card["architecture"]["levels"] == ckpt.model.config.levels
    assert card["architecture"].get("decoder", "concat") == ckpt.model.config.decoder
    assert card["representation"]["defaults"] == ckpt.decode
    assert default_ckpt_path.stat().st_size < 5 * 1024 * 1024


def test_registry_spec_resolves_through_liveseg_models(tmp_path):
    pytest.importorskip("liveseg.models")
    backend = UnetBackend(UnetParams(model="default@prod"), StepContext(home=tmp_path))
    assert backend.weights_path.is_file()
    assert tmp_path in backend.weights_path.parents
    with pytest.raises(ModelError):
        UnetBackend(UnetParams(model="nope@prod"), StepContext(home=tmp_path))


def _decode_at_full_resolution_reference(prob, dist, prob_threshold, seed_threshold, min_size):
    """Half-resolution decoding the obvious way: expand the block labels, then count."""
    from liveseg_torch.representation import _watershed

    h, w = prob.shape
    pad = ((0, h % 2), (0, w % 2))
    mask_e = np.pad(prob > prob_threshold, pad, mode="edge")
    dist_e = np.pad(dist, pad, mode="edge")
    blocks = [(i, j) for i in (0, 1) for j in (0, 1)]
    mask2 = np.logical_or.reduce([mask_e[i::2, j::2] for i, j in blocks])
    dist2 = (dist_e[0::2, 0::2] + dist_e[0::2, 1::2]) + (dist_e[1::2, 0::2] + dist_e[1::2, 1::2])
    half = _watershed(mask2, dist2 * np.float32(0.25), seed_threshold)
    labels = np.kron(half, np.ones((2, 2), dtype=np.int64))[:h, :w] * (prob > prob_threshold)
    ids, sizes = np.unique(labels, return_counts=True)
    kept = [i for i, n in zip(ids, sizes, strict=True) if i and n >= max(min_size, 1)]
    out = np.zeros((h, w), dtype=np.uint32)
    for new, old in enumerate(kept, start=1):
        out[labels == old] = new
    return out


@pytest.mark.parametrize("shape", [(256, 256), (255, 131)])
@pytest.mark.parametrize(("prob_t", "seed_t", "min_size"), [(0.5, 0.5, 8), (0.3, 0.7, 40)])
def test_half_resolution_decode_equals_the_full_resolution_reference(
    predictor, shape, prob_t, seed_t, min_size
):
    """Sizes counted on 2x2 blocks give exactly the labels of counting every pixel."""
    from liveseg_torch.representation import object_scores

    image, _ = generate(60_003, shape, "test_hard")
    prob, dist = predictor.maps(image)
    got = decode(prob, dist, prob_threshold=prob_t, seed_threshold=seed_t, min_size=min_size)
    want = _decode_at_full_resolution_reference(prob, dist, prob_t, seed_t, min_size)
    assert got.dtype == np.uint32 and int(got.max()) > 10
    np.testing.assert_array_equal(got, want)
    scores = object_scores(got, prob)
    assert sorted(scores) == list(range(1, int(got.max()) + 1))
    for i in (1, int(got.max())):
        assert scores[i] == pytest.approx(float(prob[got == i].mean()), rel=1e-6)
