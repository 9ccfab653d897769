"""Microscope files other tools write, segmented through the CLI (bioio readers).

OME-TIFF written by tifffile (OME metadata), OME-Zarr written by ``ome-zarr``'s writer,
and Zeiss CZI written by ``pylibCZIrw`` (which bioio-czi pulls in). ND2 and LIF have
no writer that installs offline (``nd2`` and ``liffile`` only read), so for them the
tests check that the reader is wired in and refuses a broken file with one line.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from liveseg.cli import main
from liveseg.imageio import ImageError, ImageSelection, read_image_data
from liveseg.testing import classical_config, disk_image

SHAPE = (128, 128)
GRID = [(20 + 28 * (k // 4), 20 + 28 * (k % 4)) for k in range(16)]


def _plane(n: int, seed: int = 0) -> np.ndarray:
    """A frame with exactly ``n`` disks: the count says which plane was segmented."""
    return disk_image(SHAPE, GRID[:n], seed=seed)[0]


@pytest.fixture
def classical_yaml(tmp_path):
    p = tmp_path / "classical.yaml"
    p.write_text(json.dumps(classical_config().model_dump(mode="json")))
    return p


def _segment(tmp_path, classical_yaml, *args):
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    cmd = ["segment", *map(str, args), "-o", str(out), "--config", str(classical_yaml)]
    res = CliRunner().invoke(main, [*cmd, "--home", str(tmp_path / "home")])
    return res, out


def _objects(out):
    with (out / "objects.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_um(out, um):
    rows = _objects(out)
    assert rows
    for r in rows:
        assert float(r["area_um2"]) == pytest.approx(float(r["area_px"]) * um**2, rel=1e-6)


def test_segment_an_ome_tiff_reports_um_from_its_physical_size(tmp_path, classical_yaml):
    src = tmp_path / "cells.ome.tif"
    meta = {"axes": "YX", "PhysicalSizeX": 650, "PhysicalSizeY": 650}
    meta |= {"PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm"}
    tifffile.imwrite(src, _plane(3), ome=True, metadata=meta)
    res, out = _segment(tmp_path, classical_yaml, src)
    assert res.exit_code == 0, res.output
    assert len(_objects(out)) == 3
    _assert_um(out, 0.65)
    summary = json.loads((out / "run.json").read_text())["summary"]
    assert summary["pixel_sizes"] == {"cells": {"um": pytest.approx(0.65), "source": "ome-tiff"}}
    assert "pixel size 0.65 µm (from ome-tiff)" in res.output


def _tczyx(path, t=3, c=2, z=1, um=0.5):
    """A T×C(×Z) OME-TIFF whose plane (t, c, z) holds 1 + 2t + c + 3z disks."""
    data = np.stack(
        [
            np.stack(
                [
                    np.stack([_plane(1 + 2 * ti + ci + 3 * zi, seed=ti) for zi in range(z)])
                    for ci in range(c)
                ]
            )
            for ti in range(t)
        ]
    )
    meta = {"axes": "TCZYX", "PhysicalSizeX": um, "PhysicalSizeY": um}
    meta["Channel"] = {"Name": ["DAPI", "GFP"][:c]}
    tifffile.imwrite(path, data, ome=True, metadata=meta)
    return path


def test_channel_and_timepoint_pick_the_plane(tmp_path, classical_yaml):
    src = _tczyx(tmp_path / "movie.ome.tif")
    res, out = _segment(tmp_path, classical_yaml, src, "--channel", "GFP", "-t", 2)
    assert res.exit_code == 0, res.output
    assert len(_objects(out)) == 1 + 4 + 1
    _assert_um(out, 0.5)
    run = json.loads((out / "run.json").read_text())
    assert run["selection"] == {"channel": "GFP", "timepoint": 2}
    res, out = _segment(tmp_path, classical_yaml, src, "--channel", 0, "--timepoint", 1)
    assert res.exit_code == 0, res.output
    assert len(_objects(out)) == 1 + 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "has 2 channels (0: DAPI, 1: GFP); choose one with --channel"),
        (["--channel", "DAPI"], "has 3 time points (indices 0-2); choose one with -t"),
        (["--channel", "RFP", "-t", 0], "no channel named 'RFP'; it has 0: DAPI, 1: GFP"),
        (["--channel", 5, "-t", 0], "channel 5 is out of range; it has 0: DAPI, 1: GFP"),
        (["--channel", 1, "-t", 7], "time point 7 is out of range; it has indices 0-2"),
        (["--channel", 1, "-t", 0, "--scene", 3], "scene 3 is out of range; it has 0: Image:0"),
    ],
)
def test_a_missing_or_wrong_choice_is_one_clear_line(tmp_path, classical_yaml, args, message):
    src = _tczyx(tmp_path / "movie.ome.tif")
    res, _ = _segment(tmp_path, classical_yaml, src, *args)
    assert res.exit_code == 1
    said = [line for line in res.stderr.splitlines() if message in line]
    assert len(said) == 1 and said[0].strip().startswith(str(src)), res.output
    assert said[0].count(str(src)) == 1


def test_z_stack_needs_a_plane_or_a_max_projection(tmp_path, classical_yaml):
    src = _tczyx(tmp_path / "stack.ome.tif", t=1, c=1, z=3)  # plane z holds 1 + 3z disks
    res, _ = _segment(tmp_path, classical_yaml, src)
    assert res.exit_code == 1 and "3-D stack of 3 z-planes" in res.stderr
    res, out = _segment(tmp_path, classical_yaml, src, "--z", 1)
    assert res.exit_code == 0, res.output
    assert len(_objects(out)) == 4
    res, out = _segment(tmp_path, classical_yaml, src, "--z", "max")
    assert res.exit_code == 0, res.output
    assert len(_objects(out)) == 7  # the union of the planes' disks
    data = read_image_data(src, ImageSelection(z="max"))
    with tifffile.TiffFile(src) as tif:
        expected = tif.asarray().reshape(3, *SHAPE).max(axis=0)
    np.testing.assert_array_equal(data.array, expected)
    res = CliRunner().invoke(main, ["segment", str(src), "-o", str(tmp_path / "x"), "--z", "top"])
    assert res.exit_code == 2 and "'max'" in res.output


def test_segment_an_ome_zarr_written_by_ome_zarr_py(tmp_path, classical_yaml):
    import warnings

    import zarr

    with warnings.catch_warnings():  # ome-zarr 0.18 warns about its own default argument
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_image

    src = tmp_path / "well.ome.zarr"
    data = np.stack([_plane(2), _plane(5)])  # (c, y, x)
    axes = [{"name": "c", "type": "channel"}]
    axes += [{"name": n, "type": "space", "unit": "micrometer"} for n in ("y", "x")]
    write_image(
        data, zarr.open_group(str(src), mode="w"), axes=axes, scale={"c": 1.0, "y": 0.4, "x": 0.4}
    )
    res, out = _segment(tmp_path, classical_yaml, src, "--channel", 1)
    assert res.exit_code == 0, res.output
    assert len(_objects(out)) == 5
    _assert_um(out, 0.4)


def test_segment_a_zeiss_czi_written_by_pylibczirw(tmp_path, classical_yaml):
    pyczi = pytest.importorskip("pylibCZIrw.czi", reason="the formats extra is not installed")
    src = tmp_path / "slide.czi"
    with pyczi.create_czi(str(src), exist_ok=True) as czi:
        for c, n in enumerate((2, 6)):
            czi.write(data=_plane(n), plane={"C": c, "T": 0, "Z": 0}, scene=0)
        czi.write_metadata(
            document_name="slide",
            channel_names={0: "DAPI", 1: "GFP"},
            scale_x=0.3e-6,  # metres, as CZI stores them
            scale_y=0.3e-6,
        )
    res, out = _segment(tmp_path, classical_yaml, src, "--channel", "GFP")
    assert res.exit_code == 0, res.output
    assert len(_objects(out)) == 6
    _assert_um(out, 0.3)
    data = read_image_data(src, ImageSelection(channel="DAPI"))
    assert data.source == "czi" and data.pixel_size_um == pytest.approx(0.3)
    np.testing.assert_array_equal(data.array, _plane(2))


@pytest.mark.parametrize("suffix", [".nd2", ".lif", ".czi", ".ome.tif"])
def test_a_broken_vendor_file_is_one_line_naming_the_reader(tmp_path, suffix):
    reader = {".nd2": "bioio-nd2", ".lif": "bioio-lif", ".czi": "bioio-czi"}.get(suffix)
    if reader is not None:
        pytest.importorskip(reader.replace("-", "_"), reason="the formats extra is not installed")
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(b"\x00garbage, not an image" * 10)
    with pytest.raises(ImageError) as info:
        read_image_data(bad)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and "cannot read" in msg
    assert reader is None or reader in msg


def test_a_truncated_ome_tiff_is_an_error_row_and_the_rest_go_on(tmp_path, classical_yaml):
    good = tmp_path / "good.ome.tif"
    tifffile.imwrite(good, _plane(2), ome=True, metadata={"PhysicalSizeX": 0.5})
    cut = tmp_path / "cut.ome.tif"
    tifffile.imwrite(cut, _plane(2), ome=True, metadata={"PhysicalSizeX": 0.5})
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    res, out = _segment(tmp_path, classical_yaml, good, cut)
    assert res.exit_code == 1
    assert "segmented 1 of 2 images" in res.output
    assert f"{cut}: cannot read" in res.stderr
    assert len(_objects(out)) == 2


def test_unknown_format_and_rgb_are_refused_with_what_to_do(tmp_path):
    odd = tmp_path / "scan.xyz"
    odd.write_bytes(b"12345")
    with pytest.raises(ImageError, match=r"no installed reader .*installed: bioio-ome-tiff"):
        read_image_data(odd)
    rgb = tmp_path / "photo.tif"
    tifffile.imwrite(rgb, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(ImageError, match="RGB image"):
        read_image_data(rgb)


@pytest.mark.slow
def test_batch_try_and_validate_take_the_same_choice(tmp_path, classical_yaml):
    from liveseg.retrain.validate import load_reference_set

    folder = tmp_path / "movies"
    folder.mkdir()
    for name in ("a", "b"):
        _tczyx(folder / f"{name}.ome.tif")
    home = ["--home", str(tmp_path / "home")]
    out = tmp_path / "batch-out"
    args = ["batch", str(folder), "-o", str(out), "--config", str(classical_yaml)]
    res = CliRunner().invoke(main, [*args, "--channel", "GFP", "-t", "2", *home])
    assert res.exit_code == 0, res.output
    for name in ("a", "b"):
        with (out / f"{name}_objects.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 6
        assert all(float(r["area_um2"]) == pytest.approx(float(r["area_px"]) * 0.25) for r in rows)
    run = json.loads((out / "run.json").read_text())
    assert run["selection"] == {"channel": "GFP", "timepoint": 2}
    res = CliRunner().invoke(main, [*args[:3], str(tmp_path / "b2"), *args[4:], *home])
    assert res.exit_code == 1 and "choose one with --channel" in res.output

    tried = tmp_path / "try-out"
    args = ["try", str(folder / "a.ome.tif"), "-o", str(tried), "--model", "classical"]
    res = CliRunner().invoke(main, [*args, "--channel", "1", "--timepoint", "1", *home])
    assert res.exit_code == 0, res.output
    with (tried / "per_image.csv").open(newline="") as fh:
        assert [int(r["objects"]) for r in csv.DictReader(fh)] == [1 + 2 + 1]

    ref = tmp_path / "ref"
    ref.mkdir()
    _tczyx(ref / "m.ome.tif", t=1)
    tifffile.imwrite(ref / "m_labels.tif", disk_image(SHAPE, GRID[:2])[1])
    refs = load_reference_set(ref, ImageSelection(channel="GFP"))
    np.testing.assert_array_equal(refs[0].image, _plane(2))
    res = CliRunner().invoke(main, ["validate", str(ref), "--model", "nope@1", *home])
    assert res.exit_code != 0 and "choose one with --channel" in res.output
    res = CliRunner().invoke(
        main, ["validate", str(ref), "--model", "nope@1", "--channel", "1", *home]
    )
    assert "choose one with --channel" not in res.output and "nope" in res.output


def _positions(path, sizes):
    """A multi-position OME-Zarr (one image group per position), as ome-zarr-py writes."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_image

    root = zarr.open_group(str(path), mode="w")
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in ("y", "x")]
    for k, (name, um) in enumerate(sizes.items()):
        write_image(_plane(2 + k), root.create_group(name), axes=axes, scale={"y": um, "x": um})
    return path


def test_scene_picks_the_position_of_a_multi_position_ome_zarr(tmp_path, classical_yaml):
    src = _positions(tmp_path / "plate.ome.zarr", {"A1": 0.5, "A2": 0.8})
    res, _ = _segment(tmp_path, classical_yaml, src)
    assert res.exit_code == 1 and "has 2 positions (0: A1, 1: A2); choose one with --scene" in (
        res.stderr
    )
    res, out = _segment(tmp_path, classical_yaml, src, "--scene", "A2")
    assert res.exit_code == 0, res.output
    assert len(_objects(out)) == 3
    _assert_um(out, 0.8)
    from liveseg.batch import discover_inputs

    planes = discover_inputs(src)  # batch without a choice: every plane, each its own size
    assert [p.pixel_size()[0] for p in planes] == [pytest.approx(0.5), pytest.approx(0.8)]
