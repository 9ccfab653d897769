"""Retraining orchestration with a small trainable backend (the torch e2e is separate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tifffile

from _retrain_fake import LevelPlugin, level_segment, worsen
from liveseg.errors import LivesegError
from liveseg.models import ModelRegistry, file_sha256
from liveseg.plugins import PluginHost
from liveseg.retrain.queue import ItemState, RetrainQueue
from liveseg.retrain.train import RetrainOptions, retrain
from liveseg.synthetic import generate

SHAPE = (96, 96)


def _host(trainer=None) -> PluginHost:
    host = PluginHost(entry_points=False)
    host.register(LevelPlugin(trainer) if trainer else LevelPlugin(), name="level")
    return host


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(d.iterdir())}


@pytest.fixture
def setup(tmp_path):
    home = tmp_path / "home"
    reg = ModelRegistry(home)
    w = tmp_path / "weights.json"
    w.write_text(json.dumps({"level": 0.9}))
    parent = reg.add_version("level", w, backend="level")
    reg.promote(parent.spec)
    ref = tmp_path / "ref"
    ref.mkdir()
    for k in range(6):
        img, lab = generate(100 + k, SHAPE, "sparse")
        tifffile.imwrite(ref / f"r{k}.tif", img)
        tifffile.imwrite(ref / f"r{k}_labels.tif", lab)
    q = RetrainQueue(home)
    for k in range(3):
        img, lab = generate(200 + k, SHAPE, "sparse")
        i = q.add(img, level_segment(img, 0.9), run="/runs/x", frame_index=k, reason="bad")
        q.set_labels(i, lab, who="tester")
    return home, reg, parent, ref, q


def test_retrain_promotes_better_candidate_and_keeps_parent(setup, tmp_path):
    home, reg, parent, ref, q = setup
    before = _hashes(parent.path)
    opts = RetrainOptions(
        epochs=10,
        val_dir=ref,
        base_items=2,
        base_style="sparse",
        progress=False,
        report_dir=tmp_path / "report",
    )
    out = retrain("level@prod", home, opts, host=_host())
    assert out.promoted, out.reason
    assert out.candidate_metrics["ap@0.5"] > out.parent_metrics["ap@0.5"]
    assert "better" in out.reason
    assert reg.resolve("level@prod").spec == out.candidate.spec == "level@2"
    assert _hashes(parent.path) == before
    card = out.candidate.card
    assert card["parent"] == "level@1"
    assert [i["id"] for i in card["training"]["items"]] == out.items
    assert all(i["labels_sha256"] for i in card["training"]["items"])
    assert card["training"]["base_data"]["n"] == 2
    assert card["decision"]["promoted"] is True
    assert {m["model"] for m in card["metrics"]} == {"parent", "self"}
    base = card["base_domain_check"]
    assert base["style"] == "sparse" and base["n"] == 10
    assert set(base["parent"]) >= {"ap@0.5"} and set(base["self"]) >= {"ap@0.5"}
    assert {it.state for it in q.items()} == {ItemState.USED}
    report = out.report.read_text()
    assert "level@1 (parent)" in report and "level@2" in report
    assert "Base-domain check: 10 generated 'sparse' images" in report
    for f in ("report.html", "ap_curve.png", "loss_curve.png", "worst.png", "metrics.json"):
        assert (tmp_path / "report" / f).stat().st_size > 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["results"]["level@2"]["summary"]["ap@0.5"] == out.candidate_metrics["ap@0.5"]


def test_worse_candidate_is_not_promoted_and_says_why(setup):
    home, reg, _parent, ref, _q = setup
    opts = RetrainOptions(epochs=3, val_dir=ref, base_items=1, base_style="sparse", progress=False)
    out = retrain("level@prod", home, opts, host=_host(worsen))
    assert not out.promoted
    assert out.candidate_metrics["ap@0.5"] <= out.parent_metrics["ap@0.5"]
    assert "not promoted" in out.reason and "not better" in out.reason
    assert reg.resolve("level@prod").spec == "level@1"
    assert reg.get("level", 2).card["decision"]["promoted"] is False
    assert out.report is not None and "not promoted" in out.report.read_text()
    # The corrections did not make it into prod: they stay available for the next try.
    assert {it.state for it in _q.items()} == {ItemState.CORRECTED}
    again = retrain("level@prod", home, opts, host=_host())
    assert again.promoted and again.items == out.items
    assert {it.state for it in _q.items()} == {ItemState.USED}


def test_no_reference_set_needs_force(setup):
    home, reg, _parent, _ref, _q = setup
    out = retrain(
        "level@prod", home, RetrainOptions(epochs=2, base_items=0, progress=False), host=_host()
    )
    assert not out.promoted and "no reference set" in out.reason
    assert reg.resolve("level@prod").version == 1
    out = retrain(
        "level@prod",
        home,
        RetrainOptions(epochs=2, base_items=0, progress=False, force=True, include_used=True),
        host=_host(),
    )
    assert out.promoted and "--force" in out.reason
    assert reg.history("level")[-1]["forced"] is True


def test_errors(setup, tmp_path):
    home, _reg, _parent, _ref, q = setup
    for it in q.items():
        q.mark_used([it.id], "x@1")
    with pytest.raises(LivesegError, match=r"no corrected items.*--include-used"):
        retrain("level@prod", home, RetrainOptions(progress=False), host=_host())
    with pytest.raises(LivesegError, match="no trainer for backend 'level'"):
        retrain(
            "level@prod", home, RetrainOptions(progress=False), host=PluginHost(entry_points=False)
        )


@pytest.mark.slow
def test_domain_shift_retrain_end_to_end(tmp_path):
    """The default model on a new modality: flag + correct 5 frames, retrain, +0.2 AP@0.5."""
    from click.testing import CliRunner

    from liveseg.cli import main
    from liveseg.models import builtin_models
    from liveseg.retrain.validate import ModelSegmenter

    if "default" not in builtin_models() or "unet" not in PluginHost().trainers():
        pytest.skip("needs liveseg-torch with its shipped weights")
    shape, style = (128, 128), "inverted"  # dark nuclei on a bright background
    home = tmp_path / "home"
    reg = ModelRegistry(home)
    parent = reg.resolve("default@prod")  # seeds the shipped model as default@1
    before = _hashes(parent.path)
    ref = tmp_path / "ref"
    ref.mkdir()
    for k in range(10):
        img, lab = generate(900 + k, shape, style)
        tifffile.imwrite(ref / f"ref{k}.tif", img)
        tifffile.imwrite(ref / f"ref{k}_labels.tif", lab)
    # Five frames of the new domain are flagged (what Session.flag does: the image and the
    # model's prediction go to the queue) and the operator corrects them.
    q = RetrainQueue(home)
    with ModelSegmenter(parent, home) as seg:
        for k in range(5):
            img, lab = generate(700 + k, shape, style)
            i = q.add(
                img,
                seg.segment(img),
                run=str(tmp_path / "run"),
                frame_index=k,
                reason="inverted contrast: nuclei missed",
                source="operator",
            )
            q.set_labels(i, lab, who="annotator", why="corrected all nuclei")

    report_dir = tmp_path / "report"
    res = CliRunner().invoke(
        main,
        [
            "retrain",
            "--model",
            "default@prod",
            "--from-queue",
            "--val",
            str(ref),
            "--epochs",
            "150",
            "--lr",
            "3e-3",
            "--seed",
            "0",
            "--home",
            str(home),
            "-o",
            str(report_dir),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    before_ap = out["parent_metrics"]["ap@0.5"]
    after_ap = out["candidate_metrics"]["ap@0.5"]
    print(
        f"\ndomain shift ({style}) AP@0.5: default {before_ap:.3f} -> retrained "
        f"{after_ap:.3f}; fine-tune {out['seconds']['finetune_s']:.0f} s, validate "
        f"{out['seconds']['validate_s']:.0f} s; base domain (train style) "
        f"{out['base_domain']['parent']['ap@0.5']:.3f} -> "
        f"{out['base_domain']['self']['ap@0.5']:.3f}"
    )
    assert out["promoted"], out["reason"]
    assert after_ap - before_ap >= 0.2
    # The generated base data keeps most of what the parent could do on its own domain.
    assert out["base_domain"]["self"]["ap@0.5"] >= out["base_domain"]["parent"]["ap@0.5"] - 0.15
    assert reg.resolve("default@prod").spec == out["candidate"] == "default@2"
    assert _hashes(parent.path) == before  # parent files byte-identical
    report = (report_dir / "report.md").read_text()
    assert "default@1 (parent)" in report and "default@2" in report
    assert f"{before_ap:.3f}" in report and f"{after_ap:.3f}" in report
    # The promoted model, validated on its own through the CLI, scores what the report says.
    res = CliRunner().invoke(
        main,
        [
            "validate",
            str(ref),
            "--model",
            "default@prod",
            "--home",
            str(home),
            "--json",
            "-o",
            str(tmp_path / "val"),
        ],
    )
    assert res.exit_code == 0, res.output
    # Each row is keyed by the spec the user typed and the version it meant.
    assert json.loads(res.stdout)["default@prod (default@2)"]["ap@0.5"] == pytest.approx(after_ap)


def test_decision_rules():
    from liveseg.retrain.train import _decide

    p = {"ap@0.5": 0.40}
    c = {"ap@0.5": 0.60}
    assert _decide(p, c, RetrainOptions())[0]
    ok, why = _decide(p, c, RetrainOptions(min_gain=0.3))
    assert not ok and "min_gain 0.3" in why
    ok, why = _decide(c, p, RetrainOptions())
    assert not ok and "ap@0.5 0.400 vs parent 0.600" in why
    ok, why = _decide(c, p, RetrainOptions(force=True))
    assert ok and "--force although not better" in why
    # Better on the target but forgets the base domain beyond max_drop: refused.
    guard = ({"ap@0.5": 0.85}, {"ap@0.5": 0.60})
    ok, why = _decide(p, c, RetrainOptions(max_drop=0.1), guard)
    assert not ok and "forgets the base domain" in why and "0.600 vs parent 0.850" in why
    assert _decide(p, c, RetrainOptions(max_drop=0.3), guard)[0]
    assert _decide(p, c, RetrainOptions(), guard)[0]  # informational without max_drop
    with pytest.raises(LivesegError, match="unknown metric"):
        _decide(p, c, RetrainOptions(metric="f1"))


def test_validate_cli_prints_each_row_with_its_own_spec(setup, tmp_path):
    from click.testing import CliRunner

    from liveseg.cli import main

    home, _reg, _parent, ref, _q = setup
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "level_plugin.py").write_text(
        "from _retrain_fake import LevelBackend\n"
        "from liveseg import hookimpl\n\n\n"
        "@hookimpl\n"
        "def register_backends(register):\n"
        "    register('level', LevelBackend)\n"
    )
    args = ["validate", str(ref), "--model", "level@1", "--model", "level@prod"]
    res = CliRunner().invoke(main, [*args, "--plugins-dir", str(plugins), "--home", str(home)])
    assert res.exit_code == 0, res.output
    rows = [ln for ln in res.stdout.splitlines() if "AP@0.5" in ln]
    assert [r.split(": AP")[0] for r in rows] == ["level@1", "level@prod (level@1)"]
    # Same model, same numbers: the rows differ only by the name the user typed.
    assert rows[0].split(": AP")[1] == rows[1].split(": AP")[1]
