import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from liveseg.cli import main
from liveseg.testing import classical_config, disk_image


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def classical_yaml(tmp_path):
    p = tmp_path / "classical.yaml"
    p.write_text(json.dumps(classical_config().model_dump(mode="json")))
    return p


def _segment(runner, tmp_path, config, *images):
    """Run ``liveseg segment IMAGES -o tmp/out`` with ``config`` and a private home."""
    args = ["segment", *map(str, images), "-o", str(tmp_path / "out"), "--config", str(config)]
    return runner.invoke(main, [*args, "--home", str(tmp_path / "home")])


def test_help_everywhere(runner):
    out = runner.invoke(main, ["--help"])
    assert out.exit_code == 0
    for cmd in ("run", "segment", "resegment", "plugins", "validate-config"):
        assert cmd in out.output
        sub = runner.invoke(main, [cmd, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output


def test_segment_writes_labels_and_tables(runner, tmp_path, classical_yaml):
    src = tmp_path / "in"
    src.mkdir()
    for i, centers in enumerate([[(30, 30), (80, 90)], [(50, 50)]]):
        image, _ = disk_image((128, 128), centers, radius=7, seed=i)
        tifffile.imwrite(src / f"img{i}.tif", image)
    out = _segment(runner, tmp_path, classical_yaml, src / "img0.tif", src / "img1.tif")
    assert out.exit_code == 0, out.output
    assert "segmented 2 of 2" in out.output
    lab0 = tifffile.imread(tmp_path / "out" / "img0_labels.tif")
    lab1 = tifffile.imread(tmp_path / "out" / "img1_labels.tif")
    assert lab0.dtype == np.uint32 and lab0.max() == 2 and lab1.max() == 1
    objects = (tmp_path / "out" / "objects.csv").read_text().strip().splitlines()
    assert len(objects) == 1 + 3


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.ones((32, 32), dtype=bool), "unsupported pixel type bool"),
        (np.ones((32, 32), dtype=np.complex64), "unsupported pixel type complex64"),
        (np.ones((3, 4, 32, 32), dtype=np.uint16), "has 3 channels (indices 0-2)"),
    ],
    ids=["bool", "complex", "4d"],
)
def test_segment_wrong_image_gives_clear_error_and_continues(
    runner, tmp_path, classical_yaml, array, message
):
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, array, photometric="minisblack")
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, disk_image((64, 64), [(32, 32)])[0])
    out = _segment(runner, tmp_path, classical_yaml, bad, good)
    assert out.exit_code == 1
    assert message in out.output
    assert "Traceback" not in out.output
    assert (tmp_path / "out" / "good_labels.tif").exists()  # the batch went on
    assert not (tmp_path / "out" / "bad_labels.tif").exists()


def test_validate_config_reports_errors_without_traceback(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline:\n  steps:\n    - backend: nope\n")
    out = runner.invoke(main, ["validate-config", str(bad)])
    assert out.exit_code == 2
    assert "unknown backend 'nope'" in out.output and "threshold" in out.output
    assert "Traceback" not in out.output


def test_validate_config_ok(runner):
    out = runner.invoke(main, ["validate-config", "configs/demo.yaml"])
    assert out.exit_code == 0, out.output
    assert "OK" in out.output


def test_plugins_lists_sources_versions_and_backends(runner):
    out = runner.invoke(main, ["plugins", "--json"])
    assert out.exit_code == 0
    infos = {p["name"]: p for p in json.loads(out.output)}
    assert infos["threshold"]["source"] == "builtin"
    assert infos["threshold"]["provides"]["backends"] == ["threshold"]
    assert infos["threshold"]["version"]


def test_segment_accepts_the_shipped_pipeline_file(runner, tmp_path):
    """README: write chains in configs/pipelines/*.yaml and pass them with --config."""
    from pathlib import Path

    pipeline = Path(__file__).resolve().parents[1] / "configs" / "pipelines" / "classical.yaml"
    image, _ = disk_image((128, 128), [(30, 30), (80, 90)], radius=7, seed=0)
    tifffile.imwrite(tmp_path / "img1.tif", image)
    out = _segment(runner, tmp_path, pipeline, tmp_path / "img1.tif")
    assert out.exit_code == 0, out.output
    assert tifffile.imread(tmp_path / "out" / "img1_labels.tif").max() == 2
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("steps: [{backend: threshold}]\nthreads: 2\n")
    out = _segment(runner, tmp_path, mixed, tmp_path / "img1.tif")
    assert out.exit_code == 2 and "a pipeline file holds only 'steps:'" in out.output
