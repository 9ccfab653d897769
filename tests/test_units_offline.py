"""Physical units offline: `segment` and `batch` measure in the µm the image file states."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from liveseg.cli import main
from liveseg.imageio import read_pixel_size
from liveseg.testing import classical_config, disk_image


@pytest.fixture
def classical_yaml(tmp_path):
    import json

    p = tmp_path / "classical.yaml"
    p.write_text(json.dumps(classical_config().model_dump(mode="json")))
    return p


def _ome_tiff(path, image, um):
    tifffile.imwrite(path, image, ome=True, metadata={"PhysicalSizeX": um, "PhysicalSizeY": um})


def _objects(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_segment_reports_um_from_the_tiff_resolution_tags(tmp_path, classical_yaml):
    image, _ = disk_image()
    src = tmp_path / "in"
    src.mkdir()
    per_cm = 1e4 / 0.5  # 0.5 µm pixels as TIFF resolution tags (pixels per centimetre)
    tifffile.imwrite(
        src / "cells.tif", image, resolution=(per_cm, per_cm), resolutionunit="CENTIMETER"
    )
    out = tmp_path / "out"
    args = ["segment", str(src / "cells.tif"), "-o", str(out), "--config", str(classical_yaml)]
    res = CliRunner().invoke(main, [*args, "--home", str(tmp_path / "home")])
    assert res.exit_code == 0, res.output
    rows = _objects(out / "objects.csv")
    assert rows
    ratios = [float(r["area_um2"]) / float(r["area_px"]) for r in rows]
    assert np.allclose(ratios, 0.25)
    labels_px = read_pixel_size(out / "cells_labels.tif")
    assert labels_px is not None and labels_px.um == pytest.approx(0.5)


def test_segment_without_a_pixel_size_says_um_are_pixels(tmp_path, classical_yaml):
    src = tmp_path / "plain.tif"
    tifffile.imwrite(src, disk_image()[0])
    out = tmp_path / "out"
    args = ["segment", str(src), "-o", str(out), "--config", str(classical_yaml)]
    res = CliRunner().invoke(main, [*args, "--home", str(tmp_path / "home")])
    assert res.exit_code == 0, res.output
    events = (out / "events.jsonl").read_text()
    assert '"kind": "pixel_size"' in events and "pixels" in events
    rows = _objects(out / "objects.csv")
    assert all(float(r["area_um2"]) == float(r["area_px"]) for r in rows)
    assert read_pixel_size(out / "plain_labels.tif") is None


def test_batch_reports_um_from_ome_tiff_physical_sizes(tmp_path, classical_yaml):
    src = tmp_path / "plate"
    src.mkdir()
    _ome_tiff(src / "well_a.ome.tif", disk_image()[0], 0.65)
    out = tmp_path / "out"
    args = ["batch", str(src), "-o", str(out), "--config", str(classical_yaml)]
    res = CliRunner().invoke(main, [*args, "--home", str(tmp_path / "home")])
    assert res.exit_code == 0, res.output
    rows = _objects(out / "well_a_objects.csv")
    assert rows
    ratios = [float(r["area_um2"]) / float(r["area_px"]) for r in rows]
    assert np.allclose(ratios, 0.65**2)
    labels_px = read_pixel_size(out / "well_a_labels.tif")
    assert labels_px is not None and labels_px.um == pytest.approx(0.65)


def test_segment_of_only_unreadable_files_still_closes_its_run(tmp_path, classical_yaml):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff at all")
    out = tmp_path / "out"
    args = ["segment", str(bad), "-o", str(out), "--config", str(classical_yaml)]
    res = CliRunner().invoke(main, [*args, "--home", str(tmp_path / "home")])
    assert res.exit_code != 0
    assert "broken.tif" in res.output and "Traceback" not in res.output
    import json

    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["ok"] == 0 and info["summary"]["failed"] == 1
