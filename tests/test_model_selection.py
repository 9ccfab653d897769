"""Choosing a model: ``--model NAME|name@N|path`` on every command, on a fresh home.

What a person does: ``liveseg segment img.tif -o out --model bacteria`` without having
registered anything, ``run`` / ``batch`` / ``validate`` / ``retrain`` the same way, and a
typo gives one line that lists what exists. The shipped models come from liveseg-torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from click.testing import CliRunner

from liveseg.cli import main
from liveseg.synthetic import generate_sample

pytest.importorskip("liveseg_torch")

NAMES = ("nuclei", "cells", "bacteria", "transmitted")


def _liveseg(*args: str) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _image(folder: Path, kind: str, seed: int = 5, size: int = 128, labels: bool = True) -> Path:
    """A held-out-style synthetic frame of ``kind`` (and its ``_labels.tif`` beside it)."""
    img, lab = generate_sample(kind, seed, (size, size), "test")
    path = folder / f"{kind}{seed}.tif"
    tifffile.imwrite(path, img)
    if labels:
        tifffile.imwrite(folder / f"{kind}{seed}_labels.tif", lab)
    return path


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


def _shipped(name: str) -> Path:
    from liveseg.plugins import shipped_models

    return shipped_models()[name]


def _run_model(run_dir: Path) -> str:
    """The model parameter of the unet step a run (or segment output) recorded."""
    info = json.loads((run_dir / "run.json").read_text())
    steps = info["config"]["pipeline"]["steps"]
    return next(s["params"]["model"] for s in steps if s["backend"] == "unet")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_segment_with_a_shipped_model_by_name_on_a_fresh_home(tmp_path, name):
    img = _image(tmp_path, name)
    home, out = tmp_path / "fresh-home", tmp_path / "out"
    res = _liveseg("segment", img, "-o", out, "--model", name, "--home", home)
    assert res.exit_code == 0, res.output
    labels = tifffile.imread(out / f"{img.stem}_labels.tif")
    assert labels.shape == (128, 128) and labels.max() > 0
    # First use registered the shipped model as NAME@1 (prod) and the run pins it.
    assert _run_model(out) == f"{name}@1"
    assert json.loads((home / "models" / name / "aliases.json").read_text()) == {"prod": 1}
    assert (
        _hashes(home / "models" / name / "1")["default.pt"]
        == _hashes(_shipped(name))["default.pt"]
    )


@pytest.mark.slow
def test_every_spec_form_runs_the_same_weights(tmp_path):
    img = _image(tmp_path, "cells")
    home = tmp_path / "home"
    folder = _shipped("cells")
    specs = {
        "name": ("cells", "cells@1"),
        "version": ("cells@1", "cells@1"),
        "alias": ("cells@prod", "cells@1"),
        "folder": (str(folder), str(folder.resolve())),
        "file": (str(folder / "default.pt"), str((folder / "default.pt").resolve())),
    }
    labels = {}
    for form, (spec, pinned) in specs.items():
        out = tmp_path / form
        res = _liveseg("segment", img, "-o", out, "--model", spec, "--home", home)
        assert res.exit_code == 0, (form, res.output)
        assert _run_model(out) == pinned
        labels[form] = tifffile.imread(out / f"{img.stem}_labels.tif")
    assert labels["name"].max() > 0
    for form, lab in labels.items():
        np.testing.assert_array_equal(lab, labels["name"], err_msg=form)


@pytest.mark.slow
def test_segment_model_keeps_the_configs_own_settings(tmp_path):
    """``--config`` chain + ``--model``: only the model changes, the step's thresholds stay."""
    img = _image(tmp_path, "bacteria")
    cfg = tmp_path / "chain.yaml"
    unet = {"backend": "unet", "params": {"model": "nuclei", "prob_threshold": 0.7}}
    size = {"backend": "size_filter", "params": {"min_area": 4}}
    cfg.write_text(yaml.safe_dump({"pipeline": {"steps": [unet, size]}}))
    out = tmp_path / "out"
    res = _liveseg(
        "segment", img, "-o", out, "--config", cfg, "--model", "bacteria", "--home", tmp_path / "h"
    )
    assert res.exit_code == 0, res.output
    steps = json.loads((out / "run.json").read_text())["config"]["pipeline"]["steps"]
    assert [s["backend"] for s in steps] == ["unet", "size_filter"]
    assert steps[0]["params"]["model"] == "bacteria@1"
    assert steps[0]["params"]["prob_threshold"] == 0.7
    assert steps[1]["params"]["min_area"] == 4


def test_segment_classical_needs_no_model(tmp_path):
    img = _image(tmp_path, "nuclei")
    out = tmp_path / "out"
    res = _liveseg("segment", img, "-o", out, "--model", "classical", "--home", tmp_path / "h")
    assert res.exit_code == 0, res.output
    steps = json.loads((out / "run.json").read_text())["config"]["pipeline"]["steps"]
    assert [s["backend"] for s in steps] == ["normalize", "threshold", "size_filter"]
    assert not (tmp_path / "h" / "models" / "nuclei").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["segment", "{img}", "-o", "{out}"],
        ["batch", "{src}", "-o", "{out}"],
        ["validate", "{src}"],
        ["retrain"],
    ],
)
def test_unknown_model_is_one_line_naming_the_shipped_models(tmp_path, command):
    img = _image(tmp_path, "cells")
    out = tmp_path / "out"
    args = [a.format(img=img, out=out, src=tmp_path) for a in command]
    res = _liveseg(*args, "--model", "cellz", "--home", tmp_path / "h")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no model named 'cellz'"), res.output
    for name in NAMES:
        assert name in lines[0]
    assert not out.exists()
    res = _liveseg(*args, "--model", str(tmp_path / "missing" / "w.pt"), "--home", tmp_path / "h")
    assert res.exit_code == 2 and "no such model folder or weights file" in res.output


def test_models_list_shows_the_shipped_models_with_their_purpose(tmp_path):
    from liveseg_torch.plugin import SHIPPED_MODELS

    home = tmp_path / "fresh"
    res = _liveseg("models", "list", "--home", home)
    assert res.exit_code == 0, res.output
    for name, _, purpose in SHIPPED_MODELS:
        line = next(ln for ln in res.output.splitlines() if ln.split()[:1] == [name])
        assert purpose in line
    assert "registered" in res.output.splitlines()[-1]  # nothing registered yet
    rows = json.loads(_liveseg("models", "list", "--json", "--home", home).output)
    assert {r["spec"] for r in rows if r["shipped"]} == set(NAMES)
    # Once used, a shipped model shows as its registered version, with its purpose.
    assert _liveseg("models", "show", "bacteria", "--home", home).exit_code == 0
    rows = json.loads(_liveseg("models", "list", "--json", "--home", home).output)
    bacteria = [r for r in rows if r["spec"].startswith("bacteria")]
    assert [(r["spec"], r["shipped"], r["aliases"]) for r in bacteria] == [
        ("bacteria@1", False, ["prod"])
    ]
    assert bacteria[0]["purpose"] == {n: p for n, _, p in SHIPPED_MODELS}["bacteria"]


def test_a_chain_steps_shipped_name_means_its_promoted_version(tmp_path):
    """``model: cells`` in a config follows ``cells@prod`` once the name is registered."""
    from liveseg_torch.plugin import resolve_weights

    home = tmp_path / "home"
    assert resolve_weights("cells", home) == _shipped("cells") / "default.pt"
    assert _liveseg("models", "clone", "cells", "--home", home).exit_code == 0  # cells@1, @2
    assert resolve_weights("cells", home) == home / "models" / "cells" / "1" / "default.pt"
    assert _liveseg("models", "promote", "cells@2", "--home", home).exit_code == 0
    assert resolve_weights("cells", home) == home / "models" / "cells" / "2" / "default.pt"


@pytest.mark.slow
def test_batch_and_validate_take_shipped_names_on_a_fresh_home(tmp_path):
    src, ref = tmp_path / "src", tmp_path / "ref"
    src.mkdir()
    ref.mkdir()
    for seed in (11, 12):
        _image(src, "cells", seed, labels=False)
        _image(ref, "cells", seed)
    home = tmp_path / "home"
    res = _liveseg(
        "batch", src, "-o", tmp_path / "out", "--model", "cells", "--home", home, "--json"
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"] == 2
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["model"] == "cells@1"
    assert [s["params"].get("model") for s in info["chain"]] == ["cells@1", None]
    folder = str(_shipped("cells"))
    models = ["--model", "cells", "--model", "bacteria", "--model", folder]
    res = _liveseg("validate", ref, *models, "--home", home, "--json")
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    # On whole cells the cells model beats the rod model; its folder scores as its name.
    assert scores["cells (cells@1)"]["ap@0.5"] > scores["bacteria (bacteria@1)"]["ap@0.5"]
    assert scores[folder] == scores["cells (cells@1)"]
    history = (home / "models" / "cells" / "history.jsonl").read_text().splitlines()
    assert [json.loads(h)["event"] for h in history] == ["promote", "validate"]


@pytest.mark.slow
@pytest.mark.hardware
def test_run_overrides_the_config_model_step(tmp_path):
    from liveseg.testing import classical_config

    cfg = classical_config(
        pipeline={
            "steps": [
                {"backend": "unet", "params": {"model": "nuclei", "seed_threshold": 0.55}},
                {"backend": "size_filter", "params": {"min_area": 15}},
            ]
        },
        sequence={"time_plan": {"interval": 0, "loops": 2}},
    )
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = tmp_path / "run"
    res = _liveseg("run", path, "-o", out, "--model", "transmitted", "--home", tmp_path / "h")
    assert res.exit_code == 0, res.output
    steps = json.loads((out / "run.json").read_text())["config"]["pipeline"]["steps"]
    assert steps[0]["params"] == {"model": "transmitted@1", "seed_threshold": 0.55}
    assert "frames segmented" in res.output


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_retrain_fine_tunes_each_shipped_model(tmp_path, name):
    """``retrain --model NAME`` on a fresh home: loss goes down, output changes, parent intact."""
    from liveseg_torch.inference import Predictor
    from liveseg_torch.weights import load_checkpoint

    home = tmp_path / "home"
    shipped_before = _hashes(_shipped(name))
    img = _image(tmp_path, name, seed=40, size=96)
    res = _liveseg(
        "queue", "add", img, "--labels", tmp_path / f"{img.stem}_labels.tif", "--home", home
    )
    assert res.exit_code == 0, res.output
    args = ["--epochs", "4", "--base-items", "1", "--guard-images", "0", "--seed", "0"]
    res = _liveseg("retrain", "--model", name, *args, "--home", home, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["parent"], out["candidate"]) == (f"{name}@1", f"{name}@2")
    card = json.loads((home / "models" / name / "2" / "model.json").read_text())
    losses = card["training"]["train_losses"]
    assert losses[-1] < losses[0]
    # The generated base data is of the model's own sample type.
    assert card["training"]["base_data"]["kind"] == name
    parent_dir, child_dir = home / "models" / name / "1", home / "models" / name / "2"
    image = tifffile.imread(img)
    p0, _ = Predictor(load_checkpoint(parent_dir / "default.pt"), device="cpu").maps(image)
    p1, _ = Predictor(load_checkpoint(child_dir / card["weights"]), device="cpu").maps(image)
    assert np.mean(np.abs(p0 - p1)) > 1e-4
    assert _hashes(parent_dir)["default.pt"] == shipped_before["default.pt"]
    assert _hashes(_shipped(name)) == shipped_before


@pytest.mark.slow
def test_retrain_a_model_folder_registers_it_first(tmp_path):
    home = tmp_path / "home"
    img = _image(tmp_path, "cells", seed=41, size=96)
    labels = tmp_path / f"{img.stem}_labels.tif"
    assert _liveseg("queue", "add", img, "--labels", labels, "--home", home).exit_code == 0
    exported = tmp_path / "exported"
    assert _liveseg("models", "export", "cells", "-o", exported, "--home", home).exit_code == 0
    before = _hashes(exported)
    args = ["--epochs", "1", "--base-items", "1", "--guard-images", "0", "--json"]
    res = _liveseg("retrain", "--model", exported, *args, "--home", home)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["parent"], out["candidate"]) == ("cells@2", "cells@3")  # @1: the export's source
    assert _hashes(exported) == before
    res = _liveseg("retrain", "--model", exported / "default.pt", *args, "--home", home)
    assert res.exit_code == 2 and "not the weights file" in res.output
