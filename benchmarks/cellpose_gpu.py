"""Frames/s of the ``cellpose`` step with a Cellpose-SAM-sized network on a 512x512 frame.

Builds a randomly initialised CPSAM (SAM ViT-L encoder, exactly cpsam's size and cost;
no download) unless ``--weights`` names a real file, runs the backend on CUDA if present
(else MPS, else CPU) and prints one JSON object. Usage::

    python benchmarks/cellpose_gpu.py [--frames 10] [--batch-size 8] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--weights", default=None, help="real weights (default: random vit_l)")
    args = ap.parse_args()

    import torch

    from liveseg.pipeline import StepContext
    from liveseg.types import Frame
    from liveseg_cellpose.backend import CellposeBackend, CellposeParams
    from liveseg_cellpose.net import save_random_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or str(save_random_weights(Path(tmp) / "cpsam_random.pt", "vit_l"))
        params = CellposeParams(
            model=weights,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            # random weights: let objects through so mask post-processing costs count too
            cellprob_threshold=-6.0 if not args.weights else 0.0,
        )
        t0 = time.perf_counter()
        backend = CellposeBackend(params, StepContext(home=Path(tmp), threads=args.threads or 1))
        start_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        frames = [
            Frame(index=i, image=rng.integers(90, 4000, (args.size, args.size), dtype=np.uint16))
            for i in range(args.frames)
        ]
        if backend.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        counts = [backend.segment(f, None).count for f in frames]
        if backend.device.type == "cuda":
            torch.cuda.synchronize()
        per_frame_s = (time.perf_counter() - t0) / len(frames)
        t0 = time.perf_counter()
        batched = backend.segment_batch(frames)
        batch_s = (time.perf_counter() - t0) / len(frames)
        out = {
            "benchmark": "cellpose_gpu",
            "device": str(backend.device),
            "device_name": (
                torch.cuda.get_device_name(backend.device)
                if backend.device.type == "cuda"
                else "cpu"
            ),
            "weights": "random vit_l (cpsam-sized)" if not args.weights else args.weights,
            "precision": args.precision,
            "frame": [args.size, args.size],
            "frames": len(frames),
            "batch_size": args.batch_size,
            "session_start_s": round(start_s, 3),
            "warmup_ms": round(backend.warmup_ms, 1),
            "frames_per_s": round(1.0 / per_frame_s, 3),
            "ms_per_frame": round(per_frame_s * 1e3, 1),
            "frames_per_s_batched": round(1.0 / batch_s, 3),
            "mean_objects": float(np.mean(counts)),
            "batched_objects_match": [r.count for r in batched] == counts,
            "torch": torch.__version__,
        }
        backend.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
