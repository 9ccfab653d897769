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
    with pytest.raises(AnnotationError, match=r"without gaps.*missing: 2, 3, 4, 5, 6"):
        check_labels(gappy, lab.shape)
    fixed = check_labels(gappy, lab.shape, relabel=True)
    assert sorted(np.unique(fixed)) == [0, 1, 2]


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
    gappy = pred.copy()
    gappy[gappy == 2] = 5
    tifffile.imwrite(bad, gappy)
    with pytest.raises(AnnotationError, match="without gaps"):
        import_labels(queue, i, bad)
    assert import_labels(queue, i, bad, relabel=True).state is ItemState.CORRECTED
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, pred)
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, np.ones((10, 10), np.uint8))
    with pytest.raises(AnnotationError, match="does not match the image"):
        import_labels(queue, i, good, mask)
    assert queue.get(i).revision == 1  # the failed imports changed nothing
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
