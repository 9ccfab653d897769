"""Is a candidate checkpoint really better than its parent? A paired bootstrap over frames.

``pretrain`` keeps a stage when its pooled AP@0.5 on the validation set (``val40`` for the
new sample types: 16 ``train``-style + 24 ``val``-style frames, seed 1) beats the stage
before. With 40 frames a margin of a few thousandths is noise, and shipping on it lets
the held-out number walk (``docs/model-experiments.md``, sixth and seventh sessions).
This scores both checkpoints on the same frames with their own decoding settings,
resamples the frames with replacement (the same draw for both: paired), and reports the
difference of pooled AP@0.5 with its 90 % interval and the share of draws in which the
candidate is ahead. Ship on ``val40``; the held-out ``test`` rows are printed for the
record, never to choose.

Each checkpoint decodes as the ``model.json`` beside it says (``step_params``, e.g.
full resolution for ``bacteria``), else at the live default; ``--decode-scale`` forces one.

Usage: ``python benchmarks/paired_bootstrap.py KIND PARENT.pt CANDIDATE.pt
[--decode-scale 1|2] [--draws 4000]``. Prints JSON. Under a minute per pair on the dev VM.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _card_decode_scale(path: str) -> int:
    """The decoding scale the card beside ``path`` was scored with (2 without one)."""
    card = Path(path).with_name("model.json")
    params = json.loads(card.read_text()).get("step_params", {}) if card.is_file() else {}
    return int(params.get("decode_scale", 2))


def _counts(path: str, pairs, decode_scale: int | None) -> np.ndarray:
    """(true positives at IoU 0.5, true objects, predicted objects) per frame."""
    from liveseg.metrics import average_precision
    from liveseg_torch.inference import Predictor
    from liveseg_torch.weights import load_checkpoint

    scale = decode_scale or _card_decode_scale(path)
    predictor = Predictor(load_checkpoint(path), device="cpu", decode_scale=scale)
    rows = []
    for image, labels in pairs:
        r = average_precision(labels, predictor.predict(image)[0], (0.5,))
        rows.append((r.tp[0.5], r.n_true, r.n_pred))
    return np.asarray(rows, float)


def _pooled_ap(counts: np.ndarray) -> float:
    """Pooled over frames (axis -2); ``counts`` may carry leading bootstrap draws."""
    total = counts.sum(axis=-2)
    tp, n_true, n_pred = total[..., 0], total[..., 1], total[..., 2]
    return tp / np.maximum(n_true + n_pred - tp, 1)


def compare(parent: np.ndarray, candidate: np.ndarray, draws: int, seed: int = 0) -> dict:
    """Pooled AP@0.5 of both, their difference, its 90 % interval and P(candidate ahead)."""
    idx = np.random.default_rng(seed).integers(0, len(parent), (draws, len(parent)))
    diff = _pooled_ap(candidate[idx]) - _pooled_ap(parent[idx])
    return {
        "parent": round(float(_pooled_ap(parent)), 4),
        "candidate": round(float(_pooled_ap(candidate)), 4),
        "difference": round(float(_pooled_ap(candidate) - _pooled_ap(parent)), 4),
        "ci90": [round(float(x), 4) for x in np.percentile(diff, [5, 95])],
        "p_candidate_ahead": round(float((diff > 0).mean()), 3),
        "frames": len(parent),
    }


def main() -> None:
    import torch

    from liveseg_torch.pretrain import kind_sets

    p = argparse.ArgumentParser()
    p.add_argument("kind", help="sample type: nuclei, cells, bacteria, transmitted")
    p.add_argument("parent")
    p.add_argument("candidate")
    p.add_argument("--decode-scale", type=int, default=None, choices=(1, 2))
    p.add_argument("--draws", type=int, default=4000)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    val, test = kind_sets(a.kind)
    scales = {
        k: a.decode_scale or _card_decode_scale(getattr(a, k)) for k in ("parent", "candidate")
    }
    out: dict[str, object] = {"kind": a.kind, "decode_scale": scales}
    for name, pairs in (("val", val), ("test_for_the_record", test)):
        parent = _counts(a.parent, pairs, a.decode_scale)
        candidate = _counts(a.candidate, pairs, a.decode_scale)
        out[name] = compare(parent, candidate, a.draws)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
