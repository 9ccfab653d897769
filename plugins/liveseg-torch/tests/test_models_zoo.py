"""The shipped models: registered by name, carded, usable end to end, fine-tunable."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from click.testing import CliRunner

from liveseg.synthetic import generate_sample
from liveseg.types import TrainItem
from liveseg_torch.plugin import SHIPPED_MODELS

NAMES = [name for name, _, _ in SHIPPED_MODELS]


def _directory(name: str) -> Path:
    from liveseg.plugins import shipped_models

    return shipped_models()[name]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_is_registered_with_a_card(name):
    from liveseg_torch.weights import load_checkpoint

    directory = _directory(name)
    card = json.loads((directory / "model.json").read_text())
    weights = directory / card["weights"]
    assert card["backend"] == "unet"
    assert weights.stat().st_size < 4 * 2**20
    assert load_checkpoint(weights).model.config.levels in (3, 4)
    if name != "nuclei":
        assert card["name"] == name
        assert card["intended_use"]["for"] and card["intended_use"]["not_for"]
        assert card["training_data"]["kind"] == name
        assert card["metrics"]["test"]["frames"] == 24
        assert card["speed"]["frames_per_s"] > 0
        assert f"--kind {name}" in card["command"]
        assert card["training"]["seconds"]["total"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_segment_with_each_model_on_a_fresh_home(tmp_path, name):
    from liveseg.cli import main
    from liveseg.commands.try_models import resolve_model_spec

    kind = "nuclei" if name == "nuclei" else name
    img, _ = generate_sample(kind, 321, (192, 192), "test")
    tifffile.imwrite(tmp_path / "img.tif", img)
    steps = [s.model_dump() for s in resolve_model_spec(name)]
    cfg = tmp_path / "chain.yaml"
    cfg.write_text(yaml.safe_dump({"pipeline": {"steps": steps}}))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        [
            "segment",
            str(tmp_path / "img.tif"),
            "-o",
            str(out),
            "--config",
            str(cfg),
            "--home",
            str(tmp_path / "fresh-home"),
        ],
    )
    assert res.exit_code == 0, res.output
    labels = tifffile.imread(out / "img_labels.tif")
    assert labels.shape == img.shape and labels.max() > 0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_model_fine_tunes(tmp_path, name):
    from liveseg_torch.finetune import finetune
    from liveseg_torch.inference import Predictor
    from liveseg_torch.weights import load_checkpoint

    torch.set_num_threads(1)
    directory = _directory(name)
    parent = directory / json.loads((directory / "model.json").read_text())["weights"]
    before = {p.name: _digest(p) for p in directory.iterdir() if p.is_file()}
    # Frames of its own type in the harder held-out style, at other seeds.
    items = [
        TrainItem(*generate_sample(name, 700 + i, (128, 128), "test"), name=f"i{i}")
        for i in range(4)
    ]
    result = finetune(
        parent,
        items,
        tmp_path / "ft",
        epochs=5,
        seed=1,  # the trainer's default learning rate, as `liveseg retrain` uses it
        val_items=items,
        progress=False,
    )
    assert result.val_losses[-1] < result.hyperparameters["val_loss_before"]
    base, tuned = load_checkpoint(parent), load_checkpoint(result.weights_path)
    assert tuned.weights_dtype == "float32"  # also from half-size shipped weights
    p0, _ = Predictor(base, device="cpu").maps(items[0].image)
    p1, _ = Predictor(tuned, device="cpu").maps(items[0].image)
    assert np.mean(np.abs(p0 - p1)) > 1e-3
    assert {p.name: _digest(p) for p in directory.iterdir() if p.is_file()} == before
    card = json.loads((tmp_path / "ft" / "model.json").read_text())
    assert card["parent"] == str(parent)
    # It decodes as its parent was scored (bacteria: full resolution).
    assert card.get("step_params") == json.loads((directory / "model.json").read_text()).get(
        "step_params"
    )


def test_a_chain_step_naming_a_model_decodes_as_its_card_says(tmp_path):
    """``params: {model: bacteria}`` in a config decodes at full resolution, like
    ``--model bacteria``: thin rods are what its card's ``step_params`` were scored with."""
    from liveseg.pipeline import StepContext
    from liveseg.types import Frame
    from liveseg_torch.plugin import UnetBackend, UnetParams

    ctx = StepContext(home=tmp_path / "home", threads=1)

    def step(**kw):
        return UnetBackend(UnetParams(runtime="torch", **kw), ctx)

    assert json.loads((_directory("bacteria") / "model.json").read_text())["step_params"] == {
        "decode_scale": 1
    }
    named, full, half = (
        step(model="bacteria"),
        step(model="bacteria", decode_scale=1),
        step(model="bacteria", decode_scale=2),
    )
    assert step(model="nuclei").predictor.decode_scale == 2
    # A low-magnification colony of rods 3-8 px wide (seed 2_000_006 of the test set).
    frame = Frame(index=0, image=generate_sample("bacteria", 2_000_006, (256, 256), "test")[0])
    got = named.segment(frame, None).labels
    assert np.array_equal(got, full.segment(frame, None).labels)
    assert not np.array_equal(got, half.segment(frame, None).labels)


@pytest.mark.slow
def test_thresholds_are_picked_on_the_hard_validation_frames_too():
    """Cells, bacteria and transmitted pick decoding thresholds on their `val` preset too."""
    from liveseg.synthetic import iter_samples
    from liveseg_torch.pretrain import kind_sets

    val, test = kind_sets("cells")
    hard = next(iter_samples("cells", 1, 1, (256, 256), "val"))
    assert len(val) == 16 + 24 and len(test) == 24
    assert any(np.array_equal(img, hard[0]) for img, _ in val)
    assert not any(np.array_equal(img, t) for img, _ in val for t, _ in test)
    val_b, _ = kind_sets("bacteria")
    assert len(val_b) == 16 + 24


@pytest.mark.slow
def test_paired_bootstrap_command_tells_a_real_gain_from_none():
    """The README's comparison command on shipped weights: a model against itself gains
    nothing in any draw; the transmitted model against the nuclei model, on transmitted
    frames, gains in every draw."""
    script = Path(__file__).parents[3] / "benchmarks" / "paired_bootstrap.py"

    def compare(parent: Path, candidate: Path) -> dict:
        args = [sys.executable, str(script), "transmitted", str(parent), str(candidate)]
        done = subprocess.run(
            [*args, "--draws", "500"], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    def weights(name: str) -> Path:
        directory = _directory(name)
        return directory / json.loads((directory / "model.json").read_text())["weights"]

    same = compare(weights("transmitted"), weights("transmitted"))["val"]
    assert same["difference"] == 0 and same["ci90"] == [0, 0]
    assert same["p_candidate_ahead"] == 0 and same["frames"] == 40
    gain = compare(weights("nuclei"), weights("transmitted"))
    assert gain["val"]["candidate"] == same["candidate"]
    assert gain["val"]["difference"] > 0.2 and gain["val"]["ci90"][0] > 0
    assert gain["val"]["p_candidate_ahead"] == 1.0
    assert gain["decode_scale"] == {"parent": 2, "candidate": 2}
