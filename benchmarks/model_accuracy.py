"""Accuracy of the default unet backend vs the classical chain on held-out synthetic sets.

The main set is ``test_hard``: a seed the model never trained on and harder settings than
training (crowded, densely touching, elongated, dim and noisy nuclei). ``val`` (training
style, unseen seed) shows in-distribution accuracy. Both backends run through the real
pipeline; AP is the cellpose definition TP / (TP + FP + FN), pooled over frames.

``decode_ceiling`` decodes the *ideal* maps computed from the true labels, so it is the
best AP any network could reach with this representation and decoder: the half-resolution
watershed (the live default, ``decode_scale`` 2) loses the smallest objects even then.

Usage: ``python benchmarks/model_accuracy.py [--n 24] [--size 256]``. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _segmenter(steps):
    from liveseg.config import StepConfig
    from liveseg.pipeline import Pipeline, StepContext
    from liveseg.plugins import PluginHost
    from liveseg.types import Frame

    host = PluginHost()
    pipe = Pipeline.build(
        [StepConfig(**s) for s in steps], host.backends(), StepContext(home=Path.cwd())
    )

    def run(image: np.ndarray) -> np.ndarray:
        res = pipe.run(Frame(index=0, image=image))
        if res.error:
            raise RuntimeError(res.error)
        return res.labels

    return run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=24, help="frames per set")
    p.add_argument("--size", type=int, default=256)
    a = p.parse_args()

    import torch

    from liveseg.metrics import aggregate, average_precision
    from liveseg.synthetic import iter_dataset
    from liveseg_torch.evaluation import DATASETS, score
    from liveseg_torch.representation import decode, targets

    torch.set_num_threads(1)
    backends = {
        "unet": [{"backend": "unet"}],
        "unet_decode_scale_1": [{"backend": "unet", "params": {"decode_scale": 1}}],
        "threshold_chain": [
            {"backend": "normalize"},
            {"backend": "threshold"},
            {"backend": "size_filter", "params": {"min_area": 8}},
        ],
    }
    keep = ("ap@0.5", "ap@0.75", "ap@0.9", "precision@0.5", "recall@0.5")
    result: dict[str, object] = {"benchmark": "model_accuracy", "frames_per_set": a.n}
    for set_name in ("test_hard", "val"):
        spec = DATASETS[set_name]
        pairs = list(iter_dataset(a.n, spec["seed"], (a.size, a.size), spec["style"]))
        block: dict[str, object] = {
            "style": spec["style"],
            "seed": spec["seed"],
            "shape": [a.size, a.size],
            "objects": int(sum(int(lab.max()) for _, lab in pairs)),
        }
        for name, steps in backends.items():
            t0 = time.perf_counter()
            s = score(_segmenter(steps), pairs)
            entry = {k: round(float(s[k]), 4) for k in keep}
            entry["mean_matched_iou"] = round(float(s["mean_matched_iou"]), 4)
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            block[name] = entry
        ceiling = {}
        for scale in (2, 1):
            ideal = aggregate(
                average_precision(lab, decode(*targets(lab), scale=scale)) for _, lab in pairs
            )
            ceiling[f"decode_scale_{scale}_ap@0.5"] = round(float(ideal.ap[0.5]), 4)
        block["decode_ceiling"] = ceiling
        u, t = block["unet"], block["threshold_chain"]
        assert isinstance(u, dict) and isinstance(t, dict)
        block["unet_minus_threshold_ap@0.5"] = round(u["ap@0.5"] - t["ap@0.5"], 4)
        result[set_name] = block
    hard = result["test_hard"]
    assert isinstance(hard, dict)
    result["targets"] = {
        "unet_ap@0.5>=0.90": hard["unet"]["ap@0.5"] >= 0.90,
        "margin>=0.15": hard["unet_minus_threshold_ap@0.5"] >= 0.15,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
