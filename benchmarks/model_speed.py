"""Speed of the default unet backend vs the classical chain vs Cellpose, one run.

All backends see the same 512x512 synthetic uint16 frames (``liveseg.synthetic``), go
through the real :class:`liveseg.pipeline.Pipeline` (frame in -> labels out), and are
timed per frame after a warm-up. Cellpose-SAM has no weights here, so its network runs
randomly initialised on one 256x256 tile (network forward only: a lower bound on its
cost). A last block times the two instance decoders on ideal maps built from the ground
truth: seeded watershed on distance maps (ours) vs Cellpose flow following.

Usage: ``python benchmarks/model_speed.py [--frames 8] [--repeats 30] [--no-cellpose]``.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def _stats(times: list[float]) -> dict[str, float]:
    arr = np.asarray(times) * 1e3
    return {
        "frames_per_s": round(float(len(arr) / (arr.sum() / 1e3)), 2),
        "latency_ms_p50": round(float(np.percentile(arr, 50)), 2),
        "latency_ms_p95": round(float(np.percentile(arr, 95)), 2),
        "latency_ms_mean": round(float(arr.mean()), 2),
        "n": len(arr),
    }


def _time_pipeline(steps, frames, repeats: int, threads: int) -> dict[str, float]:
    import torch

    from liveseg.config import StepConfig
    from liveseg.pipeline import Pipeline, StepContext
    from liveseg.plugins import PluginHost
    from liveseg.types import Frame

    torch.set_num_threads(threads)
    host = PluginHost()
    ctx = StepContext(home=Path.cwd(), threads=threads)
    pipe = Pipeline.build([StepConfig(**s) for s in steps], host.backends(), ctx)
    fr = [Frame(index=i, image=img) for i, img in enumerate(frames)]
    for f in fr[:2]:
        pipe.run(f)  # warm-up
    times, counts = [], []
    for i in range(repeats):
        f = fr[i % len(fr)]
        t0 = time.perf_counter()
        res = pipe.run(f)
        times.append(time.perf_counter() - t0)
        counts.append(res.count)
        if res.error:
            raise RuntimeError(res.error)
    pipe.close()
    out = _stats(times)
    out["mean_objects"] = round(float(np.mean(counts)), 1)
    out["threads"] = threads
    return out


def _time_cellpose(
    tile: np.ndarray, repeats: int, threads: int, dtype: str = "float32"
) -> dict[str, object]:
    import torch

    try:
        from cellpose.vit import CPSAM
    except Exception as exc:  # not installed / incompatible
        return {"skipped": f"cellpose not importable: {exc!r}"}
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    net = CPSAM(dtype=tdtype).to(tdtype).eval()  # random init: no weights here
    x = np.stack([tile, tile, tile])[None].astype(np.float32)
    xt = torch.from_numpy(x).to(tdtype)
    times = []
    with torch.inference_mode():
        net(xt)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(xt)
            times.append(time.perf_counter() - t0)
    out: dict[str, object] = dict(_stats(times))
    out.update(
        {
            "what": f"CPSAM network forward, random init, {dtype}, one 256x256 tile",
            "threads": threads,
            "est_ms_per_512_frame": round(4 * float(np.mean(times)) * 1e3, 1),
        }
    )
    return out


def _decoders(labels: np.ndarray, repeats: int) -> dict[str, object]:
    import torch

    from liveseg_torch.representation import decode, targets

    fg, dist = targets(labels)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        decode(fg, dist)
        times.append(time.perf_counter() - t0)
    out: dict[str, object] = {"distance_watershed": _stats(times)}
    try:
        from cellpose import dynamics
    except Exception as exc:
        out["cellpose_flows"] = {"skipped": repr(exc)}
        return out
    flows = dynamics.labels_to_flows([labels.astype(np.int32)])[0]  # (4, H, W): lab, prob, dy, dx
    dp = flows[2:].astype(np.float32) * 5.0
    cellprob = np.where(labels > 0, 5.0, -5.0).astype(np.float32)
    times = []
    for _ in range(max(2, repeats // 5)):
        t0 = time.perf_counter()
        dynamics.compute_masks(dp, cellprob, niter=200, device=torch.device("cpu"))
        times.append(time.perf_counter() - t0)
    out["cellpose_flows"] = _stats(times)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--no-cellpose", action="store_true")
    p.add_argument(
        "--cellpose-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="bfloat16 is ~100x slower on CPUs without native bf16 (AVX2 only)",
    )
    a = p.parse_args()

    import torch

    from liveseg.synthetic import generate

    shape = (a.size, a.size)
    pairs = [generate(70_000 + i, shape, "train", bit_depths=(16,)) for i in range(a.frames)]
    frames = [img for img, _ in pairs]
    unet = [{"backend": "unet"}]
    classical = [
        {"backend": "normalize"},
        {"backend": "threshold"},
        {"backend": "size_filter", "params": {"min_area": 8}},
    ]
    result: dict[str, object] = {
        "benchmark": "model_speed",
        "frame_shape": list(shape),
        "frames": a.frames,
        "repeats": a.repeats,
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "load_avg_1min": round(os.getloadavg()[0], 2),
        },
    }
    result["unet_1thread"] = _time_pipeline(unet, frames, a.repeats, 1)
    result["unet_2threads"] = _time_pipeline(unet, frames, a.repeats, 2)
    result["threshold_chain"] = _time_pipeline(classical, frames, a.repeats, 1)
    if not a.no_cellpose:
        tile = frames[0][:256, :256].astype(np.float32)
        tile = (tile - tile.mean()) / (tile.std() + 1e-6)
        try:
            result["cellpose_sam_tile"] = _time_cellpose(tile, 1, 2, a.cellpose_dtype)
        except Exception as exc:  # report, never lose the other numbers
            result["cellpose_sam_tile"] = {"error": repr(exc)}
    try:
        result["decoders_on_ideal_maps"] = _decoders(pairs[0][1], 10)
    except Exception as exc:
        result["decoders_on_ideal_maps"] = {"error": repr(exc)}
    u = result["unet_1thread"]
    t = result["threshold_chain"]
    assert isinstance(u, dict) and isinstance(t, dict)
    result["ratio_unet_vs_threshold_latency"] = round(
        u["latency_ms_mean"] / t["latency_ms_mean"], 2
    )
    result["target_10fps_met"] = bool(
        max(u["frames_per_s"], result["unet_2threads"]["frames_per_s"]) >= 10  # type: ignore[index]
    )
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
