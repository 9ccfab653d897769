"""Correction exchange: TIFF pairs, Cellpose _seg.npy, validated imports."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from liveseg.retrain import annotate
from liveseg.retrain.annotate import (
    AnnotationError,
    check_labels,
    check_valid,
    export_items,
    import_folder,
    import_labels,
    read_seg_npy,
)
from liveseg.retrain.queue import ItemState, RetrainQueue


def _pair(shape=(40, 50)):
    img = (np.arange(shape[0] * shape[1]).reshape(shape) % 251).astype(np.uint16)
    lab = np.zeros(shape, np.uint32)
    lab[5:15, 5:15] = 1
    lab[20:30, 30:45] = 2
    return img, lab


@pytest.fixture
def queue(tmp_path):
    return RetrainQueue(tmp_path / "home")


def test_check_labels_errors():
    _, lab = _pair()
    assert check_labels(lab.astype(np.uint16), lab.shape).dtype == np.uint32
    with pytest.raises(AnnotationError, match=r"shape \(40, 49\) does not match"):
        check_labels(lab[:, :49], lab.shape)
    with pytest.raises(AnnotationError, match="floating point"):
        check_labels(lab.astype(np.float32), lab.shape)
    with pytest.raises(AnnotationError, match="binary"):
        check_labels(lab > 0, lab.shape)
    with pytest.raises(AnnotationError, match="negative"):
        check_labels(lab.astype(np.int32) - 1, lab.shape)
    gappy = lab.copy()
    gappy[gappy == 2] = 7
    fixed, mapping = annotate.check_labels_renumbered(gappy, lab.shape)
    assert sorted(np.unique(fixed)) == [0, 1, 2] and mapping == {7: 2}
    np.testing.assert_array_equal(check_labels(gappy, lab.shape), lab)
    assert annotate.check_labels_renumbered(lab, lab.shape)[1] == {}


def test_check_valid_errors():
    _, lab = _pair()
    mask = np.zeros(lab.shape, np.uint8)
    mask[:, :20] = 255
    with pytest.raises(AnnotationError, match="objects 2 lie entirely outside"):
        check_valid(mask, lab.shape, labels=lab)
    mask[:, :] = 1
    assert check_valid(mask, lab.shape, labels=lab).all()
    with pytest.raises(AnnotationError, match="does not match"):
        check_valid(mask[:10], lab.shape)
    with pytest.raises(AnnotationError, match="must be binary"):
        check_valid(mask * 7, lab.shape)
    with pytest.raises(AnnotationError, match="empty"):
        check_valid(np.zeros(lab.shape, np.uint8), lab.shape)


def test_export_tif_pairs_edit_and_import(queue, tmp_path):
    img, pred = _pair()
    i1 = queue.add(img, pred, reason="a", name="one")
    i2 = queue.add(img + 1, pred, reason="b", name="two")
    out = tmp_path / "exchange"
    export_items(queue, queue.items(), out, fmt="tif")
    assert (out / "one.tif").is_file() and (out / "one_labels.tif").is_file()
    np.testing.assert_array_equal(tifffile.imread(out / "one.tif"), img)
    np.testing.assert_array_equal(tifffile.imread(out / "one_labels.tif"), pred)
    # The annotator fixes "one" (adds an object) and marks a valid region; "two" untouched.
    fixed = pred.copy()
    fixed[32:38, 2:8] = 3
    tifffile.imwrite(out / "one_labels.tif", fixed)
    valid = np.ones(img.shape, np.uint8)
    tifffile.imwrite(out / "one_valid.tif", valid)
    outcome = import_folder(queue, out)
    assert outcome["one"].startswith("imported") and outcome["two"].startswith("unchanged")
    one = queue.get(i1)
    assert one.state is ItemState.CORRECTED
    np.testing.assert_array_equal(one.labels(), fixed)
    assert one.valid().all()
    assert queue.get(i2).state is ItemState.NEW
    # Accepting the prediction as is must be explicit.
    import_folder(queue, out, include_unchanged=True)
    assert queue.get(i2).state is ItemState.CORRECTED


def test_import_rejects_bad_files_with_clear_errors(queue, tmp_path):
    img, pred = _pair()
    i = queue.add(img, pred)
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, pred.astype(np.float32))
    with pytest.raises(AnnotationError, match="floating point"):
        import_labels(queue, i, bad)
    tifffile.imwrite(bad, pred[:, :-1])
    with pytest.raises(AnnotationError, match="does not match the image"):
        import_labels(queue, i, bad)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, pred)
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, np.ones((10, 10), np.uint8))
    with pytest.raises(AnnotationError, match="does not match the image"):
        import_labels(queue, i, good, mask)
    assert queue.get(i).revision == 0  # the failed imports changed nothing
    with pytest.raises(AnnotationError, match="not found"):
        import_labels(queue, i, tmp_path / "nope.tif")


def test_cellpose_seg_roundtrip_and_safety(queue, tmp_path):
    img, pred = _pair()
    queue.add(img, pred, name="cp")
    out = tmp_path / "cp"
    export_items(queue, queue.items(), out, fmt="seg")
    seg = out / "cp_seg.npy"
    dat = read_seg_npy(seg)
    np.testing.assert_array_equal(dat["masks"], pred)
    assert dat["outlines"].max() == 2 and dat["filename"] == "cp.tif"
    # Cellpose's own loader reads it the way the GUI does.
    loaded = np.load(seg, allow_pickle=True).item()
    assert set(loaded) >= {"masks", "outlines", "img", "filename", "ismanual"}
    # Edit in "Cellpose": drop object 2, save the same format, import.
    loaded["masks"] = np.where(loaded["masks"] == 2, 0, loaded["masks"])
    np.save(seg, np.array(loaded, dtype=object), allow_pickle=True)
    os.utime(seg)
    outcome = import_folder(queue, out)
    assert outcome["cp"] == "imported from cp_seg.npy"
    assert queue.items()[0].labels().max() == 1

    # A seg file that would run code on load is refused.
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil_seg.npy"
    np.save(evil, np.array({"masks": pred, "x": Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(AnnotationError, match="refusing to load"):
        read_seg_npy(evil)


def test_napari_missing_message(queue, monkeypatch):
    import builtins

    img, pred = _pair()
    i = queue.add(img, pred)
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "napari":
            raise ImportError("no napari")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(annotate.LivesegError, match=r"pip install 'napari\[all\]'"):
        annotate.open_in_napari(queue, i)


# -- what editors write ----------------------------------------------------------------
def _nuclei(shape=(64, 64), n=4):
    """An image and instance labels of ``n`` separate square nuclei."""
    img = np.full(shape, 100, np.uint16)
    lab = np.zeros(shape, np.uint32)
    for k in range(n):
        r, c = divmod(k, 3)
        lab[4 + 18 * r : 14 + 18 * r, 4 + 18 * c : 14 + 18 * c] = k + 1
    img[lab > 0] = 900
    return img, lab


def test_napari_labels_with_gaps_are_renumbered_and_recorded(queue, tmp_path):
    napari_io = pytest.importorskip("napari_builtins.io")
    img, pred = _nuclei()
    item_id = queue.add(img, pred, name="cells")
    out = tmp_path / "exchange"
    export_items(queue, queue.items(), out)
    # The annotator deletes object 2 in napari and saves the layer: ids 1, 3, 4 remain.
    edited = tifffile.imread(out / "cells_labels.tif").astype(np.int32)
    edited[edited == 2] = 0
    (out / "cells_labels.tif").unlink()
    napari_io.napari_write_labels(str(out / "cells_labels.tif"), edited, {})
    outcome = import_folder(queue, out, who="alice")
    assert (
        outcome["cells"].startswith("imported") and "renumbered ids 3→2, 4→3" in outcome["cells"]
    )
    item = queue.get(item_id)
    assert item.state is ItemState.CORRECTED
    assert sorted(np.unique(item.labels()).tolist()) == [0, 1, 2, 3]
    # The kept objects keep their pixels; only their ids moved.
    np.testing.assert_array_equal(item.labels() > 0, edited > 0)
    (record,) = item.renumberings()
    assert record["old_to_new"] == {"3": 2, "4": 3} and record["who"] == "alice"
    assert record["time"] and record["source"].endswith("cells_labels.tif")
    assert "renumbered ids 3→2, 4→3" in queue.history(item_id)[-1]["why"]
    assert item.as_dict()["renumbered"] == [record]


def test_fiji_binary_mask_is_refused_with_how_to(queue, tmp_path):
    img, lab = _nuclei()
    item_id = queue.add(img, lab)
    mask = tmp_path / "mask.tif"
    # What Fiji's "Convert to Mask" saves: an 8-bit ImageJ TIFF, 0 / 255.
    tifffile.imwrite(mask, ((lab > 0) * 255).astype(np.uint8), imagej=True)
    with pytest.raises(AnnotationError, match=r"binary mask.*4 separate objects") as err:
        import_labels(queue, item_id, mask)
    assert "skimage.measure.label" in str(err.value)
    ones = tmp_path / "ones.tif"
    tifffile.imwrite(ones, (lab > 0).astype(np.uint16))  # a 0/1 mask, another dtype
    with pytest.raises(AnnotationError, match="binary mask"):
        import_labels(queue, item_id, ones)
    assert queue.get(item_id).state is ItemState.NEW
    # One object labelled 1 is a valid instance image, not a mask.
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, (lab == 1).astype(np.uint8))
    assert import_labels(queue, item_id, single).labels().max() == 1


def test_cellpose_seg_with_gaps_is_renumbered(queue, tmp_path):
    img, pred = _nuclei()
    queue.add(img, pred, name="cp")
    out = tmp_path / "cp"
    export_items(queue, queue.items(), out, fmt="seg")
    seg = out / "cp_seg.npy"
    dat = np.load(seg, allow_pickle=True).item()
    dat["masks"] = np.where(dat["masks"] == 1, 0, dat["masks"])  # delete object 1
    np.save(seg, np.array(dat, dtype=object), allow_pickle=True)
    outcome = import_folder(queue, out)
    assert "renumbered ids 2→1, 3→2, 4→3" in outcome["cp"]
    assert queue.items()[0].labels().max() == 3


def test_folder_import_is_all_or_nothing(queue, tmp_path):
    img, pred = _nuclei()
    a = queue.add(img, pred, name="a")
    b = queue.add(img + 1, pred, name="b")
    out = tmp_path / "x"
    export_items(queue, queue.items(), out)
    good = pred.copy()
    good[good == 4] = 0
    tifffile.imwrite(out / "a_labels.tif", good)
    tifffile.imwrite(out / "b_labels.tif", (pred > 0).astype(np.uint8))  # b is a mask
    with pytest.raises(AnnotationError, match=r"b_labels\.tif.*binary mask"):
        import_folder(queue, out)
    assert queue.get(a).state is ItemState.NEW and queue.get(a).revision == 0
    assert queue.get(b).state is ItemState.NEW


def test_export_never_drops_overwrites_or_escapes(queue, tmp_path):
    import sqlite3

    img, pred = _nuclei()
    ids = [queue.add(img + k, pred, name=f"n{k}") for k in range(3)]
    # A queue written by an earlier version: two rows share a name, one climbs out.
    with sqlite3.connect(queue.db_path) as con:
        con.execute("UPDATE items SET name='same' WHERE id IN (?, ?)", ids[:2])
        con.execute("UPDATE items SET name='../../escaped' WHERE id=?", (ids[2],))
    out = tmp_path / "deep" / "x"
    written = export_items(queue, queue.items(), out)
    assert len(written) == 3 and all(p.parent == out for p in written)
    assert not list((tmp_path / "deep").glob("*escaped*"))
    assert not list(tmp_path.glob("*escaped*"))
    stems = sorted(p.name for p in out.glob("*_labels.tif"))
    assert len(set(stems)) == 3
    for k, item_id in enumerate(ids):  # every item's own image went out
        name = next(n for n, e in _manifest(out).items() if e["id"] == item_id)
        np.testing.assert_array_equal(tifffile.imread(out / f"{name}.tif"), img + k)


def _manifest(folder):
    import json

    return json.loads((folder / annotate.MANIFEST).read_text())
