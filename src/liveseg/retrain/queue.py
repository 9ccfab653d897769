"""The retraining queue: flagged frames waiting for (or carrying) corrected labels.

State lives under ``<home>/queue/``: ``queue.db`` (SQLite in WAL mode) and one
directory per item under ``items/`` holding copies of everything the item needs
(``image.tif``, ``predicted.tif``, and once corrected ``labels-<rev>.tif`` and optionally
``valid-<rev>.tif``), so deleting the run that produced a frame does not break the queue.

Crash safety (SIGKILL at any instant, several processes at once):

* item files are written to a hidden temporary name, fsynced, and renamed into place;
  a file is never rewritten (a new correction gets a new revision name);
* the database row that points at files is inserted/updated only after the files are
  complete, in one transaction; SQLite's WAL journal makes each transaction atomic;
* a crash between the two leaves at most an orphan directory that no row references,
  which :meth:`RetrainQueue.gc` removes. No row ever points at a missing or half file.

Item states move ``new → corrected → used``; every change is logged with who, when and
why in the ``history`` table. Labels whose ids had gaps are stored renumbered to
``1..N``; the renumbering (old → new, who, when, from which file) is kept beside them as
``renumbered-<rev>.json`` and noted in the history.

Item names are safe file names (``[A-Za-z0-9._-]``, no path separators, no ``..``) and
unique in the queue (a ``-2``, ``-3`` … suffix when two sources share a name), so
``queue export`` writes one pair per item inside its folder. One frame of one run is
one item: adding it again returns the existing item's id (:meth:`RetrainQueue.find`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import enum
import getpass
import hashlib
import json
import os
import re
import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
from liveseg.types import CLASS_DTYPE, LABEL_DTYPE, TrainItem

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

__all__ = [
    "CLASSES_PREFIX",
    "ItemState",
    "QueueError",
    "QueueItem",
    "RetrainQueue",
    "check_class_map",
    "safe_item_name",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dir TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    source TEXT NOT NULL,
    who TEXT NOT NULL,
    reason TEXT NOT NULL,
    run TEXT,
    frame_index INTEGER,
    name TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    image_sha256 TEXT NOT NULL,
    predicted TEXT,
    labels TEXT,
    labels_sha256 TEXT,
    valid TEXT,
    valid_sha256 TEXT,
    revision INTEGER NOT NULL DEFAULT 0,
    used_by TEXT
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item INTEGER NOT NULL,
    time TEXT NOT NULL,
    state TEXT NOT NULL,
    who TEXT NOT NULL,
    why TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_state ON items(state);
CREATE INDEX IF NOT EXISTS items_frame ON items(run, frame_index);
"""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 96


def safe_item_name(name: str, fallback: str = "item") -> str:
    """``name`` as a safe file-name stem: ``[A-Za-z0-9._-]`` only, no ``..``, no leading dot.

    Other characters (path separators, spaces, non-ASCII) become ``_``; runs of dots
    collapse to one; leading/trailing dots, ``_`` and ``-`` are dropped. An empty result
    is ``fallback``. Export writes ``<name>.tif`` etc., so this keeps every file inside
    the export folder whatever a source called itself.
    """
    s = _UNSAFE.sub("_", str(name))
    s = re.sub(r"\.{2,}", ".", s).strip("._-")[:_MAX_NAME].strip("._-")
    return s or fallback


CLASSES_PREFIX = "classes-"
"""File-name prefix of an item's class-map corrections (``classes-<revision>.tif``)."""


def check_class_map(classes: Any, shape: tuple[int, int], source: str) -> np.ndarray:
    """Validate a class-map correction and return it as ``uint8``.

    Raises
    ------
    QueueError
        For a shape mismatch, a non-integer image, or values outside 0..255.
    """
    arr = np.asarray(classes)
    if arr.ndim > 2:
        arr = np.squeeze(arr)
    if arr.shape != tuple(shape):
        raise QueueError(f"{source}: shape {tuple(arr.shape)} does not match the image's {shape}")
    if arr.dtype.kind not in "ui" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise QueueError(f"{source}: a class map holds class values 0..255 ({arr.dtype} given)")
    return arr.astype(CLASS_DTYPE)


class QueueError(LivesegError):
    """A queue operation cannot be done (unknown item, wrong state, bad files)."""


class ItemState(enum.StrEnum):
    """Where an item is in the loop."""

    NEW = "new"  # flagged; has the image and the model's predicted labels
    CORRECTED = "corrected"  # has corrected labels (and maybe a valid-region mask)
    USED = "used"  # went into a fine-tune (``used_by`` names the model version)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _sha256_array(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _write_tif(path: Path, arr: np.ndarray) -> None:
    """Write a TIFF durably under a temporary name, then rename it into place."""
    import tifffile

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        with open(tmp, "wb") as fh:
            tifffile.imwrite(fh, arr, compression="zlib")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _norm_run(run: str | None) -> str | None:
    """A run directory as an absolute path, so one run is one key however it was named."""
    if run is None:
        return None
    return str(Path(run).expanduser().resolve())


def _compose(first: Mapping[int, int], second: Mapping[int, int]) -> dict[int, int]:
    """The renumbering ``first`` then ``second`` as one ``{original: final}`` mapping."""
    out = {old: second.get(new, new) for old, new in first.items()}
    mapped = set(first.values())
    out.update({old: new for old, new in second.items() if old not in mapped})
    return {old: new for old, new in out.items() if old != new}


def _write_renumbering(
    directory: Path, revision: int, mapping: Mapping[int, int], who: str, when: str, source: str
) -> None:
    record = {
        "revision": revision,
        "who": who,
        "time": when,
        "source": source,
        "old_to_new": {str(k): int(v) for k, v in sorted(mapping.items())},
    }
    path = directory / f"renumbered-{revision}.json"
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _unique_name(con: sqlite3.Connection, base: str) -> str:
    """``base``, or ``base-2``, ``base-3`` … : the first name no item has (inside a txn)."""
    taken = {
        str(r[0])
        for r in con.execute(
            "SELECT name FROM items WHERE name=? OR name LIKE ? ESCAPE '\\'",
            (base, base.replace("_", "\\_") + "-%"),  # safe names hold no '%' or '\\'
        )
    }
    if base not in taken:
        return base
    k = 2
    while f"{base}-{k}" in taken:
        k += 1
    return f"{base}-{k}"


@dataclass(frozen=True)
class QueueItem:
    """One queue row, with paths to its files (all inside the queue directory)."""

    id: int
    state: ItemState
    dir: Path
    created: str
    updated: str
    source: str
    who: str
    reason: str
    run: str | None
    frame_index: int | None
    name: str
    shape: tuple[int, int]
    image_sha256: str
    predicted_path: Path | None
    labels_path: Path | None
    labels_sha256: str | None
    valid_path: Path | None
    valid_sha256: str | None
    revision: int
    used_by: str | None

    @property
    def image_path(self) -> Path:
        """The copied image."""
        return self.dir / "image.tif"

    def image(self) -> np.ndarray:
        """The image, as acquired."""
        import tifffile

        return np.asarray(tifffile.imread(self.image_path))

    def predicted(self) -> np.ndarray | None:
        """The model's labels at flag time (``None`` for imported pairs)."""
        import tifffile

        if self.predicted_path is None:
            return None
        return np.asarray(tifffile.imread(self.predicted_path), dtype=LABEL_DTYPE)

    @property
    def is_class_map(self) -> bool:
        """Whether the correction is a class map (``uint8`` class values), not instances."""
        return self.labels_path is not None and self.labels_path.name.startswith(CLASSES_PREFIX)

    def labels(self) -> np.ndarray | None:
        """The corrected labels (``None`` until corrected).

        ``uint32`` instance labels, or for a class-map correction (:attr:`is_class_map`)
        the ``uint8`` class map, which the pixel classifier's trainer reads as classes.
        """
        import tifffile

        if self.labels_path is None:
            return None
        dtype = CLASS_DTYPE if self.is_class_map else LABEL_DTYPE
        return np.asarray(tifffile.imread(self.labels_path), dtype=dtype)

    def valid(self) -> np.ndarray | None:
        """Where the corrected labels are valid (bool), or ``None`` for everywhere."""
        import tifffile

        if self.valid_path is None:
            return None
        return np.asarray(tifffile.imread(self.valid_path)) > 0

    def renumberings(self) -> list[dict[str, Any]]:
        """Every renumbering of imported label ids: revision, who, when, source, ``{old: new}``."""
        out = []
        for path in sorted(self.dir.glob("renumbered-*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(path.read_text(encoding="utf-8")))
        return sorted(out, key=lambda r: int(r.get("revision", 0)))

    def train_item(self) -> TrainItem:
        """The item as a training example (needs corrected labels)."""
        labels = self.labels()
        if labels is None:
            raise QueueError(f"item {self.id} has no corrected labels yet (state {self.state})")
        return TrainItem(image=self.image(), labels=labels, valid=self.valid(), name=self.name)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for ``queue show``/``list --json`` and model cards)."""
        return {
            "id": self.id,
            "state": self.state.value,
            "name": self.name,
            "created": self.created,
            "updated": self.updated,
            "source": self.source,
            "who": self.who,
            "reason": self.reason,
            "run": self.run,
            "frame_index": self.frame_index,
            "shape": list(self.shape),
            "image_sha256": self.image_sha256,
            "labels_sha256": self.labels_sha256,
            "valid_sha256": self.valid_sha256,
            "revision": self.revision,
            "used_by": self.used_by,
            "dir": str(self.dir),
            "renumbered": self.renumberings(),
        }


class RetrainQueue:
    """The queue under one data directory; every method opens its own connection.

    Because each call uses a fresh SQLite connection, one instance may be shared by
    threads, and any number of processes may use the same directory at once.
    """

    def __init__(self, home: str | os.PathLike[str], *, timeout_s: float = 60.0) -> None:
        self.home = Path(home)
        self.root = self.home / "queue"
        self.items_dir = self.root / "items"
        self.items_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "queue.db"
        self.timeout_s = timeout_s
        with self._connect() as con:
            con.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.db_path, timeout=self.timeout_s, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # -- adding ---------------------------------------------------------------------
    def add(
        self,
        image: np.ndarray,
        predicted_labels: np.ndarray | None = None,
        *,
        run: str | None = None,
        frame_index: int | None = None,
        reason: str = "",
        source: str = "operator",
        name: str | None = None,
        labels: np.ndarray | None = None,
        valid: np.ndarray | None = None,
        who: str | None = None,
        renumbered: Mapping[int, int] | None = None,
        labels_source: str = "",
        classes: np.ndarray | None = None,
    ) -> int:
        """Copy a frame into the queue and return the new item's id.

        ``classes`` is a class-map correction instead of ``labels`` (``uint8`` class
        values, e.g. from a semantic backend's ``class_names``); with ``valid`` it is a
        sparse scribble: only the painted pixels count (see :func:`check_class_map`).

        ``labels`` (corrected/annotated labels, validated like an import) make the item
        ``corrected`` at once; otherwise it is ``new``. A frame of a run that is already
        in the queue (same ``run`` and ``frame_index``) is not added twice: the existing
        item's id is returned. ``name`` is made safe and unique (see
        :func:`safe_item_name`). ``renumbered`` records an id renumbering done by the
        caller (``{old: new}``); ids with gaps in ``labels`` are renumbered and recorded
        here too. ``labels_source`` names the file the labels came from (for the record).
        """
        from liveseg.retrain.annotate import (
            check_image,
            check_labels_renumbered,
            check_valid,
            describe_renumbering,
        )

        run = _norm_run(run)
        if run is not None and frame_index is not None:
            existing = self.find(run, frame_index)
            if existing is not None:
                self.note(existing, f"flagged again ({source}): {reason or '-'}", who)
                return existing
        img = check_image(image, "image")
        shape = (int(img.shape[0]), int(img.shape[1]))
        pred = None
        if predicted_labels is not None:
            pred, _ = check_labels_renumbered(
                predicted_labels, shape, "predicted labels", binary_ok=True
            )
        lab = None
        mapping: dict[int, int] = dict(renumbered or {})
        if labels is not None:
            lab, again = check_labels_renumbered(labels, shape, labels_source or "labels")
            mapping = _compose(mapping, again)
        cls = None
        if classes is not None:
            if lab is not None:
                raise QueueError("give labels or a class map, not both")
            cls = check_class_map(classes, shape, labels_source or "class map")
        val = check_valid(valid, shape, "valid mask", lab) if valid is not None else None
        if val is not None and lab is None and cls is None:
            raise QueueError("a valid-region mask needs labels")
        labels_file = "labels-1.tif" if cls is None else f"{CLASSES_PREFIX}1.tif"
        if cls is not None:
            lab = cls
        uid = uuid.uuid4().hex
        final = self.items_dir / uid
        staging = self.items_dir / f".tmp-{uid}"
        staging.mkdir()
        now = _now()
        who = who or _user()
        try:
            _write_tif(staging / "image.tif", img)
            if pred is not None:
                _write_tif(staging / "predicted.tif", pred)
            if lab is not None:
                _write_tif(staging / labels_file, lab)
            if val is not None:
                _write_tif(staging / "valid-1.tif", val.astype(np.uint8))
            if mapping:
                _write_renumbering(staging, 1, mapping, who, now, labels_source)
            _fsync_dir(staging)
            os.rename(staging, final)
            _fsync_dir(self.items_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        state = ItemState.CORRECTED if lab is not None else ItemState.NEW
        default_name = (
            f"{Path(run).name}_f{frame_index:05d}"
            if run is not None and frame_index is not None
            else f"item-{uid[:8]}"
        )
        base_name = safe_item_name(name or default_name, fallback=f"item-{uid[:8]}")
        why = reason or source
        if mapping:
            why = f"{why}; {describe_renumbering(mapping)}"
        try:
            with self._transaction() as con:
                if run is not None and frame_index is not None:
                    row = con.execute(
                        "SELECT id FROM items WHERE run=? AND frame_index=? ORDER BY id LIMIT 1",
                        (run, int(frame_index)),
                    ).fetchone()
                    if row is not None:  # another process flagged it meanwhile
                        shutil.rmtree(final, ignore_errors=True)
                        return int(row[0])
                unique = _unique_name(con, base_name)
                cur = con.execute(
                    "INSERT INTO items (dir, state, created, updated, source, who, reason, run,"
                    " frame_index, name, height, width, image_sha256, predicted, labels,"
                    " labels_sha256, valid, valid_sha256, revision)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        uid,
                        state.value,
                        now,
                        now,
                        source,
                        who,
                        reason,
                        run,
                        frame_index,
                        unique,
                        shape[0],
                        shape[1],
                        _sha256_array(img),
                        "predicted.tif" if pred is not None else None,
                        labels_file if lab is not None else None,
                        _sha256_array(lab) if lab is not None else None,
                        "valid-1.tif" if val is not None else None,
                        _sha256_array(val) if val is not None else None,
                        1 if lab is not None else 0,
                    ),
                )
                item_id = int(cur.lastrowid or 0)
                con.execute(
                    "INSERT INTO history (item, time, state, who, why) VALUES (?,?,?,?,?)",
                    (item_id, now, state.value, who, why),
                )
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        return item_id

    def note(self, item_id: int, why: str, who: str | None = None) -> None:
        """Add a history line to an item without changing its state."""
        with self._transaction() as con:
            row = con.execute("SELECT state FROM items WHERE id=?", (item_id,)).fetchone()
            if row is not None:
                con.execute(
                    "INSERT INTO history (item, time, state, who, why) VALUES (?,?,?,?,?)",
                    (item_id, _now(), str(row[0]), who or _user(), why),
                )

    def find(self, run: str | os.PathLike[str], frame_index: int) -> int | None:
        """The id of the item holding frame ``frame_index`` of ``run``, or ``None``."""
        with self._connect() as con:
            row = con.execute(
                "SELECT id FROM items WHERE run=? AND frame_index=? ORDER BY id LIMIT 1",
                (_norm_run(str(run)), int(frame_index)),
            ).fetchone()
        return None if row is None else int(row[0])

    # -- reading --------------------------------------------------------------------
    def _row_to_item(self, row: sqlite3.Row) -> QueueItem:
        d = self.items_dir / row["dir"]

        def p(key: str) -> Path | None:
            return d / row[key] if row[key] else None

        return QueueItem(
            id=int(row["id"]),
            state=ItemState(row["state"]),
            dir=d,
            created=row["created"],
            updated=row["updated"],
            source=row["source"],
            who=row["who"],
            reason=row["reason"],
            run=row["run"],
            frame_index=row["frame_index"],
            name=row["name"],
            shape=(int(row["height"]), int(row["width"])),
            image_sha256=row["image_sha256"],
            predicted_path=p("predicted"),
            labels_path=p("labels"),
            labels_sha256=row["labels_sha256"],
            valid_path=p("valid"),
            valid_sha256=row["valid_sha256"],
            revision=int(row["revision"]),
            used_by=row["used_by"],
        )

    def get(self, item_id: int) -> QueueItem:
        """One item by id."""
        with self._connect() as con:
            row = con.execute("SELECT * FROM items WHERE id=?", (int(item_id),)).fetchone()
        if row is None:
            raise QueueError(f"no queue item {item_id} in {self.root} (see `liveseg queue list`)")
        return self._row_to_item(row)

    def items(
        self, state: ItemState | str | Iterable[ItemState | str] | None = None
    ) -> list[QueueItem]:
        """Items, oldest first, optionally only those in ``state`` (one or several)."""
        with self._connect() as con:
            if state is None:
                rows = con.execute("SELECT * FROM items ORDER BY id").fetchall()
            else:
                states = [state] if isinstance(state, str | ItemState) else list(state)
                values = [ItemState(s).value for s in states]
                marks = ",".join("?" * len(values))
                rows = con.execute(
                    f"SELECT * FROM items WHERE state IN ({marks}) ORDER BY id", values
                ).fetchall()
        return [self._row_to_item(r) for r in rows]

    def history(self, item_id: int) -> list[dict[str, Any]]:
        """Every state change of an item: time, state, who, why."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT time, state, who, why FROM history WHERE item=? ORDER BY id", (item_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of items per state."""
        with self._connect() as con:
            rows = con.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    # -- changing -------------------------------------------------------------------
    def set_labels(
        self,
        item_id: int,
        labels: np.ndarray,
        valid: np.ndarray | None = None,
        *,
        who: str | None = None,
        why: str = "corrected",
        renumbered: Mapping[int, int] | None = None,
        labels_source: str = "",
    ) -> QueueItem:
        """Store corrected labels (validated) as a new revision; the item becomes corrected.

        Ids with gaps are renumbered to ``1..N``; that renumbering, and one the caller
        did already (``renumbered``, ``{old: new}``), is recorded with the revision
        (``renumbered-<rev>.json``) and in the history line.
        """
        from liveseg.retrain.annotate import (
            check_labels_renumbered,
            check_valid,
            describe_renumbering,
        )

        item = self.get(item_id)
        lab, again = check_labels_renumbered(
            labels, item.shape, labels_source or f"labels for item {item_id}"
        )
        mapping = _compose(dict(renumbered or {}), again)
        val = check_valid(valid, item.shape, f"valid mask for item {item_id}", lab)
        rev = item.revision + 1
        while (item.dir / f"labels-{rev}.tif").exists():  # a concurrent or crashed writer
            rev += 1
        labels_name = f"labels-{rev}.tif"
        valid_name = f"valid-{rev}.tif" if val is not None else None
        now = _now()
        who = who or _user()
        _write_tif(item.dir / labels_name, lab)
        if val is not None and valid_name is not None:
            _write_tif(item.dir / valid_name, val.astype(np.uint8))
        if mapping:
            _write_renumbering(item.dir, rev, mapping, who, now, labels_source)
            why = f"{why}; {describe_renumbering(mapping)}"
        _fsync_dir(item.dir)
        with self._transaction() as con:
            cur = con.execute(
                "UPDATE items SET state=?, updated=?, labels=?, labels_sha256=?, valid=?,"
                " valid_sha256=?, revision=?, used_by=NULL WHERE id=?",
                (
                    ItemState.CORRECTED.value,
                    now,
                    labels_name,
                    _sha256_array(lab),
                    valid_name,
                    _sha256_array(val) if val is not None else None,
                    rev,
                    item_id,
                ),
            )
            if cur.rowcount == 0:
                raise QueueError(f"queue item {item_id} was dropped meanwhile")
            con.execute(
                "INSERT INTO history (item, time, state, who, why) VALUES (?,?,?,?,?)",
                (item_id, now, ItemState.CORRECTED.value, who, why),
            )
        return self.get(item_id)

    def mark_used(self, item_ids: Sequence[int], model: str, *, who: str | None = None) -> None:
        """Record that these corrected items trained ``model`` (state ``used``)."""
        now = _now()
        who = who or _user()
        with self._transaction() as con:
            for item_id in item_ids:
                con.execute(
                    "UPDATE items SET state=?, updated=?, used_by=? WHERE id=?",
                    (ItemState.USED.value, now, model, item_id),
                )
                con.execute(
                    "INSERT INTO history (item, time, state, who, why) VALUES (?,?,?,?,?)",
                    (item_id, now, ItemState.USED.value, who, f"trained {model}"),
                )

    def drop(self, item_id: int) -> None:
        """Remove an item and its files."""
        item = self.get(item_id)
        with self._transaction() as con:
            con.execute("DELETE FROM items WHERE id=?", (item_id,))
            con.execute("DELETE FROM history WHERE item=?", (item_id,))
        shutil.rmtree(item.dir, ignore_errors=True)

    def gc(self) -> list[str]:
        """Remove item directories no row references (left by a crash); returns them.

        Staging directories younger than a minute are kept (a writer may be using them).
        """
        import time

        with self._connect() as con:
            known = {r[0] for r in con.execute("SELECT dir FROM items").fetchall()}
        removed = []
        for d in self.items_dir.iterdir():
            name = d.name
            if name in known:
                continue
            if time.time() - d.stat().st_mtime < 60:
                continue
            shutil.rmtree(d, ignore_errors=True)
            removed.append(name)
        return removed

    def check(self) -> list[str]:
        """Integrity problems: SQLite's own check plus every file a row points at."""
        problems: list[str] = []
        with self._connect() as con:
            status = con.execute("PRAGMA integrity_check").fetchone()[0]
            if status != "ok":
                problems.append(f"database: {status}")
        for item in self.items():
            for path in (item.image_path, item.predicted_path, item.labels_path, item.valid_path):
                if path is None:
                    continue
                try:
                    import tifffile

                    tifffile.imread(path)
                except Exception as exc:
                    problems.append(f"item {item.id}: {path.name}: {exc!r}")
        return problems
