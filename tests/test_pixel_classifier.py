"""The random-forest pixel classifier: scribbles → model directory → live step, safely."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from liveseg.builtins import pixel_classifier as pc
from liveseg.config import StepConfig
from liveseg.errors import ModelError
from liveseg.materials import porous_section
from liveseg.pipeline import Pipeline, StepContext
from liveseg.types import Frame, FrameStatus, TrainItem


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def pore_model(tmp_path_factory):
    """A classifier trained from ≤ 2 % scribbles of one generated porous image, saved."""
    sec = porous_section(3, (384, 384), style="train")
    scribbles = pc.scribbles_from_classes(sec.classes, 0.02, seed=1)
    assert 0 < (scribbles > 0).mean() <= 0.02
    model = pc.train([sec.image], [scribbles], class_names=sec.class_names)
    return pc.save(model, tmp_path_factory.mktemp("models") / "pores-mine")


def test_scribble_trained_forest_segments_other_images_of_the_style(pore_model):
    model = pc.load(pore_model)
    ious = []
    for seed in (20, 21, 22):
        sec = porous_section(seed, (384, 384), style="train")
        pred = model.predict(sec.image)
        ious.append(_iou(pred == 1, sec.classes == 1))
    assert min(ious) >= 0.9, ious


def test_saved_model_reloads_to_the_same_predictions(pore_model):
    sec = porous_section(30, (128, 128))
    a = pc.load(pore_model).predict(sec.image)
    b = pc.load(pore_model / "model.json").predict(sec.image)
    assert a.dtype == np.uint8
    assert np.array_equal(a, b)
    card = json.loads((pore_model / "model.json").read_text())
    assert card["format"] == pc.FOREST_FORMAT and card["classes"] == ["matrix", "pore"]


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, pore_model):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    d = tmp_path / "evil"
    shutil.copytree(pore_model, d)
    weights = d / "forest.npz"
    weights.write_bytes(pickle.dumps(Exploit()))
    card = json.loads((d / "model.json").read_text())
    card["weights_sha256"] = pc._sha256(weights)  # even with a matching digest
    (d / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError) as err:
        pc.load(d)
    assert not marker.exists()
    assert "\n" not in str(err.value) and "forest.npz" in str(err.value)


def test_object_array_inside_an_npz_is_refused(tmp_path, pore_model):
    d = tmp_path / "objarr"
    shutil.copytree(pore_model, d)
    with np.load(d / "forest.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["value"] = np.array([{"a": 1}], dtype=object)
    np.savez(d / "forest.npz", **arrays)
    card = json.loads((d / "model.json").read_text())
    card["weights_sha256"] = pc._sha256(d / "forest.npz")
    (d / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"forest\.npz"):
        pc.load(d)


def test_tampered_forest_fails_the_digest_check(tmp_path, pore_model):
    d = tmp_path / "tampered"
    shutil.copytree(pore_model, d)
    with open(d / "forest.npz", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ModelError, match="sha256"):
        pc.load(d)


def test_step_from_config_returns_class_map_and_pores(liveseg_host, tmp_path, pore_model):
    steps = [
        StepConfig(
            backend="pixel_classifier",
            params={"model": str(pore_model), "foreground": ["pore"], "min_area": 4},
        )
    ]
    chain = Pipeline.build(steps, liveseg_host.backends(), StepContext(tmp_path, threads=1))
    sec = porous_section(40, (256, 256))
    result = chain.run(Frame(0, sec.image))
    assert result.status is FrameStatus.OK, result.error
    assert result.classes is not None and result.classes.dtype == np.uint8
    assert result.class_names == ("matrix", "pore")
    assert result.count > 0
    assert _iou(result.labels > 0, sec.classes == 1) >= 0.85


def test_unknown_foreground_class_is_one_clear_error(liveseg_host, tmp_path, pore_model):
    steps = [
        StepConfig(
            backend="pixel_classifier", params={"model": str(pore_model), "foreground": ["x"]}
        )
    ]
    with pytest.raises(ModelError, match="not in the model"):
        Pipeline.build(steps, liveseg_host.backends(), StepContext(tmp_path))


def test_registered_trainer_learns_a_correction_without_touching_the_parent(
    liveseg_host, tmp_path, pore_model
):
    finetune = liveseg_host.trainers()["pixel_classifier"]
    before = (pore_model / "forest.npz").read_bytes()
    # A new imaging mode (pores brighter than the matrix): the annotator scribbles one image.
    sec = porous_section(50, (256, 256), style="test", pore_level=(1.05, 1.15))
    painted = pc.scribbles_from_classes(sec.classes, 0.02, seed=2) > 0
    item = TrainItem(image=sec.image, labels=sec.classes, valid=painted, name="scribbled")
    result = finetune(pore_model / "forest.npz", [item], tmp_path / "out", epochs=1)
    assert (pore_model / "forest.npz").read_bytes() == before
    child, parent = pc.load(tmp_path / "out"), pc.load(pore_model)
    held = porous_section(51, (256, 256), style="test", pore_level=(1.05, 1.15))
    truth = held.classes == 1
    child_iou = _iou(child.predict(held.image) == 1, truth)
    parent_iou = _iou(parent.predict(held.image) == 1, truth)
    assert child_iou > parent_iou + 0.05, (child_iou, parent_iou)
    assert result.weights_path.endswith("forest.npz")


def test_no_scribbles_is_a_clear_error():
    img = np.zeros((32, 32), np.uint16)
    with pytest.raises(ModelError, match="no painted pixels"):
        pc.train([img], [np.zeros((32, 32), np.uint8)])


def test_scribble_correction_flows_queue_retrain_validate_promote(liveseg_home, tmp_path):
    """A scribbled pore correction: queue → retrain → validate on references → promote."""
    import tifffile

    # The parent: the shipped pores model, registered like any imported model.
    from liveseg.materials.shipped import shipped_dir
    from liveseg.models import ModelRegistry
    from liveseg.retrain.queue import RetrainQueue
    from liveseg.retrain.train import RetrainOptions, retrain

    registry = ModelRegistry(liveseg_home)
    registry.import_dir(shipped_dir("pores"), name="pores", promote=True)
    # The microscope now images bright pores; the operator scribbles two flagged frames.
    from skimage.segmentation import relabel_sequential

    shift = {"style": "test", "pore_level": (1.05, 1.15)}
    queue = RetrainQueue(liveseg_home)
    for seed in (60, 61):
        frame = porous_section(seed, (192, 192), **shift)
        painted = pc.scribbles_from_classes(frame.classes, 0.02, seed=seed) > 0
        # Only what was painted, numbered 1..N as the queue wants.
        scribbled = relabel_sequential(np.where(painted, frame.labels, 0))[0].astype(np.uint32)
        queue.add(frame.image, labels=scribbled, valid=painted, reason="bright pores missed")
    refs = tmp_path / "refs"
    refs.mkdir()
    for k in range(2):
        ref = porous_section(70 + k, (192, 192), **shift)
        tifffile.imwrite(refs / f"ref{k}.tif", ref.image)
        tifffile.imwrite(refs / f"ref{k}_labels.tif", ref.labels)
    opts = RetrainOptions(
        base_items=0, guard_images=0, val_dir=refs, progress=False, metric="ap@0.5"
    )
    outcome = retrain("pores@prod", liveseg_home, opts)
    assert outcome.promoted, outcome.reason
    assert outcome.candidate_metrics["ap@0.5"] > outcome.parent_metrics["ap@0.5"] + 0.2, (
        outcome.parent_metrics,
        outcome.candidate_metrics,
    )
    assert registry.resolve("pores@prod").spec == outcome.candidate.spec
    # The promoted candidate is a safe forest again (loads through the same checks).
    assert pc.load("pores@prod", liveseg_home).class_names == ("matrix", "pore")


def test_min_probability_lets_a_class_win_below_the_argmax(pore_model):
    model = pc.load(pore_model)
    sec = porous_section(31, (128, 128))
    plain = model.predict(sec.image)
    eager = model.predict(sec.image, min_probability={"pore": 0.05})
    assert (eager == 1).sum() > (plain == 1).sum()
    assert np.all(eager[plain == 1] == 1)
    with pytest.raises(ModelError, match="not in"):
        model.predict(sec.image, min_probability={"crack": 0.5})
