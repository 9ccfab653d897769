"""The live chain, offline: image files and finished runs.

``liveseg segment`` and ``liveseg resegment`` use the same frame processor, tables,
sinks and hooks as a live acquisition (:mod:`liveseg.processing`), so offline results
are directly comparable; nothing here touches the hardware session.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from liveseg.assembly import assemble
from liveseg.config import LivesegConfig, parse_config
from liveseg.errors import LivesegError
from liveseg.imageio import read_image
from liveseg.processing import (
    ConsumerSpec,
    LabelsConsumer,
    PluginNotifier,
    TablesConsumer,
    TiffLabelsConsumer,
)
from liveseg.store import RunReader, RunStore
from liveseg.types import Frame

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["resegment_run", "segment_files"]


def _image_name(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".ome.tif", ".ome.tiff", ".tiff", ".tif", ".png", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def segment_files(
    paths: list[Path],
    out_dir: Path,
    config: LivesegConfig,
    *,
    home: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment image files into ``out_dir``; a bad file is reported, the rest go on."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = assemble(config, home=home, flags=False)
    store = RunStore(out_dir)
    processor = parts.processor(
        [
            ConsumerSpec("tables", TablesConsumer(store), critical=True),
            ConsumerSpec("labels", TiffLabelsConsumer(out_dir)),
            ConsumerSpec("plugins", PluginNotifier(parts.host)),
        ],
        record=store.event,
    )
    cfg = config.model_dump(mode="json")
    store.start({"kind": "segment", "config": cfg, "inputs": [str(p) for p in paths]})
    parts.record_plugin_failures(store.event)
    processor.setup(parts.run_info("segment", out_dir))
    errors: dict[str, str] = {}
    ok = 0
    t0 = time.perf_counter()
    summary: dict[str, Any] = {}
    try:
        for i, path in enumerate(tqdm(paths, desc="segment", unit="img", disable=not progress)):
            name = _image_name(path)
            try:
                image = read_image(path)
            except LivesegError as exc:
                errors[str(path)] = str(exc)
                store.event("input_error", frame=i, file=str(path), error=str(exc))
                continue
            result = processor.process(Frame(index=i, image=image, name=name))
            if result.status.value == "ok":
                ok += 1
            else:
                errors[str(path)] = str(result.error)
    finally:
        summary = processor.summary(time.perf_counter() - t0)
        summary.update(total=len(paths), ok=ok, failed=len(paths) - ok)
        store.finish(summary)
        processor.finish(summary)
        store.close()
        parts.close()
    return {"total": len(paths), "ok": ok, "failed": len(paths) - ok, "errors": errors}


def resegment_run(
    run_dir: Path,
    *,
    config: LivesegConfig | None = None,
    all_frames: bool = False,
    home: str | Path | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Segment a run's skipped (and failed) frames in place, appending to its tables."""
    import useq

    reader = RunReader(run_dir)
    info = reader.run_info
    if config is None:
        config = parse_config(info.get("config") or {}, f"{run_dir}/run.json")
    todo = [r for r in reader.frames() if all_frames or r["status"] in ("skipped", "failed")]
    parts = assemble(config, home=home, flags=False)
    store = RunStore(run_dir)
    processor = parts.processor(
        [
            ConsumerSpec("tables", TablesConsumer(store), critical=True),
            ConsumerSpec("labels", LabelsConsumer(store)),
        ],
        record=store.event,
    )
    parts.record_plugin_failures(store.event)
    processor.setup(parts.run_info("resegment", run_dir))
    hw = info.get("hardware") or {}
    ok = failed = 0
    try:
        for row in tqdm(todo, desc="resegment", unit="frame", disable=not progress):
            idx = json.loads(row["event_index"]) if row.get("event_index") else {"t": row["t"]}
            sx, sy = row.get("stage_x_um"), row.get("stage_y_um")
            frame = Frame(
                index=int(row["index"]),
                image=reader.image(int(row["index"])),
                event=useq.MDAEvent(index=idx),
                time_s=float(row.get("time_s") or 0.0),
                position=int(row.get("position") or 0),
                stage_xy=(float(sx), float(sy))
                if isinstance(sx, int | float) and isinstance(sy, int | float)
                else None,
                pixel_size_um=float(hw.get("pixel_size_um") or 1.0),
            )
            result = processor.process(frame)
            if result.status.value == "ok":
                ok += 1
            else:
                failed += 1
        store.event("resegment", frames=len(todo), ok=ok, failed=failed)
    finally:
        processor.finish({"kind": "resegment", "frames": len(todo), "ok": ok, "failed": failed})
        store.close()
        parts.close()
    return {"ok": ok, "failed": failed}
