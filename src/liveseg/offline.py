"""The live chain, offline: image files and finished runs.

``liveseg segment`` and ``liveseg resegment`` use the same frame processor, tables,
sinks and hooks as a live acquisition (:mod:`liveseg.processing`), so offline results
are directly comparable; nothing here touches the hardware session.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from liveseg.assembly import assemble
from liveseg.config import LivesegConfig, parse_config
from liveseg.errors import LivesegError
from liveseg.imageio import ImageSelection, image_stem, read_image_data
from liveseg.processing import (
    ConsumerSpec,
    LabelsConsumer,
    PluginNotifier,
    TablesConsumer,
    TiffLabelsConsumer,
)
from liveseg.store import RunReader, RunStore, check_output_dir
from liveseg.types import Frame

__all__ = ["UNLABELLED", "resegment_run", "segment_files"]

UNLABELLED = ("acquired", "skipped", "failed")
"""Statuses of frames whose image is stored but that have no labels (yet)."""


def _image_name(path: Path) -> str:
    return image_stem(path.name)


def _relative_names(paths: list[Path]) -> list[str]:
    """Output names: each input's path below the inputs' common folder, suffix removed."""
    folders = [p.resolve().parent for p in paths]
    common = Path(os.path.commonpath(folders)) if folders else Path()
    return [(p.resolve().parent.relative_to(common) / _image_name(p)).as_posix() for p in paths]


def segment_files(
    paths: list[Path],
    out_dir: Path,
    config: LivesegConfig,
    *,
    home: str | Path | None = None,
    progress: bool = True,
    selection: ImageSelection | None = None,
) -> dict[str, Any]:
    """Segment image files into ``out_dir``; a bad file is reported, the rest go on.

    ``selection`` picks the scene/channel/time point/z-plane of multi-dimensional files
    (the same for every file); the pixel size comes from the config, else the file.

    Labels go to ``<out>/<relative path>_labels.tif``, the path relative to the inputs'
    common folder, so two inputs of the same name (``s1/x.tif``, ``s2/x.tif``) never
    overwrite each other.

    Raises
    ------
    LivesegError
        When ``out_dir`` already holds a run (its files are left untouched).
    """
    check_output_dir(out_dir, "segment")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = assemble(config, home=home, flags=False)
    store = RunStore(out_dir)
    rel_names = _relative_names(paths)
    processor = parts.processor(
        [
            ConsumerSpec("labels", TiffLabelsConsumer(out_dir)),  # before its "ok" row
            ConsumerSpec("tables", TablesConsumer(store), critical=True),
            ConsumerSpec("plugins", PluginNotifier(parts.host)),
        ],
        record=store.event,
    )
    cfg = config.model_dump(mode="json")
    sel = selection or ImageSelection()
    info: dict[str, Any] = {"kind": "segment", "config": cfg, "inputs": [str(p) for p in paths]}
    if sel.describe():
        info["selection"] = sel.describe()
    store.start(info)
    parts.record_plugin_failures(store.event)
    processor.setup(parts.run_info("segment", out_dir))
    errors: dict[str, str] = {}
    pixel_sizes: dict[str, dict[str, Any]] = {}
    ok = 0
    t0 = time.perf_counter()
    summary: dict[str, Any] = {}
    # Up to backlog.batch readable files are segmented together (Pipeline.run_batch);
    # an unreadable one is dispatched after the files before it, so sinks see input order.
    pending: list[tuple[Path, Frame]] = []

    def flush() -> int:
        done = processor.process_batch([f for _, f in pending])
        for (p, _), result in zip(pending, done, strict=True):
            if result.status.value != "ok":
                errors[str(p)] = str(result.error)
        pending.clear()
        return sum(r.status.value == "ok" for r in done)

    try:
        for i, path in enumerate(tqdm(paths, desc="segment", unit="img", disable=not progress)):
            name = rel_names[i]
            try:
                data = read_image_data(path, sel)
            except LivesegError as exc:
                ok += flush()
                errors[str(path)] = str(exc)
                processor.unreadable(i, name, str(exc), file=str(path))
                continue
            image = data.array
            px, px_source = data.measure_with(config.hardware.pixel_size_um)
            pixel_sizes[name] = {"um": px, "source": px_source}
            if px_source is None:
                store.event(
                    "pixel_size",
                    frame=i,
                    file=str(path),
                    warning="the file states no pixel size: µm columns are pixels",
                )
            frame = Frame(
                index=i,
                image=image,
                name=name,
                pixel_size_um=px,
                metadata={"pixel_size_source": px_source},
            )
            pending.append((path, frame))
            if len(pending) >= config.backlog.batch:
                ok += flush()
        ok += flush()
    finally:
        summary = processor.summary(time.perf_counter() - t0)
        summary.update(total=len(paths), ok=ok, failed=len(paths) - ok, pixel_sizes=pixel_sizes)
        store.finish(summary)
        processor.finish(summary)
        store.close()
        parts.close()
    return {
        "total": len(paths),
        "ok": ok,
        "failed": len(paths) - ok,
        "errors": errors,
        "pixel_sizes": pixel_sizes,
    }


def resegment_run(
    run_dir: Path,
    *,
    config: LivesegConfig | None = None,
    all_frames: bool = False,
    home: str | Path | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Segment a run's frames that have no labels, in place, appending to its tables.

    That is every frame ``acquired`` (not segmented before the run ended, e.g. killed),
    ``skipped`` or ``failed``; ``all_frames`` redoes every frame. Spool files an
    interrupted run left behind are consumed. A run with nothing to do is not touched.

    Raises
    ------
    LivesegError
        For a ``segment``/``batch`` output, or a run that is still being written.
    """
    import useq

    reader = RunReader(run_dir)
    info = reader.run_info
    kind = info.get("kind")
    if kind in ("segment", "batch"):
        raise LivesegError(
            f"{run_dir} is the output of 'liveseg {kind}', not an acquisition: "
            f"run 'liveseg {kind}' again to redo it"
        )
    if info.get("status") == "running":
        raise LivesegError(f"{run_dir} is still being written by a running acquisition")
    spool = run_dir / ".spool"
    orphans = sorted(spool.glob("*.npy")) if spool.is_dir() else []
    todo = [r for r in reader.frames() if all_frames or r["status"] in UNLABELLED]
    if not todo and not orphans:
        return {"ok": 0, "failed": 0}  # nothing to do: the run stays byte-identical
    if config is None:
        config = parse_config(info.get("config") or {}, f"{run_dir}/run.json")
    parts = assemble(config, home=home, flags=False)
    store = RunStore(run_dir)
    processor = parts.processor(
        [
            ConsumerSpec("labels", LabelsConsumer(store)),  # before its "ok" row
            ConsumerSpec("tables", TablesConsumer(store), critical=True),
        ],
        record=store.event,
    )
    parts.record_plugin_failures(store.event)
    processor.setup(parts.run_info("resegment", run_dir))
    hw = info.get("hardware") or {}
    pixel_size = float(info.get("pixel_size_um") or hw.get("pixel_size_um") or 1.0)
    ok = failed = 0
    try:
        n = config.backlog.batch  # frames segmented together (Pipeline.run_batch)
        bar = tqdm(total=len(todo), desc="resegment", unit="frame", disable=not progress)
        for k in range(0, len(todo), n):
            frames = []
            for row in todo[k : k + n]:
                idx = json.loads(row["event_index"]) if row.get("event_index") else {"t": row["t"]}
                sx, sy = row.get("stage_x_um"), row.get("stage_y_um")
                frames.append(
                    Frame(
                        index=int(row["index"]),
                        image=reader.image(int(row["index"])),
                        event=useq.MDAEvent(index=idx),
                        time_s=float(row.get("time_s") or 0.0),
                        position=int(row.get("position") or 0),
                        stage_xy=(float(sx), float(sy))
                        if isinstance(sx, int | float) and isinstance(sy, int | float)
                        else None,
                        pixel_size_um=pixel_size,
                    )
                )
            for result in processor.process_batch(frames):
                if result.status.value == "ok":
                    ok += 1
                else:
                    failed += 1
            bar.update(len(frames))
        bar.close()
        store.event("resegment", frames=len(todo), ok=ok, failed=failed)
        # Spooled frames of an interrupted run: their images are in the OME-Zarr store
        # (written before they were queued) and have just been segmented from there.
        for path in orphans:
            path.unlink(missing_ok=True)
        if orphans:
            store.event("spool_consumed", files=len(orphans))
            with contextlib.suppress(OSError):
                spool.rmdir()
    finally:
        processor.finish({"kind": "resegment", "frames": len(todo), "ok": ok, "failed": failed})
        store.close()
        parts.close()
    return {"ok": ok, "failed": failed}
