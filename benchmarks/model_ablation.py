"""Train a variant of the default network briefly and score it on the selection sets.

For comparing architectures and training settings before a full pretraining run: every
variant trains on the same synthetic frames (style ``train``, seed 0) with the same seed,
then is scored on ``val_hard`` (hard style, seed 3) and ``val`` (training style, seed 1)
with the decoding thresholds picked per set by ``pretrain.tune_decoding``. ``test_hard``
is deliberately not used: it stays the held-out report. Results for the shipped choice
are in ``docs/model-experiments.md``.

Usage: ``python benchmarks/model_ablation.py --levels 4 --channels 16 --steps 3000``
(add ``--batch-norm --lr 1e-2`` to train with BatchNorm, folded away afterwards).
Prints JSON. About 7-9 minutes per 3000 steps on one core of the dev VM.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--levels", type=int, default=3, choices=(3, 4))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--n-train", type=int, default=1200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-norm", action="store_true", help="BatchNorm while training, folded")
    a = p.parse_args()

    import torch

    from liveseg_torch.evaluation import dataset, score
    from liveseg_torch.inference import Predictor
    from liveseg_torch.network import NetConfig, UNetLite, fold_batch_norm
    from liveseg_torch.pretrain import tune_decoding
    from liveseg_torch.train import make_sample, train_steps
    from liveseg_torch.weights import Checkpoint

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    samples = [make_sample(img, lab) for img, lab in dataset("train", a.n_train)]
    t1 = time.perf_counter()
    torch.manual_seed(0)
    config = NetConfig(channels=a.channels, levels=a.levels, batch_norm=a.batch_norm)
    model = UNetLite(config)
    losses = train_steps(
        model, samples, steps=a.steps, batch_size=8, crop=128, learning_rate=a.lr, seed=0
    )
    model = fold_batch_norm(model)
    t2 = time.perf_counter()
    predictor = Predictor(Checkpoint(model=model), device="cpu")
    result: dict[str, object] = {
        "benchmark": "model_ablation",
        "args": vars(a),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "seconds": {"data": round(t1 - t0, 1), "train": round(t2 - t1, 1)},
        "loss_last_100": round(float(np.mean(losses[-100:])), 5),
    }
    for name in ("val_hard", "val"):
        pairs = dataset(name)
        predictor.ckpt.decode = tune_decoding(predictor, pairs)
        scores = score(lambda im: predictor.predict(im)[0], pairs)
        result[name] = {
            "ap@0.5": round(float(scores["ap@0.5"]), 4),
            "ap@0.75": round(float(scores["ap@0.75"]), 4),
            "decode": predictor.ckpt.decode,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
