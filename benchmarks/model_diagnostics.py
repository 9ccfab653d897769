"""Why the default unet backend misses nuclei on ``test_hard``: three diagnostics.

- ``clean_probe``: the same frames (same seeds, so the same nuclei) re-rendered with
  3000 photons and low read noise, then also with flat illumination and the mildest blur.
  If AP@0.5 stayed low on clean frames, noise is not what limits the model.
- ``seeds``: for each true nucleus, whether the decoder's seeds (distance above the seed
  threshold inside the foreground) miss it, share it with a neighbour (a merge), or give
  it its own seed.
- ``map_swap``: AP when one of the network's two maps is replaced by the ideal map
  computed from the true labels: which map holds the errors.
- ``test_time_flips``: AP with the four-flip average (off by default; 4x slower).

The shipped weights and decoding settings are used throughout; nothing here is used to
choose anything. Usage: ``python benchmarks/model_diagnostics.py [--n 24]``. Prints JSON.
About 20 seconds on the 2-core dev VM.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np


def _seed_census(predictor: Any, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, int]:
    from scipy import ndimage as ndi

    s = predictor.decode_settings()
    out = {"nuclei": 0, "no_seed": 0, "no_seed_under_40px": 0, "shared_seed": 0, "own_seed": 0}
    for image, labels in pairs:
        prob, dist = predictor.maps(image)
        seeds, n = ndi.label((prob > s["prob_threshold"]) & (dist > s["seed_threshold"]))
        # How many true nuclei each seed touches, from the distinct (seed, nucleus) pairs.
        both = (seeds > 0) & (labels > 0)
        base = int(labels.max()) + 1
        seen = np.unique(seeds[both].astype(np.int64) * base + labels[both])
        touched = np.bincount(seen // base, minlength=n + 1)
        for idx, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is None:
                continue
            mask = labels[sl] == idx
            out["nuclei"] += 1
            ids, counts = np.unique(seeds[sl][mask], return_counts=True)
            ids = ids[(ids > 0) & (counts >= 2)]
            if ids.size == 0:
                out["no_seed"] += 1
                out["no_seed_under_40px"] += int(mask.sum() < 40)
                continue
            out["shared_seed" if np.any(touched[ids] > 1) else "own_seed"] += 1
    return out


def _map_swap(predictor: Any, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    from liveseg.metrics import aggregate, average_precision
    from liveseg_torch.representation import decode, targets

    s = predictor.decode_settings()
    kw = {"prob_threshold": s["prob_threshold"], "seed_threshold": s["seed_threshold"]}
    res: dict[str, list[Any]] = {"network_maps": [], "ideal_foreground": [], "ideal_distance": []}
    for image, labels in pairs:
        prob, dist = predictor.maps(image)
        fg, ideal = targets(labels)
        for key, (pm, dm) in {
            "network_maps": (prob, dist),
            "ideal_foreground": (fg, dist),
            "ideal_distance": (prob, ideal),
        }.items():
            res[key].append(average_precision(labels, decode(pm, dm, **kw)))
    return {k: round(float(aggregate(v).ap[0.5]), 4) for k, v in res.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=24, help="frames of test_hard")
    a = p.parse_args()

    import torch

    from liveseg.synthetic import iter_dataset
    from liveseg_torch.evaluation import DATASETS, score
    from liveseg_torch.inference import Predictor
    from liveseg_torch.weights import default_weights_path, load_checkpoint

    torch.set_num_threads(2)
    spec = DATASETS["test_hard"]
    ckpt = load_checkpoint(default_weights_path())
    predictor = Predictor(ckpt, device="cpu")

    def frames(**overrides: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(iter_dataset(a.n, spec["seed"], spec["shape"], spec["style"], **overrides))

    def ap(pred: Predictor, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        r = score(lambda im: pred.predict(im)[0], pairs)
        return {
            k: round(float(r[k]), 4)
            for k in ("ap@0.5", "ap@0.75", "precision@0.5", "recall@0.5")
            if k in r
        }

    # A range of width ~0 still draws from the generator, so every other draw is unchanged.
    clean = {"photons": (3000.0, 3000.001), "read_noise": (0.5, 0.5001)}
    flat = {**clean, "illumination": (0.0, 1e-6), "blur": (1.0, 1.0001)}
    pairs = frames()
    result: dict[str, Any] = {
        "benchmark": "model_diagnostics",
        "frames": a.n,
        "clean_probe": {
            "as_is": ap(predictor, pairs),
            "photons_3000": ap(predictor, frames(**clean)),
            "photons_3000_flat_mild_blur": ap(predictor, frames(**flat)),
        },
        "seeds": _seed_census(predictor, pairs),
        "map_swap": _map_swap(predictor, pairs),
        "test_time_flips": ap(Predictor(ckpt, device="cpu", test_time_flips=True), pairs),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
