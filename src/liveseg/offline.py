"""The live chain, offline: image files and finished runs.

``liveseg segment`` and ``liveseg resegment`` use the same FrameProcessor, tables and
hooks as a live acquisition, so offline results are directly comparable.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from liveseg.config import LivesegConfig, parse_config
from liveseg.errors import LivesegError
from liveseg.home import resolve_home
from liveseg.imageio import read_image, write_labels_tif
from liveseg.session import FrameProcessor, build_host, build_pipeline
from liveseg.store import RunReader, RunStore
from liveseg.types import Frame

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

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
    host = build_host(config)
    pipeline = build_pipeline(config, host, resolve_home(home or config.home))
    store = RunStore(out_dir)
    names: dict[int, str] = {}

    def write(frame: Frame, labels: np.ndarray) -> None:
        write_labels_tif(out_dir / f"{names[frame.index]}_labels.tif", labels)

    processor = FrameProcessor(pipeline, host, store, write_labels=write)
    store.start(
        {
            "kind": "segment",
            "config": config.model_dump(mode="json"),
            "inputs": [str(p) for p in paths],
        }
    )
    errors: dict[str, str] = {}
    ok = 0
    try:
        for i, path in enumerate(tqdm(paths, desc="segment", unit="img", disable=not progress)):
            names[i] = _image_name(path)
            try:
                image = read_image(path)
            except LivesegError as exc:
                errors[str(path)] = str(exc)
                store.event("input_error", frame=i, file=str(path), error=str(exc))
                continue
            result = processor.process(Frame(index=i, image=image, name=names[i]))
            if result.status.value == "ok":
                ok += 1
            else:
                errors[str(path)] = str(result.error)
    finally:
        summary = processor.summary(0.0)
        summary.update(total=len(paths), ok=ok, failed=len(paths) - ok)
        store.finish(summary)
        store.close()
        pipeline.close()
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
    host = build_host(config)
    pipeline = build_pipeline(config, host, resolve_home(home or config.home))
    store = RunStore(run_dir)
    processor = FrameProcessor(pipeline, host, store)
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
        store.close()
        pipeline.close()
    return {"ok": ok, "failed": failed}
