"""Speed of the default unet backend vs the classical chain vs Cellpose, one run.

All backends see the same 512x512 synthetic uint16 frames (``liveseg.synthetic``), go
through the real :class:`liveseg.pipeline.Pipeline` (frame in -> labels out), and are
timed per frame after a warm-up. The unet runs with torch (as before issue 16) and with
ONNX Runtime (``runtime: onnx``), on 1 and 2 threads; ``unet_batch_*`` rows time
``segment_batch`` over all frames at once in the thread layouts that matter (ONNX
Runtime's own threads, and decoding frame n on a second thread while the network runs
frame n+1). ``unet_stages_ms`` splits one frame's time into normalise, network, decode,
scores and ``liveseg.measure.measure_objects``. ``agreement_torch_vs_onnx`` is AP
between the two runtimes' labels on the timed frames and on the ``test_hard`` set.
``cpu_ms_per_frame`` is the process's CPU time per frame (all threads): on a machine
shared with other jobs it stays close to the unshared cost where wall-clock times do not.
``unet_onnx_2frames_in_flight`` is the third two-core layout: two frames at once, one
ONNX Runtime thread each (``backlog: {workers: 2}``, ``threads: 1``), so one frame's
decoding overlaps the next one's network; its ``frames_per_s`` is throughput.
``network_variants`` times the forward pass alone (torch, ONNX Runtime fp32, and int8
quantisation, which is not shipped) with each one's AP@0.5 against torch's labels on
the nuclei test set; ``shipped_models`` runs every shipped model (``nuclei``,
``cells``, ``bacteria``, ``transmitted``) end to end on its own sample type at 1 and 2
threads. ``decoder_variants`` times the forward pass of each ``NetConfig.decoder``
(``concat``, the original U-Net joins, and ``add``, additive skips) at the shipped width,
ONNX Runtime fp32 at 1 and 2 threads, rounds interleaved so both see the same load, with
each variant's multiply-adds; weights are random (speed does not depend on them).
``issue16_targets`` checks issue 16's bars with the best two-core layout, and gives the
frame rates an idle machine would reach from the CPU time per frame
(``cpu_bound_1thread_frames_per_s``, ``cpu_bound_2core_frames_per_s``).

Cellpose-SAM has no weights here, so its network runs
randomly initialised on one 256x256 tile (network forward only: a lower bound on its
cost). A last block times the two instance decoders on ideal maps built from the ground
truth: seeded watershed on distance maps (ours) vs Cellpose flow following.

Usage: ``python benchmarks/model_speed.py [--frames 8] [--repeats 30] [--no-cellpose]
[--no-models] [--no-int8] [--no-variants]``.
Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "not installed"
    return str(onnxruntime.__version__)


def _stats(times: list[float]) -> dict[str, float]:
    arr = np.asarray(times) * 1e3
    return {
        "frames_per_s": round(float(len(arr) / (arr.sum() / 1e3)), 2),
        "latency_ms_p50": round(float(np.percentile(arr, 50)), 2),
        "latency_ms_p95": round(float(np.percentile(arr, 95)), 2),
        "latency_ms_mean": round(float(arr.mean()), 2),
        "n": len(arr),
    }


def _time_pipeline(steps, frames, repeats: int, threads: int, home=None) -> dict[str, float]:
    import torch

    from liveseg.config import StepConfig
    from liveseg.pipeline import Pipeline, StepContext
    from liveseg.plugins import PluginHost
    from liveseg.types import Frame

    torch.set_num_threads(threads)
    host = PluginHost()
    ctx = StepContext(home=home or Path.cwd(), threads=threads)
    pipe = Pipeline.build([StepConfig(**s) for s in steps], host.backends(), ctx)
    fr = [Frame(index=i, image=img) for i, img in enumerate(frames)]
    for f in fr[:2]:
        pipe.run(f)  # warm-up
    times, counts = [], []
    cpu0 = time.process_time()
    for i in range(repeats):
        f = fr[i % len(fr)]
        t0 = time.perf_counter()
        res = pipe.run(f)
        times.append(time.perf_counter() - t0)
        counts.append(res.count)
        if res.error:
            raise RuntimeError(res.error)
    cpu = time.process_time() - cpu0
    pipe.close()
    out = _stats(times)
    out["cpu_ms_per_frame"] = round(cpu / repeats * 1e3, 2)
    out["mean_objects"] = round(float(np.mean(counts)), 1)
    out["threads"] = threads
    return out


def _unet(home: Path, threads: int, **params):
    import torch

    from liveseg.pipeline import StepContext
    from liveseg_torch.plugin import UnetBackend, UnetParams

    torch.set_num_threads(threads)
    return UnetBackend(UnetParams(**params), StepContext(home=home, threads=threads))


def _time_batch(frames, repeats: int, threads: int, home: Path, **params) -> dict[str, object]:
    """``segment_batch`` over all frames per call; per-frame figures are call time / frames."""
    from liveseg.types import Frame

    backend = _unet(home, threads, **params)
    fr = [Frame(index=i, image=img) for i, img in enumerate(frames)]
    backend.segment_batch(fr[:2])  # warm-up
    per_frame = []
    cpu0 = time.process_time()
    for _ in range(max(1, repeats // len(fr))):
        t0 = time.perf_counter()
        backend.segment_batch(fr)
        per_frame += [(time.perf_counter() - t0) / len(fr)] * len(fr)
    cpu = time.process_time() - cpu0
    backend.close()
    out: dict[str, object] = dict(_stats(per_frame))
    out["cpu_ms_per_frame"] = round(cpu / len(per_frame) * 1e3, 2)
    out.update({"threads": threads, "params": params, "what": "segment_batch of all frames"})
    return out


def _stages(frames, repeats: int, home: Path) -> dict[str, object]:
    """One frame's time by stage (ms, median over ``repeats``), ONNX Runtime, 1 thread."""
    from liveseg.measure import measure_objects
    from liveseg.types import Frame, FrameResult
    from liveseg_torch.inference import prepare_image
    from liveseg_torch.representation import object_scores

    pred = _unet(home, 1, runtime="onnx").predictor
    s = pred.decode_settings()
    norm = pred.ckpt.normalize
    t: dict[str, list[float]] = {k: [] for k in ("normalise", "network", "decode", "scores")}
    t["measure"] = []
    for i in range(repeats + 1):
        img = frames[i % len(frames)]
        t0 = time.perf_counter()
        x = prepare_image(img, norm.get("low", 1.0), norm.get("high", 99.8))
        t1 = time.perf_counter()
        prob, dist = pred._maps_prepared(x)
        t2 = time.perf_counter()
        labels, _ = pred._decode(prob, dist, s)  # decode + scores
        t3 = time.perf_counter()
        object_scores(labels, prob)
        t4 = time.perf_counter()
        frame = Frame(index=i, image=img)
        measure_objects(frame, FrameResult(labels=labels, image=img))
        t5 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        t["normalise"].append(t1 - t0)
        t["network"].append(t2 - t1)
        t["scores"].append(t4 - t3)
        t["decode"].append((t3 - t2) - (t4 - t3))
        t["measure"].append(t5 - t4)
    out: dict[str, object] = {k: round(float(np.median(v)) * 1e3, 2) for k, v in t.items()}
    out["what"] = "median ms per stage, runtime onnx, 1 thread"
    return out


def _agreement(frames, home: Path) -> dict[str, object]:
    """AP@0.5 between torch's and ONNX Runtime's labels (torch as the reference)."""
    from liveseg.metrics import aggregate, average_precision
    from liveseg.synthetic import generate

    onnx_p = _unet(home, 1, runtime="onnx").predictor
    torch_p = _unet(home, 1, runtime="torch").predictor
    test_hard = [generate(60_000 + i, (256, 256), "test_hard")[0] for i in range(12)]
    out: dict[str, object] = {}
    for name, imgs in (("timed_frames", frames), ("test_hard_12x256", test_hard)):
        res = [
            average_precision(torch_p.predict(im)[0], onnx_p.predict(im)[0], thresholds=(0.5,))
            for im in imgs
        ]
        pooled = aggregate(res)
        diff = max(
            float(np.abs(a - b).max())
            for im in imgs[:4]
            for a, b in zip(onnx_p.maps(im), torch_p.maps(im), strict=True)
        )
        out[name] = {
            "ap@0.5": round(pooled.ap[0.5], 4),
            "n_objects_torch": pooled.n_true,
            "max_abs_prob_diff": diff,
        }
    return out


def _time_in_flight(steps, frames, repeats: int, home: Path, lanes: int = 2) -> dict[str, object]:
    """``lanes`` frames in flight: one chain (1 thread each), fed by ``lanes`` workers.

    What ``backlog: {workers: 2}`` with ``threads: 1`` does live: while one frame is
    decoded and measured on one core, the next frame's network runs on the other (ONNX
    Runtime and the watershed release the GIL). Latency is each frame's own time.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from liveseg.config import StepConfig
    from liveseg.pipeline import Pipeline, StepContext
    from liveseg.plugins import PluginHost
    from liveseg.types import Frame

    torch.set_num_threads(1)
    ctx = StepContext(home=home, threads=1)
    pipe = Pipeline.build([StepConfig(**s) for s in steps], PluginHost().backends(), ctx)
    fr = [Frame(index=i, image=img) for i, img in enumerate(frames)]

    def one(f: Frame) -> float:
        t0 = time.perf_counter()
        res = pipe.run(f)
        if res.error:
            raise RuntimeError(res.error)
        return time.perf_counter() - t0

    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(one, fr[:lanes]))  # warm-up
        cpu0, t0 = time.process_time(), time.perf_counter()
        lat = list(pool.map(one, [fr[i % len(fr)] for i in range(repeats)]))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    pipe.close()
    out: dict[str, object] = dict(_stats(lat))
    out["frames_per_s"] = round(repeats / wall, 2)  # throughput, not 1 / latency
    out["cpu_ms_per_frame"] = round(cpu / repeats * 1e3, 2)
    out.update({"threads": lanes, "what": f"{lanes} frames in flight, 1 ONNX thread each"})
    return out


def _network_ms(engine, x: np.ndarray, repeats: int) -> dict[str, float]:
    """The forward pass alone (ms): median and minimum over ``repeats``."""
    engine(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine(x)
        times.append(time.perf_counter() - t0)
    arr = np.asarray(times) * 1e3
    return {"p50": round(float(np.median(arr)), 2), "min": round(float(arr.min()), 2)}


def _ap_vs(reference, other, images) -> float:
    from liveseg.metrics import aggregate, average_precision

    res = [
        average_precision(reference.predict(im)[0], other.predict(im)[0], thresholds=(0.5,))
        for im in images
    ]
    return round(float(aggregate(res).ap[0.5]), 4)


def _network_variants(frames, home: Path, repeats: int) -> dict[str, object]:
    """The network alone per runtime and threads, and int8 quantisation (not shipped).

    int8: ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel weights, uint8
    activations, percentile calibration on 16 synthetic ``train`` frames of seeds no
    test uses), scored as AP@0.5 against torch's labels on the nuclei test set (12
    ``test_hard`` frames, 256²). It is kept out of the runtime because it misses the
    AP >= 0.99 bar (issue 16).
    """
    import torch

    from liveseg.synthetic import iter_samples
    from liveseg_torch.inference import Predictor, TorchEngine, prepare_image
    from liveseg_torch.runtime import OnnxEngine

    backend = _unet(home, 1, runtime="onnx")
    ckpt = backend.predictor.ckpt
    data = Path(backend.onnx_path).read_bytes()
    x = prepare_image(frames[0])[None, None].astype(np.float32)
    out: dict[str, object] = {
        "what": f"ms per {x.shape[-2]}x{x.shape[-1]} forward pass (p50, min)"
    }
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[f"torch_{threads}thread"] = _network_ms(
            TorchEngine(ckpt.model, torch.device("cpu")), x, repeats
        )
        out[f"onnx_fp32_{threads}thread"] = _network_ms(
            OnnxEngine.from_bytes(data, threads=threads), x, repeats
        )
    torch.set_num_threads(1)
    test = [im for im, _ in iter_samples("nuclei", 12, 2, (256, 256), "test")]
    reference = Predictor(ckpt, device="cpu")
    try:
        q8 = _quantised(data, home)
    except Exception as exc:  # quantisation tooling missing or broken: report it
        out["onnx_int8_qdq"] = {"error": repr(exc)}
        return out
    for threads in (1, 2):
        out[f"onnx_int8_qdq_{threads}thread"] = _network_ms(
            OnnxEngine.from_bytes(q8, threads=threads), x, repeats
        )
    out["ap_vs_torch_test_hard_12x256"] = {
        "onnx_fp32": _ap_vs(reference, Predictor(ckpt, engine=OnnxEngine.from_bytes(data)), test),
        "onnx_int8_qdq": _ap_vs(
            reference, Predictor(ckpt, engine=OnnxEngine.from_bytes(q8)), test
        ),
    }
    return out


def _quantised(data: bytes, home: Path) -> bytes:
    """int8 (QDQ, per-channel) version of an fp32 export, calibrated on synthetic frames."""
    from onnxruntime import quantization as q

    from liveseg.synthetic import iter_samples
    from liveseg_torch.inference import prepare_image

    src, pre, dst = home / "fp32.onnx", home / "pre.onnx", home / "int8.onnx"
    src.write_bytes(data)
    q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    calib = iter(
        prepare_image(im)[None, None].astype(np.float32)
        for im, _ in iter_samples("nuclei", 16, 5, (256, 256), "train")
    )

    class Reader(q.CalibrationDataReader):
        def get_next(self):
            x = next(calib, None)
            return None if x is None else {"image": x}

    with contextlib.redirect_stdout(sys.stderr):  # the calibrator prints progress
        _quantize(q, pre, dst, Reader())
    return dst.read_bytes()


def _quantize(q, pre: Path, dst: Path, reader) -> None:
    q.quantize_static(
        str(pre),
        str(dst),
        reader,
        quant_format=q.QuantFormat.QDQ,
        per_channel=True,
        activation_type=q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        calibrate_method=q.CalibrationMethod.Percentile,
        extra_options={"CalibPercentile": 99.99},
    )


def _conv_macs(model, x) -> int:
    """Multiply-adds of ``model``'s convolutions on input ``x`` (forward hooks)."""
    import torch

    total = [0]

    def hook(mod, _inp, out) -> None:
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total[0] += int(out.numel()) * k

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    return total[0]


def _decoder_variants(size: int, repeats: int) -> dict[str, object]:
    """Forward pass of each decoder variant (random weights), ONNX Runtime, 1 and 2 threads."""
    import torch

    from liveseg_torch.network import DECODERS, NetConfig, UNetLite
    from liveseg_torch.runtime import OnnxEngine, _export_bytes
    from liveseg_torch.weights import Checkpoint

    x = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    out: dict[str, object] = {
        "what": f"ms per {size}x{size} forward pass (p50, min), rounds interleaved"
    }
    engines: dict[tuple[str, int], OnnxEngine] = {}
    for name in DECODERS:
        torch.manual_seed(0)
        model = UNetLite(NetConfig(decoder=name)).eval()
        data, _ = _export_bytes(Checkpoint(model=model))
        out[name] = {
            "gmac": round(_conv_macs(model, torch.from_numpy(x)) / 1e9, 3),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
        for threads in (1, 2):
            engines[name, threads] = OnnxEngine.from_bytes(data, threads=threads)
            engines[name, threads](x)  # warm-up
    times: dict[tuple[str, int], list[float]] = {k: [] for k in engines}
    for _ in range(repeats):
        for key, engine in engines.items():
            t0 = time.perf_counter()
            engine(x)
            times[key].append(time.perf_counter() - t0)
    for (name, threads), ts in times.items():
        arr = np.asarray(ts) * 1e3
        row = out[name]
        assert isinstance(row, dict)
        row[f"onnx_{threads}thread"] = {
            "p50": round(float(np.median(arr)), 2),
            "min": round(float(arr.min()), 2),
        }
    return out


def _shipped_models(size: int, n: int, repeats: int, home: Path) -> dict[str, object]:
    """Every shipped model end to end (``Pipeline.run``, ONNX Runtime), 1 and 2 threads."""
    from liveseg.synthetic import generate_sample
    from liveseg_torch.plugin import SHIPPED_MODELS

    out: dict[str, object] = {}
    for name, _, _ in SHIPPED_MODELS:
        frames = [generate_sample(name, 80_000 + i, (size, size), "train")[0] for i in range(n)]
        steps = [{"backend": "unet", "params": {"model": name, "runtime": "onnx"}}]
        out[name] = {f"{t}thread": _time_pipeline(steps, frames, repeats, t, home) for t in (1, 2)}
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
    p.add_argument("--no-models", action="store_true", help="skip the four shipped models")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 quantisation row")
    p.add_argument("--no-variants", action="store_true", help="skip the decoder variants")
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
            "onnxruntime": _ort_version(),
        },
    }
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="liveseg-speed-"))  # the ONNX export's cache
    unet_onnx = [{"backend": "unet", "params": {"runtime": "onnx"}}]
    unet_torch = [{"backend": "unet", "params": {"runtime": "torch"}}]
    _unet(home, 1, runtime="onnx")  # export once, outside the timings
    result["unet_torch_1thread"] = _time_pipeline(unet_torch, frames, a.repeats, 1, home)
    result["unet_torch_2threads"] = _time_pipeline(unet_torch, frames, a.repeats, 2, home)
    result["unet_onnx_1thread"] = _time_pipeline(unet_onnx, frames, a.repeats, 1, home)
    result["unet_onnx_2threads"] = _time_pipeline(unet_onnx, frames, a.repeats, 2, home)
    layouts = {
        "unet_batch_onnx_1thread": (1, {"overlap_decode": False}),
        "unet_batch_onnx_2threads": (2, {"overlap_decode": False}),
        "unet_batch_onnx_1thread_overlap": (1, {"overlap_decode": True}),
        "unet_batch_onnx_2threads_overlap": (2, {"overlap_decode": True}),
    }
    for key, (threads, extra) in layouts.items():
        result[key] = _time_batch(
            frames, a.repeats, threads, home, runtime="onnx", batch_size=1, **extra
        )
    result["unet_onnx_2frames_in_flight"] = _time_in_flight(unet_onnx, frames, a.repeats, home)
    result["unet_stages_ms"] = _stages(frames, a.repeats, home)
    if not a.no_int8:
        result["network_variants"] = _network_variants(frames, home, max(5, a.repeats // 2))
    if not a.no_variants:
        result["decoder_variants"] = _decoder_variants(a.size, max(10, a.repeats // 2))
    if not a.no_models:
        result["shipped_models"] = _shipped_models(a.size, 4, max(8, a.repeats // 2), home)
    result["agreement_torch_vs_onnx"] = _agreement(frames, home)
    result["unet_1thread"] = result["unet_onnx_1thread"]  # the default runtime (auto)
    result["unet_2threads"] = result["unet_onnx_2threads"]
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
    two_keys = (
        "unet_onnx_2threads",
        "unet_onnx_2frames_in_flight",
        "unet_batch_onnx_2threads",
        "unet_batch_onnx_2threads_overlap",
    )
    best = max(two_keys, key=lambda k: float(result[k]["frames_per_s"]))  # type: ignore[index]
    two = float(result[best]["frames_per_s"])  # type: ignore[index]
    result["issue16_targets"] = {
        "1thread_20fps": float(u["frames_per_s"]) >= 20,
        "2threads_30fps_best_layout": two >= 30,
        "best_2thread_frames_per_s": two,
        "best_2thread_layout": best,
        # What an idle machine would do, from the CPU time per frame (all threads):
        # on cores shared with other jobs the wall clock cannot show it.
        "cpu_bound_1thread_frames_per_s": round(1e3 / float(u["cpu_ms_per_frame"]), 1),
        "cpu_bound_2core_frames_per_s": round(
            2e3 / min(float(result[k]["cpu_ms_per_frame"]) for k in two_keys),  # type: ignore[index]
            1,
        ),
        "agreement_ap_0.99": all(
            v["ap@0.5"] >= 0.99  # type: ignore[index]
            for v in result["agreement_torch_vs_onnx"].values()  # type: ignore[union-attr]
        ),
    }
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
