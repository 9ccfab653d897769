"""K-means pixel classes: stable ordering, the chain step, classes to instances."""

from __future__ import annotations

import numpy as np
import pytest

from liveseg.builtins.classes import ClassTable, class_fractions, classes_to_instances
from liveseg.builtins.kmeans import KMeansParams, kmeans_classes
from liveseg.config import StepConfig
from liveseg.errors import ConfigError
from liveseg.materials import porous_section
from liveseg.pipeline import Pipeline, StepContext
from liveseg.types import Frame, FrameStatus


def test_classes_are_ordered_by_intensity_on_every_frame():
    for seed in (1, 2, 3):
        sec = porous_section(seed, (192, 192))
        classes, _ = kmeans_classes(sec.image, KMeansParams(k=2, seed=seed))
        # Pores are dark: class 0 on every frame, whatever K-means numbered them.
        iou = ((classes == 0) & (sec.classes == 1)).sum() / (
            (classes == 0) | (sec.classes == 1)
        ).sum()
        assert iou > 0.7, (seed, iou)


def test_invert_puts_the_bright_class_first():
    sec = porous_section(4, (128, 128))
    plain, _ = kmeans_classes(sec.image, KMeansParams(k=2))
    inverted, _ = kmeans_classes(sec.image, KMeansParams(k=2, invert=True))
    assert np.array_equal(plain, 1 - inverted)


def test_kmeans_step_in_a_chain_returns_named_classes(liveseg_host, tmp_path):
    steps = [
        StepConfig(
            backend="kmeans",
            params={"k": 2, "invert": True, "class_names": ["matrix", "pore"], "min_area": 4},
        )
    ]
    chain = Pipeline.build(steps, liveseg_host.backends(), StepContext(tmp_path))
    sec = porous_section(5, (192, 192))
    result = chain.run(Frame(0, sec.image))
    assert result.status is FrameStatus.OK, result.error
    assert result.class_names == ("matrix", "pore")
    assert result.count > 5
    fr = class_fractions(result.classes, result.class_names)
    assert fr["pore"] == pytest.approx(sec.classes.mean(), abs=0.05)


def test_wrong_number_of_class_names_is_a_config_error(liveseg_host, tmp_path):
    steps = [StepConfig(backend="kmeans", params={"k": 3, "class_names": ["a", "b"]})]
    with pytest.raises(ConfigError, match="class_names"):
        Pipeline.build(steps, liveseg_host.backends(), StepContext(tmp_path))


def test_classes_to_instances_splits_touching_regions_at_the_boundary_class():
    classes = np.zeros((40, 60), np.uint8)
    classes[:, 29:31] = 1  # a boundary column between two grains
    labels = classes_to_instances(classes, [0], boundary=1)
    assert len(np.unique(labels)) == 2 and labels.min() >= 1  # boundary shared out
    assert labels[5, 5] != labels[5, 55]
    assert len(np.unique(classes_to_instances(classes, [0]))) == 3  # components keep 0


def test_classes_to_instances_step_needs_a_class_map(liveseg_host, tmp_path):
    steps = [StepConfig(backend="threshold"), StepConfig(backend="classes_to_instances")]
    chain = Pipeline.build(steps, liveseg_host.backends(), StepContext(tmp_path))
    result = chain.run(Frame(0, porous_section(6, (64, 64)).image))
    assert result.status is FrameStatus.FAILED and "needs an upstream" in (result.error or "")


def test_class_table_writes_ngff_label_colours_and_names():
    table = ClassTable.default(["grain", "boundary", "inclusion"])
    meta = table.ngff_image_label()
    assert [p["class"] for p in meta["properties"]] == ["grain", "boundary", "inclusion"]
    assert meta["colors"][0]["rgba"][3] == 0 and meta["colors"][1]["rgba"][3] == 255


def test_split_separates_two_touching_discs_that_components_merge():
    yy, xx = np.mgrid[0:60, 0:90]
    mask = ((yy - 30) ** 2 + (xx - 30) ** 2 < 14**2) | ((yy - 30) ** 2 + (xx - 56) ** 2 < 14**2)
    classes = mask.astype(np.uint8)
    assert len(np.unique(classes_to_instances(classes, [1]))) == 2  # one merged object
    split = classes_to_instances(classes, [1], split=True)
    assert len(np.unique(split)) == 3 and split[30, 30] != split[30, 56]
    assert np.array_equal(split > 0, mask)


@pytest.mark.hardware
@pytest.mark.slow
def test_live_demo_run_with_a_semantic_step_counts_the_simulated_objects(make_session, tmp_path):
    """K-means (a class-map backend) on the real demo camera, through the live path."""
    import liveseg
    from liveseg.testing import classical_config

    objects = [(-150, -100), (80, 60), (200, -180), (-60, 170), (10, -20)]
    cfg = classical_config(
        hardware={
            "mm_config": "demo",
            "exposure_ms": 20,
            "simulate": {"objects": [{"x": x, "y": y, "radius": 6.0} for x, y in objects]},
        },
        pipeline={
            "steps": [
                {
                    "backend": "kmeans",
                    "params": {"k": 2, "class_names": ["background", "object"], "min_area": 15},
                }
            ]
        },
        sequence={"time_plan": {"interval": 0, "loops": 2}},
    )
    summary = make_session(cfg).run(output=tmp_path / "run")
    assert summary["frames_segmented"] == 2
    run = liveseg.open_run(tmp_path / "run")
    for row in run.frames():
        assert row["status"] == "ok"
        assert row["count"] == len(objects)
