"""The seed's Table 2, measured: four tiers of segmentation on generated test sets.

Tiers: rule-based (threshold; for grains a dark-pixel threshold by Otsu's criterion,
computed as 2-means on intensity alone, then a watershed across the boundaries),
K-means (k = 2, classes ordered by intensity), the random-forest pixel classifier
trained from simulated scribbles covering <= 2 % of the pixels of ONE image of the
set's style (and, for grains and pores, the shipped chains, whose forests learnt from
densely sampled truth of three ``train``-style images), and deep learning (the shipped
``unet``, nuclei only: there is no ``unet_semantic`` yet). Sets: nuclei
(``liveseg.synthetic``, styles ``train`` and ``sparse``), grains and pores
(``liveseg.materials``, held-out ``test`` style). Whole cells: no generator exists, so
no row.

Metrics: object-class IoU (nuclei, pores: foreground; grains: the boundary class),
AP@0.5 of instances (pooled over frames, cellpose definition) and the median time per
512² frame of the whole chain, one thread: wall clock and the thread's CPU time (on a
shared machine the CPU time is what the chain would take on a quiet one).

Usage: ``python benchmarks/table2.py [--n 3] [--size 512]``. Prints JSON, then a Markdown
table.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np


def _chain(steps: list[dict[str, Any]]) -> Any:
    import tempfile
    from pathlib import Path

    from liveseg.config import StepConfig
    from liveseg.pipeline import Pipeline, StepContext
    from liveseg.plugins import PluginHost

    host = PluginHost()
    home = Path(tempfile.mkdtemp(prefix="liveseg-table2-home-"))
    return Pipeline.build(
        [StepConfig(**s) for s in steps], host.backends(), StepContext(home, threads=1)
    )


def _sets(n: int, size: int) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """name -> [(image, object mask or class map, instance labels)], plus a train image."""
    from liveseg.materials import grain_section, porous_section
    from liveseg.synthetic import generate

    shape = (size, size)
    out: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for style in ("sparse", "train"):
        items = []
        for k in range(n + 1):
            img, lab = generate(7000 + k, shape, style=style)
            items.append((img, (lab > 0).astype(np.uint8), lab))
        out[f"nuclei ({style})"] = items
    grains = [grain_section(0, shape, style="train")]
    grains += [grain_section(8000 + k, shape, style="test") for k in range(n)]
    out["grains"] = [(s.image, s.classes, s.labels) for s in grains]
    pores = [porous_section(0, shape, style="train")]
    pores += [porous_section(8000 + k, shape, style="test") for k in range(n)]
    out["pores"] = [(s.image, s.classes, s.labels) for s in pores]
    return out


def _rf_chain(name: str, train: tuple[np.ndarray, np.ndarray, np.ndarray], tmp: str) -> Any:
    from liveseg.builtins import pixel_classifier as pc

    image, classes, _ = train
    scribbles = pc.scribbles_from_classes(classes, 0.02, seed=0)
    t0 = time.perf_counter()
    names = ("grain", "boundary", "inclusion") if name == "grains" else ("bg", "fg")
    model = pc.train([image], [scribbles], class_names=names[: int(classes.max()) + 1])
    train_s = time.perf_counter() - t0
    d = pc.save(model, f"{tmp}/{name.split()[0]}-{abs(hash(name))}")
    if name == "grains":
        steps = [
            {"backend": "pixel_classifier", "params": {"model": str(d), "instances": "none"}},
            {
                "backend": "classes_to_instances",
                "params": {
                    "objects": ["grain", "inclusion"],
                    "boundary": "boundary",
                    "min_area": 4,
                },
            },
        ]
    else:
        steps = [
            {"backend": "pixel_classifier", "params": {"model": str(d), "instances": "none"}},
            {"backend": "classes_to_instances", "params": _split(name)},
        ]
    chain = _chain(steps)
    chain.train_s = train_s  # type: ignore[attr-defined]
    chain.painted = float((scribbles > 0).mean())  # type: ignore[attr-defined]
    return chain


def _split(name: str) -> dict[str, Any]:
    """Instances from the object class: touching nuclei split like the threshold does."""
    return {"min_area": 15 if name.startswith("nuclei") else 4, "split": name.startswith("nuclei")}


def _tiers(name: str, train: Any, tmp: str) -> dict[str, Any]:
    tiers: dict[str, Any] = {}
    if name == "grains":
        tiers["rule-based"] = _chain(
            [
                {"backend": "kmeans", "params": {"k": 2, "texture_weight": 0, "instances": False}},
                {
                    "backend": "classes_to_instances",
                    "params": {"objects": ["class1"], "boundary": "class0", "min_area": 4},
                },
            ]
        )
        tiers["K-means"] = _chain(
            [
                {"backend": "kmeans", "params": {"k": 3, "instances": False}},
                {
                    "backend": "classes_to_instances",
                    "params": {
                        "objects": ["class1", "class2"],
                        "boundary": "class0",
                        "min_area": 4,
                    },
                },
            ]
        )
    else:
        invert = name == "pores"  # dark pores: the threshold sees the inverted image
        tiers["rule-based"] = _chain([{"backend": "threshold"}])
        tiers["K-means"] = _chain(
            [
                {"backend": "kmeans", "params": {"k": 2, "invert": invert, "instances": False}},
                {"backend": "classes_to_instances", "params": _split(name)},
            ]
        )
    tiers["RF pixel classifier"] = _rf_chain(name, train, tmp)
    if name in ("grains", "pores"):
        from pathlib import Path

        from liveseg.config import load_yaml

        shipped = Path(__file__).resolve().parents[1] / "configs" / "pipelines" / f"{name}.yaml"
        tiers[f"RF, shipped `{name}` chain"] = _chain(load_yaml(shipped)["steps"])
    if name.startswith("nuclei"):
        try:
            tiers["deep learning (unet)"] = _chain(
                [
                    {"backend": "unet", "params": {"model": "default"}},
                    {"backend": "size_filter", "params": {"min_area": 15}},
                ]
            )
        except Exception as exc:  # torch plugin not installed
            tiers["deep learning (unet)"] = f"n/a ({exc})"
    return tiers


def main() -> None:
    """Run every tier on every set; print JSON and the Markdown table."""
    import tempfile

    from liveseg.metrics import aggregate, average_precision
    from liveseg.types import Frame

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3, help="test images per set")
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="liveseg-table2-")
    rows = []
    for name, items in _sets(args.n, args.size).items():
        train, test = items[0], items[1:]
        for tier, chain in _tiers(name, train, tmp).items():
            if isinstance(chain, str):
                rows.append({"set": name, "tier": tier, "note": chain})
                continue
            ious, aps, times, cpu = [], [], [], []
            for k, (image, truth_cls, truth_lab) in enumerate(test):
                if tier == "rule-based" and name == "pores":
                    image = (int(image.max()) - image.astype(np.int64)).astype(np.uint16)
                t0, c0 = time.perf_counter(), time.thread_time()
                res = chain.run(Frame(k, image))
                times.append((time.perf_counter() - t0) * 1e3)
                cpu.append((time.thread_time() - c0) * 1e3)
                if name == "grains":
                    names = res.class_names
                    bnd = names.index("boundary") if "boundary" in names else 0
                    pred_obj = res.classes == bnd if res.classes is not None else res.labels == 0
                    true_obj = truth_cls == 1  # the boundary class
                else:
                    pred_obj, true_obj = res.labels > 0, truth_cls > 0
                    if res.classes is not None and tier != "rule-based":
                        pred_obj = res.classes > 0
                ious.append(
                    float((pred_obj & true_obj).sum() / max((pred_obj | true_obj).sum(), 1))
                )
                aps.append(average_precision(truth_lab, res.labels, (0.5,)))
            row = {
                "set": name,
                "tier": tier,
                "iou": round(float(np.mean(ious)), 3),
                "ap50": round(float(aggregate(aps).ap[0.5]), 3),
                "ms_per_frame": round(float(np.median(times)), 1),
                "cpu_ms_per_frame": round(float(np.median(cpu)), 1),
            }
            if hasattr(chain, "train_s"):
                row["train_s"] = round(chain.train_s, 2)
                row["scribbled_fraction"] = round(chain.painted, 4)
            rows.append(row)
            chain.close()
            print(json.dumps(row), flush=True)
    print(json.dumps({"size": args.size, "n_test": args.n, "rows": rows}))
    print("\n| set | tier | IoU | AP@0.5 | ms / frame (CPU) |\n|---|---|---|---|---|")
    for r in rows:
        if "note" in r:
            print(f"| {r['set']} | {r['tier']} | – | – | {r['note'][:40]} |")
        else:
            extra = f" (train {r['train_s']} s)" if "train_s" in r else ""
            ms = f"{r['ms_per_frame']} ({r['cpu_ms_per_frame']}){extra}"
            cells = [r["set"], r["tier"], r["iou"], r["ap50"], ms]
            print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
