"""Retraining queue: states, history, self-contained items, concurrency + SIGKILL."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from liveseg.retrain.annotate import AnnotationError
from liveseg.retrain.queue import ItemState, QueueError, RetrainQueue


def _frame(value: int, shape=(32, 40)) -> tuple[np.ndarray, np.ndarray]:
    img = np.full(shape, value, dtype=np.uint16)
    labels = np.zeros(shape, dtype=np.uint32)
    labels[4:10, 4:10] = 1
    labels[15:20, 20:30] = 2
    return img, labels


def test_add_correct_use_and_history(tmp_path):
    q = RetrainQueue(tmp_path / "home")
    img, pred = _frame(7)
    run = tmp_path / "run1"
    run.mkdir()
    i = q.add(img, pred, run=str(run), frame_index=3, reason="too few objects", source="operator")
    item = q.get(i)
    assert item.state is ItemState.NEW
    assert item.name == "run1_f00003"
    assert item.frame_index == 3 and item.reason == "too few objects"
    np.testing.assert_array_equal(item.image(), img)
    np.testing.assert_array_equal(item.predicted(), pred)
    assert item.labels() is None
    with pytest.raises(QueueError, match="no corrected labels"):
        item.train_item()
    # Self-contained: the run directory can go away.
    run.rmdir()
    corrected = pred.copy()
    corrected[25:30, 2:8] = 3
    valid = np.zeros(img.shape, bool)
    valid[:, :32] = True
    item = q.set_labels(i, corrected, valid, who="alice", why="fixed missed cell")
    assert item.state is ItemState.CORRECTED and item.revision == 1
    ti = item.train_item()
    np.testing.assert_array_equal(ti.labels, corrected)
    np.testing.assert_array_equal(ti.valid, valid)
    q.mark_used([i], "nuclei@2", who="trainer")
    item = q.get(i)
    assert item.state is ItemState.USED and item.used_by == "nuclei@2"
    hist = q.history(i)
    assert [h["state"] for h in hist] == ["new", "corrected", "used"]
    assert hist[1]["who"] == "alice" and hist[1]["why"] == "fixed missed cell"
    # A second correction is a new revision file; the first is never rewritten.
    first = item.labels_path
    first_bytes = first.read_bytes()
    corrected[0:3, 0:3] = 4
    item = q.set_labels(i, corrected, None)
    assert item.revision == 2 and item.labels_path != first
    assert first.read_bytes() == first_bytes
    assert item.state is ItemState.CORRECTED and item.valid_path is None
    assert q.counts() == {"corrected": 1}


def test_add_annotated_pair_and_drop(tmp_path):
    q = RetrainQueue(tmp_path / "home")
    img, lab = _frame(3)
    i = q.add(img, labels=lab, source="import", name="cellA")
    assert q.get(i).state is ItemState.CORRECTED
    with pytest.raises(AnnotationError, match="does not match"):
        q.add(img, labels=lab[:10])
    with pytest.raises(AnnotationError, match="floating point"):
        q.set_labels(i, lab.astype(np.float32))
    d = q.get(i).dir
    q.drop(i)
    assert not d.exists()
    with pytest.raises(QueueError, match="no queue item"):
        q.get(i)
    assert q.items() == []


def test_gc_removes_orphans_only(tmp_path):
    q = RetrainQueue(tmp_path / "home")
    img, pred = _frame(1)
    i = q.add(img, pred)
    orphan = q.items_dir / "deadbeef"
    orphan.mkdir()
    (orphan / "image.tif").write_bytes(b"half")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    assert q.gc() == ["deadbeef"]
    assert q.get(i).dir.exists()


_WORKER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from liveseg.retrain.queue import RetrainQueue, ItemState

    home, role, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    q = RetrainQueue(home)
    rng = np.random.default_rng(abs(hash(role)) % 1000)

    def frame(k):
        img = np.full((48, 48), k, dtype=np.uint16)
        img[::7, ::5] = rng.integers(0, 60000, size=img[::7, ::5].shape)
        lab = np.zeros((48, 48), np.uint32)
        lab[2:2 + k % 20 + 3, 5:15] = 1
        return img, lab

    if role == "acq":
        for k in range(n):
            img, lab = frame(k)
            i = q.add(img, lab, run="/runs/r", frame_index=k, reason="auto", source="policy")
            print(i, k, flush=True)
    elif role == "import":
        for k in range(n):
            img, lab = frame(1000 + k)
            i = q.add(img, labels=lab, source="import", name=f"imp{k}")
            print(i, 1000 + k, flush=True)
            new = q.items(ItemState.NEW)
            if new:
                q.set_labels(new[0].id, lab, who="editor")
    elif role == "train":
        seen = 0
        deadline = time.time() + 30
        while time.time() < deadline and seen < n:
            items = q.items(ItemState.CORRECTED)
            for it in items:
                ti = it.train_item()  # must load fully
                assert ti.labels.shape == ti.image.shape
            if items:
                q.mark_used([it.id for it in items], "m@2", who="trainer")
                seen += len(items)
        print("trained", seen, flush=True)
    """
)


def _spawn(home: Path, role: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(home), role, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_concurrent_processes_and_sigkill(tmp_path):
    home = tmp_path / "home"
    RetrainQueue(home)  # create the schema once
    acq = _spawn(home, "acq", 100000)  # runs until killed
    imp = _spawn(home, "import", 25)
    trn = _spawn(home, "train", 25)
    # Let everybody work on the queue at once, then SIGKILL the acquisition mid-write.
    deadline = time.time() + 60
    while time.time() < deadline:
        q = RetrainQueue(home)
        if len(q.items()) >= 40:
            break
        time.sleep(0.2)
    acq.send_signal(signal.SIGKILL)
    acq_out, _ = acq.communicate(timeout=30)
    imp_out, imp_err = imp.communicate(timeout=120)
    trn_out, trn_err = trn.communicate(timeout=120)
    assert acq.returncode == -signal.SIGKILL
    assert imp.returncode == 0, imp_err
    assert trn.returncode == 0, trn_err

    # The database opens and is intact; every row's files are complete.
    con = sqlite3.connect(home / "queue" / "queue.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    q = RetrainQueue(home)
    assert q.check() == []
    items = {it.id: it for it in q.items()}
    # No item whose add() returned is lost, and each holds exactly the frame it was given.
    acknowledged = [
        tuple(map(int, line.split())) for line in (acq_out + imp_out).splitlines() if line
    ]
    assert len(acknowledged) >= 40
    for item_id, k in acknowledged:
        assert item_id in items, f"item {item_id} lost"
        img = items[item_id].image()
        assert img[1, 1] == k
        digest = hashlib.sha256()
        digest.update(f"{img.dtype.str}{img.shape}".encode())
        digest.update(np.ascontiguousarray(img).tobytes())
        assert digest.hexdigest() == items[item_id].image_sha256
    # Rows exist only for acknowledged adds or the one add that may have committed right
    # before the kill; no row is half-written (check() above loaded every file).
    assert len(items) - len(acknowledged) in (0, 1)
    states = {it.state for it in items.values()}
    assert ItemState.USED in states
    assert "trained" in trn_out


def test_queue_cli_roundtrip(tmp_path):
    import json

    import tifffile
    from click.testing import CliRunner

    from liveseg.cli import main

    home = str(tmp_path / "home")
    img, lab = _frame(5)
    tifffile.imwrite(tmp_path / "a.tif", img)
    tifffile.imwrite(tmp_path / "a_labels.tif", lab)
    tifffile.imwrite(tmp_path / "bad_labels.tif", lab.astype(np.float32))
    r = CliRunner()

    def add(labels: str):
        image = str(tmp_path / "a.tif")
        return r.invoke(main, ["queue", "add", image, "--labels", labels, "--home", home])

    res = add(str(tmp_path / "a_labels.tif"))
    assert res.exit_code == 0, res.output
    res = add(str(tmp_path / "bad_labels.tif"))
    assert res.exit_code == 2 and "floating point" in res.output
    q = RetrainQueue(home)
    q.add(img, lab, reason="flagged", name="fl")
    res = r.invoke(main, ["queue", "list", "--json", "--home", home])
    rows = json.loads(res.output)
    assert [(x["name"], x["state"]) for x in rows] == [("a", "corrected"), ("fl", "new")]
    out = tmp_path / "x"
    res = r.invoke(main, ["queue", "export", "-o", str(out), "--home", home])
    assert res.exit_code == 0 and (out / "fl_labels.tif").is_file()
    fixed = lab.copy()
    fixed[fixed == 2] = 0
    tifffile.imwrite(out / "fl_labels.tif", fixed)
    res = r.invoke(main, ["queue", "import", str(out), "--home", home])
    assert res.exit_code == 0 and "fl: imported" in res.output
    res = r.invoke(main, ["queue", "show", "2", "--home", home])
    shown = json.loads(res.output)
    assert shown["state"] == "corrected" and len(shown["history"]) == 2
    res = r.invoke(main, ["queue", "drop", "1", "--home", home])
    assert res.exit_code == 0 and [i.name for i in q.items()] == ["fl"]


def test_item_names_are_safe_and_unique(tmp_path):
    q = RetrainQueue(tmp_path / "home")
    img, lab = _frame(1)
    a = q.add(img, labels=lab, name="../../etc/x y")
    b = q.add(img, labels=lab, name="../../etc/x y")
    c = q.add(img, labels=lab, name="..")
    names = [q.get(i).name for i in (a, b, c)]
    assert names[0] == "etc_x_y" and names[1] == "etc_x_y-2"
    assert names[2].startswith("item-")
    for n in names:
        assert "/" not in n and "\\" not in n and ".." not in n and not n.startswith(".")


def test_same_frame_flagged_twice_is_one_item(tmp_path, monkeypatch):
    q = RetrainQueue(tmp_path / "home")
    img, pred = _frame(2)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    first = q.add(img, pred, run=str(run), frame_index=4, reason="dim")
    monkeypatch.chdir(tmp_path)
    again = q.add(img, pred, run="runs/r1", frame_index=4, reason="still dim")
    assert again == first and len(q.items()) == 1
    assert q.find(run, 4) == first and q.find(run, 5) is None
    assert "flagged again" in q.history(first)[-1]["why"]
    other = q.add(img, pred, run=str(run), frame_index=5)
    assert other != first and q.find(str(run), 5) == other


def _pairs_on_disk(tmp_path, n=2):
    import tifffile

    paths = []
    for k, name in enumerate("ab"[:n]):
        img, lab = _frame(10 + k)
        lab[lab == 2] = 5  # an id gap, as deleting an object leaves
        tifffile.imwrite(tmp_path / f"{name}.tif", img)
        tifffile.imwrite(tmp_path / f"{name}_labels.tif", lab)
        paths.append((tmp_path / f"{name}.tif", tmp_path / f"{name}_labels.tif"))
    return paths


def test_queue_add_readme_form_and_repeated_form(tmp_path):
    """``queue add a.tif b.tif --labels a_labels.tif b_labels.tif``, as the README writes it."""
    from click.testing import CliRunner

    from liveseg.cli import main

    (a, al), (b, bl) = _pairs_on_disk(tmp_path)
    home = str(tmp_path / "home")
    r = CliRunner()
    res = r.invoke(
        main, ["queue", "add", str(a), str(b), "--labels", str(al), str(bl), "--home", home]
    )
    assert res.exit_code == 0, res.output
    assert "renumbered ids 5→2" in res.output
    items = RetrainQueue(home).items()
    assert [it.name for it in items] == ["a", "b"]
    assert all(it.state is ItemState.CORRECTED and it.labels().max() == 2 for it in items)
    home2 = str(tmp_path / "home2")
    res = r.invoke(
        main,
        [
            "queue",
            "add",
            str(a),
            "--labels",
            str(al),
            str(b),
            "--labels",
            str(bl),
            "--home",
            home2,
        ],
    )
    assert res.exit_code == 0, res.output
    assert [it.name for it in RetrainQueue(home2).items()] == ["a", "b"]
    res = r.invoke(main, ["queue", "add", str(a), str(b), "--labels", str(al), "--home", home2])
    assert res.exit_code == 2 and "got 2 images but 1 label files" in res.output


def test_queue_add_batch_is_all_or_nothing(tmp_path):
    import tifffile
    from click.testing import CliRunner

    from liveseg.cli import main

    (a, al), (b, bl) = _pairs_on_disk(tmp_path)
    _img, lab = _frame(0)
    tifffile.imwrite(bl, ((lab > 0) * 255).astype(np.uint8), imagej=True)  # a Fiji mask
    home = str(tmp_path / "home")
    res = CliRunner().invoke(
        main, ["queue", "add", str(a), str(b), "--labels", str(al), str(bl), "--home", home]
    )
    assert res.exit_code == 2 and "b_labels.tif" in res.output and "binary mask" in res.output
    assert RetrainQueue(home).items() == []


def test_queue_add_valid_masks_after_one_flag(tmp_path):
    import tifffile
    from click.testing import CliRunner

    from liveseg.cli import main

    (a, al), (b, bl) = _pairs_on_disk(tmp_path)
    masks = []
    for name in "ab":
        m = np.zeros((32, 40), np.uint8)
        m[:, :32] = 255  # what Fiji saves for a selection turned into a mask
        tifffile.imwrite(tmp_path / f"{name}_valid.tif", m)
        masks.append(str(tmp_path / f"{name}_valid.tif"))
    home = str(tmp_path / "home")
    args = ["queue", "add", str(a), str(b), "--labels", str(al), str(bl), "--valid", *masks]
    res = CliRunner().invoke(main, [*args, "--reason", "lab book p. 12", "--home", home])
    assert res.exit_code == 0, res.output
    items = RetrainQueue(home).items()
    assert [it.reason for it in items] == ["lab book p. 12"] * 2
    assert all(it.valid() is not None and it.valid()[:, :32].all() for it in items)
