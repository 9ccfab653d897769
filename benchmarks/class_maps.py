"""What carrying a class map through the frame path costs per frame, beside the chain.

Per 512² frame of a generated grain section and porous section (their true class maps
and instances, so the chain itself is not timed): the measuring
(:func:`liveseg.processing.class_summary`: class fractions, component counts, G or
porosity), writing the class map into an OME-NGFF label image (``RunStore.write_classes``)
and as a TIFF (``write_classes_tif``). Median wall and thread-CPU milliseconds over
``--repeat`` frames.

Usage: ``python benchmarks/class_maps.py [--size 512] [--repeat 5]``. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from liveseg.builtins.classes import ClassTable
from liveseg.imageio import write_classes_tif
from liveseg.materials import GRAIN_CLASSES, PORE_CLASSES, grain_section, porous_section
from liveseg.processing import class_summary
from liveseg.store import RunStore
from liveseg.types import Frame, FrameResult


def _time(fn: Any, repeat: int) -> dict[str, float]:
    wall, cpu = [], []
    for k in range(repeat):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn(k)
        wall.append((time.perf_counter() - w0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    return {"wall_ms": float(np.median(wall)), "cpu_ms": float(np.median(cpu))}


def _costs(name: str, sec: Any, names: tuple[str, ...], tmp: Path, repeat: int) -> Any:
    classes = np.asarray(sec.classes, np.uint8)
    result = FrameResult(labels=sec.labels, classes=classes, class_names=names)
    frame = Frame(0, np.asarray(sec.image), pixel_size_um=1.0)
    meta = ClassTable.default(names).ngff_image_label()
    store = RunStore(tmp / name)
    try:
        return {
            "class_summary": _time(lambda k: class_summary(frame, result), repeat),
            "write_ngff": _time(lambda k: store.write_classes(0, {"t": k}, classes, meta), repeat),
            "write_tif": _time(
                lambda k: write_classes_tif(tmp / f"{name}{k}.tif", classes, names), repeat
            ),
        }
    finally:
        store.close()


def main() -> None:
    """Print the per-frame costs as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    shape = (args.size, args.size)
    out: dict[str, Any] = {"size": args.size, "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as tmp:
        out["grains"] = _costs(
            "grains", grain_section(1, shape, style="test"), GRAIN_CLASSES, Path(tmp), args.repeat
        )
        out["pores"] = _costs(
            "pores", porous_section(1, shape, style="test"), PORE_CLASSES, Path(tmp), args.repeat
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
