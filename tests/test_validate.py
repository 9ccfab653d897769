"""Validation: reference sets, metrics with valid regions, reports, model chains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from liveseg.errors import ConfigError, LivesegError
from liveseg.models import ModelVersion
from liveseg.retrain.validate import (
    evaluate,
    load_reference_set,
    model_steps,
    restrict_to_valid,
    write_report,
)
from liveseg.synthetic import generate


@pytest.fixture
def ref_dir(tmp_path):
    d = tmp_path / "ref"
    d.mkdir()
    for k in range(3):
        img, lab = generate(k, (80, 80), "sparse")
        tifffile.imwrite(d / f"im{k}.tif", img)
        tifffile.imwrite(d / f"im{k}_labels.tif", lab)
    valid = np.zeros((80, 80), np.uint8)
    valid[:, :40] = 1
    lab0 = tifffile.imread(d / "im0_labels.tif")
    assert lab0[:, :40].any()  # the seeded frame has objects in the valid region
    tifffile.imwrite(d / "im0_valid.tif", valid)
    return d


def test_load_reference_set(ref_dir, tmp_path):
    refs = load_reference_set(ref_dir)
    assert [r.name for r in refs] == ["im0", "im1", "im2"]
    assert refs[0].valid is not None and refs[1].valid is None
    assert refs[1].labels.dtype == np.uint32
    (ref_dir / "lonely.tif").write_bytes((ref_dir / "im1.tif").read_bytes())
    with pytest.raises(ConfigError, match=r"lonely\.tif has no lonely_labels\.tif"):
        load_reference_set(ref_dir)
    with pytest.raises(ConfigError, match="not a directory"):
        load_reference_set(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        load_reference_set(tmp_path / "empty")


def test_restrict_to_valid_keeps_objects_mostly_inside():
    lab = np.zeros((10, 10), np.uint32)
    lab[0:4, 0:4] = 1  # fully inside
    lab[5:9, 3:7] = 2  # 1 of 4 columns inside → dropped
    valid = np.zeros((10, 10), bool)
    valid[:, :4] = True
    kept = restrict_to_valid(lab, valid)
    assert set(np.unique(kept)) == {0, 1}
    assert restrict_to_valid(lab, None) is lab


def test_evaluate_perfect_empty_and_valid_region(ref_dir):
    refs = load_reference_set(ref_dir)
    perfect = evaluate("perfect", refs, {r.name: r.labels for r in refs})
    s = perfect.summary()
    assert s["ap@0.5"] == s["ap@0.9"] == 1.0 and s["mean_matched_iou"] == 1.0
    empty = evaluate("empty", refs, {r.name: np.zeros_like(r.labels) for r in refs})
    assert empty.summary()["ap@0.5"] == 0.0 and empty.summary()["recall@0.5"] == 0.0
    # Outside im0's valid region, predictions are neither rewarded nor punished.
    preds = {r.name: r.labels for r in refs}
    noisy = refs[0].labels.copy()
    noisy[:, 45:] = 0  # drop everything right of the valid region
    noisy[70:75, 70:75] = noisy.max() + 1  # and add a spurious object there
    preds["im0"] = noisy
    assert evaluate("x", refs, preds).summary()["ap@0.5"] == 1.0
    assert len(perfect.curve()) == 10 and perfect.per_image[0]["name"] == "im0"


def test_report_files(ref_dir, tmp_path):
    refs = load_reference_set(ref_dir)
    good = evaluate("parent", refs, {r.name: r.labels for r in refs})
    bad = evaluate("candidate", refs, {r.name: np.zeros_like(r.labels) for r in refs})
    report = write_report(
        tmp_path / "rep",
        refs,
        [good, bad],
        decision="not promoted: worse",
        losses={"train": [1.0, 0.5], "validation": [1.2, 0.9]},
    )
    md = report.read_text()
    assert "| ap@0.5 | 1.000 | 0.000 |" in md and "not promoted: worse" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<table>" in html and "worst.png" in html
    for png in ("ap_curve.png", "loss_curve.png", "worst.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["results"]["candidate"]["summary"]["ap@0.5"] == 0.0


def test_model_steps_swaps_the_model_step(tmp_path):
    mv = ModelVersion("nuclei", 3, tmp_path, {"backend": "unet", "weights": "w.pt"})
    steps = model_steps(mv, ["unet", "size_filter", "threshold", "normalize"])
    unet = [s for s in steps if s.backend == "unet"]
    assert unet and unet[0].params["model"] == "nuclei@3"
    cp = ModelVersion("cp", 1, tmp_path, {"backend": "cellpose"})
    steps = model_steps(cp, ["cellpose", "size_filter"])
    assert steps[0].backend == "cellpose" and steps[0].params["model"] == "cp@1"
    with pytest.raises(LivesegError, match="needs backend 'cellpose'"):
        model_steps(cp, ["threshold"])
