"""``liveseg try``: the command a user runs to pick a model, run the way they run it."""

from __future__ import annotations

import csv

import pytest
import tifffile
from click.testing import CliRunner

from liveseg.cli import main
from liveseg.synthetic import generate_sample

pytest.importorskip("liveseg_torch")


def _write(folder, kind, n, split="test", labels=True):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img, lab = generate_sample(kind, 500 + i, (256, 256), split)
        p = folder / f"{kind}_{i}.tif"
        tifffile.imwrite(p, img)
        if labels:
            tifffile.imwrite(folder / f"{kind}_{i}_labels.tif", lab)
        paths.append(p)
    return paths


def _table(out):
    with (out / "summary.csv").open() as fh:
        return {row["model"]: row for row in csv.DictReader(fh)}


def _try(tmp_path, *args):
    res = CliRunner().invoke(main, ["try", *map(str, args), "--home", str(tmp_path / "home")])
    return res


def test_try_writes_sheet_and_table_for_a_folder_and_an_ome_zarr(tmp_path):
    import zarr

    images = _write(tmp_path / "imgs", "nuclei", 2, labels=False)
    img, _ = generate_sample("nuclei", 900, (128, 128), "test")
    store = zarr.open_group(str(tmp_path / "one.ome.zarr"), mode="w")
    store.create_array("0", data=img[None])
    out = tmp_path / "out"
    res = _try(
        tmp_path,
        images[0].parent,
        tmp_path / "one.ome.zarr",
        "-o",
        out,
        "--model",
        "classical",
        "--model",
        "nuclei",
    )
    assert res.exit_code == 0, res.output
    assert (out / "sheet.png").read_bytes()[:4] == b"\x89PNG"
    rows = _table(out)
    assert set(rows) == {"classical", "nuclei"}
    assert all(int(r["images"]) == 3 for r in rows.values())
    assert "start from:" in res.output
    md = (out / "summary.md").read_text()
    assert "| model |" in md and "Start from **" in md
    with (out / "per_image.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6


def test_try_on_a_run_directory(tmp_path, make_session):
    from liveseg.testing import classical_config

    cfg = classical_config(
        hardware={"mm_config": "demo", "exposure_ms": 5, "simulate": {"n_objects": 20, "seed": 2}}
    )
    make_session(cfg).run(output=tmp_path / "run")
    out = tmp_path / "out"
    res = _try(tmp_path, tmp_path / "run", "-o", out, "--model", "classical")
    assert res.exit_code == 0, res.output
    rows = _table(out)
    assert int(rows["classical"]["images"]) == 3
    assert int(rows["classical"]["objects"]) > 0


def test_try_unknown_model_is_one_clear_line(tmp_path):
    images = _write(tmp_path / "imgs", "nuclei", 1, labels=False)
    res = _try(tmp_path, images[0], "-o", tmp_path / "out", "--model", "no-such-model")
    assert res.exit_code == 2
    assert "error: model 'no-such-model' is not a shipped model" in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nuclei", "cells", "bacteria", "transmitted"])
def test_try_with_reference_picks_the_model_for_the_sample_type(tmp_path, kind):
    ref = tmp_path / "ref"
    _write(ref, kind, 2)
    out = tmp_path / "out"
    res = _try(tmp_path, "--ref", ref, "-o", out)
    assert res.exit_code == 0, res.output
    rows = _table(out)
    assert {"classical", "nuclei", "cells", "bacteria", "transmitted"} <= set(rows)
    aps = {name: float(r["ap@0.5"]) for name, r in rows.items()}
    assert rows[kind]["pick"] == "yes", aps
    assert aps[kind] > aps["classical"], aps
    assert f"start from: {kind}" in res.output
    # A model its card marks below target says so where the user reads the pick.
    below = kind in ("bacteria", "transmitted")
    assert ("its model card marks it below target" in res.output) is below, res.output
    assert ("liveseg retrain" in (out / "summary.md").read_text()) is below
