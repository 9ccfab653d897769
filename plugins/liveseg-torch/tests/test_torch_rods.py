"""Thin touching rods: the ``foreground+interior`` representation and the full-resolution head."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from liveseg.errors import ModelError
from liveseg.metrics import aggregate, average_precision
from liveseg.synthetic import generate_bacteria
from liveseg_torch.network import NetConfig, UNetLite
from liveseg_torch.representation import (
    FG_INTERIOR,
    decode,
    decode_interior,
    interior_targets,
    targets,
)
from liveseg_torch.weights import Checkpoint, load_checkpoint, save_checkpoint


def test_interior_maps_of_the_truth_decode_to_the_truth_where_distance_maps_merge_rods():
    """A dense colony of thin rods: ideal interior maps separate them, distance maps do not."""
    frames = [generate_bacteria(seed, (256, 256), "train") for seed in (74, 76)]
    assert sum(int(lab.max()) for _, lab in frames) > 300  # hundreds of touching rods
    interior = aggregate(
        average_precision(lab, decode_interior(*interior_targets(lab))) for _, lab in frames
    )
    normdist = aggregate(average_precision(lab, decode(*targets(lab))) for _, lab in frames)
    assert interior.ap[0.5] >= 0.95
    assert normdist.ap[0.5] < 0.6  # why the bacteria model needs the new representation


def test_interior_targets_leave_a_two_pixel_seam_between_touching_objects():
    lab = np.zeros((12, 20), dtype=np.uint32)
    lab[2:9, 2:10] = 1
    lab[2:9, 10:18] = 2  # touching along column 9 / 10
    fg, core = interior_targets(lab)
    assert fg.sum() == (lab > 0).sum()
    assert not core[:, 9:11].any()  # the rims on both sides of the seam
    assert core[3:8, 3:9].all() and core[3:8, 11:17].all()
    assert np.array_equal(np.unique(decode_interior(fg, core, min_size=1)), [0, 1, 2])
    # Cut by the frame edge: the object keeps its interior up to the edge.
    assert interior_targets(lab[:, 4:])[1][3:8, 0].all()


def test_decode_interior_of_empty_maps_is_empty():
    z = np.zeros((32, 32), dtype=np.float32)
    out = decode_interior(z, z)
    assert out.dtype == np.uint32 and not out.any()


def _rod_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = UNetLite(NetConfig(full_res_head=True)).eval()
    d = tmp_path / "rods"
    ckpt = Checkpoint(model=model, representation=FG_INTERIOR, decode={"seed_threshold": 0.6})
    save_checkpoint(ckpt, d / "default.pt")
    (d / "model.json").write_text(json.dumps({"name": "rods", "weights": "default.pt"}))
    return d


def test_full_res_head_checkpoint_round_trips_through_save_and_onnx(tmp_path):
    """Saved, loaded, exported: the same network, the same representation, ONNX within ATOL."""
    from liveseg_torch.runtime import ATOL, OnnxEngine, export_onnx

    d = _rod_checkpoint(tmp_path)
    ckpt = load_checkpoint(d / "default.pt")
    assert ckpt.model.config.full_res_head
    assert ckpt.representation == FG_INTERIOR
    onnx_path = export_onnx(d)
    card = json.loads((d / "model.json").read_text())
    assert card["onnx"]["max_abs_diff_vs_torch"] <= ATOL
    img, _ = generate_bacteria(5, (96, 128), "train")
    x = np.ascontiguousarray(img[None, None], dtype=np.float32)
    x = (x - x.mean()) / (x.std() + 1e-6)
    engine = OnnxEngine.from_bytes(onnx_path.read_bytes(), threads=1)
    with torch.inference_mode():
        expected = torch.sigmoid(ckpt.model(torch.from_numpy(x))).numpy()
    got = engine(x)
    assert got.shape == expected.shape == (1, 2, 96, 128)
    assert float(np.abs(got - expected).max()) <= ATOL


def test_old_checkpoints_load_without_the_head_and_as_normdist(default_ckpt_path):
    ckpt = load_checkpoint(default_ckpt_path)
    assert not ckpt.model.config.full_res_head
    assert ckpt.representation == "foreground+normdist"


def test_unknown_representation_is_refused_in_one_line(tmp_path):
    d = _rod_checkpoint(tmp_path)
    raw = torch.load(d / "default.pt", weights_only=True)
    raw["representation"] = "flows"
    torch.save(raw, d / "default.pt")
    with pytest.raises(ModelError, match="representation 'flows'") as exc:
        load_checkpoint(d / "default.pt")
    assert "\n" not in str(exc.value)


def test_training_the_interior_representation_lowers_its_loss():
    from liveseg_torch.train import evaluate_loss, make_sample, train_steps

    samples = [
        make_sample(*generate_bacteria(s, (96, 96), "train"), representation=FG_INTERIOR)
        for s in (76, 79)
    ]
    assert samples[0].representation == FG_INTERIOR
    assert set(np.unique(samples[0].distance)) <= {0.0, 1.0}  # a class map, not a distance
    torch.manual_seed(0)
    model = UNetLite(NetConfig(channels=8, full_res_head=True))
    before = evaluate_loss(model, samples)
    train_steps(model, samples, steps=30, batch_size=2, crop=64, learning_rate=3e-3, seed=0)
    assert evaluate_loss(model, samples) < before


@pytest.mark.slow
def test_shipped_bacteria_model_gives_the_same_labels_in_onnx_and_torch(tmp_path):
    """The shipped rod model, exported and hash-checked: ONNX and torch labels agree."""
    from liveseg.pipeline import StepContext
    from liveseg.types import Frame
    from liveseg_torch.plugin import UnetBackend, UnetParams
    from liveseg_torch.runtime import export_onnx
    from liveseg_torch.weights import default_weights_path

    d = tmp_path / "bacteria"
    shutil.copytree(default_weights_path().parent / "bacteria", d)
    export_onnx(d)
    ctx = StepContext(home=tmp_path / "home", threads=1)
    onnx_b = UnetBackend(UnetParams(model=str(d), runtime="onnx"), ctx)
    torch_b = UnetBackend(UnetParams(model=str(d), runtime="torch"), ctx)
    assert (onnx_b.predictor.runtime, torch_b.predictor.runtime) == ("onnx", "torch")
    results = []
    for i in range(4):
        img, _ = generate_bacteria(2 * 1_000_003 + i, (256, 256), "test")
        frame = Frame(index=0, image=img)
        a, b = onnx_b.segment(frame, None), torch_b.segment(frame, None)
        assert a.extra["runtime"] == "onnx"
        results.append(average_precision(b.labels, a.labels, thresholds=(0.5,)))
    pooled = aggregate(results)
    assert pooled.n_true > 100
    assert pooled.ap[0.5] >= 0.99


def test_fine_tuning_a_rod_checkpoint_trains_its_own_representation(tmp_path):
    """``finetune`` of a ``foreground+interior`` model: its loss falls, head and maps kept."""
    from liveseg.types import TrainItem
    from liveseg_torch.finetune import finetune
    from liveseg_torch.train import evaluate_loss, make_sample

    d = _rod_checkpoint(tmp_path)
    items = [TrainItem(*generate_bacteria(s, (96, 96), "train"), name=f"r{s}") for s in (76, 79)]
    res = finetune(d / "default.pt", items, tmp_path / "ft", epochs=3, seed=0, progress=False)
    child = load_checkpoint(res.weights_path)
    assert child.representation == FG_INTERIOR and child.model.config.full_res_head
    samples = [make_sample(it.image, it.labels, representation=FG_INTERIOR) for it in items]
    assert evaluate_loss(child.model, samples) < evaluate_loss(
        load_checkpoint(d / "default.pt").model, samples
    )


def test_bioimageio_export_of_a_rod_checkpoint_is_refused_in_one_line(tmp_path):
    """Its package would record the watershed decoder, which is wrong for interior maps."""
    from liveseg_torch.bioimageio import export_package

    d = _rod_checkpoint(tmp_path)
    with pytest.raises(ModelError, match=r"no bioimage\.io decoder") as exc:
        export_package(d, tmp_path / "pkg")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "pkg").exists()
