"""Every shipped model and Cellpose-SAM on a CUDA GPU, in a few minutes; prints JSON.

For each shipped ``unet`` model (:func:`liveseg.models.builtin_models`):

- ``torch_cuda``: the ``unet`` step on ``device: cuda`` (the ``auto`` runtime there is
  torch), one frame per call, 512² and one tiled 2048² frame;
- ``torch_cuda_batch``: ``segment_batch`` of all 512² frames (``batch_size`` frames
  per forward pass);
- ``onnx_cuda``: the same export the CPU uses, in ONNX Runtime's CUDA execution
  provider, when ``onnxruntime-gpu`` provides it (else the reason it was skipped);
- ``agreement_vs_cpu_onnx``: AP@0.5 between the GPU labels and the CPU ONNX labels.

Then Cellpose-SAM through ``benchmarks/cellpose_gpu.py --device cuda`` (a randomly
initialised network of cpsam's size unless ``--cellpose-weights`` names real weights).
Without a CUDA device it prints ``{"skipped": ...}`` and exits with status 0.

Usage: ``python benchmarks/gpu.py [--frames 20] [--no-cellpose]``; ``--device cpu`` is a dry
run of the script itself on the CPU (slow, small ``--frames``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _stats(times: list[float]) -> dict[str, float]:
    arr = np.asarray(times) * 1e3
    return {
        "frames_per_s": round(float(len(arr) / (arr.sum() / 1e3)), 2),
        "latency_ms_p50": round(float(np.percentile(arr, 50)), 2),
        "latency_ms_p95": round(float(np.percentile(arr, 95)), 2),
        "n": len(arr),
    }


def _timed(fn, items, sync) -> dict[str, float]:
    fn(items[0])  # warm-up (CUDA context, cuDNN autotuning, allocations)
    sync()
    times = []
    for it in items:
        t0 = time.perf_counter()
        fn(it)
        sync()
        times.append(time.perf_counter() - t0)
    return _stats(times)


def _unet_model(model_dir: Path, frames, big, home: Path, device: str) -> dict[str, object]:
    import torch

    from liveseg.metrics import aggregate, average_precision
    from liveseg.pipeline import StepContext
    from liveseg.types import Frame
    from liveseg_torch.inference import Predictor
    from liveseg_torch.plugin import UnetBackend, UnetParams
    from liveseg_torch.runtime import OnnxEngine, onnx_for_weights

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    out: dict[str, object] = {"model_dir": str(model_dir)}
    params = UnetParams(model=str(model_dir), batch_size=8)
    gpu = UnetBackend(params, StepContext(home=home, threads=1, device=device))
    fr = [Frame(index=i, image=img) for i, img in enumerate(frames)]
    out["torch_cuda_512"] = _timed(lambda f: gpu.segment(f, None), fr, sync)
    out["torch_cuda_2048_tiled"] = _timed(
        lambda f: gpu.segment(f, None), [Frame(index=0, image=big)] * 3, sync
    )
    t0 = time.perf_counter()
    gpu.segment_batch(fr)
    sync()
    out["torch_cuda_batch_512"] = {
        "frames_per_s": round(len(fr) / (time.perf_counter() - t0), 2),
        "frames": len(fr),
        "batch_size": 8,
    }
    cpu = UnetBackend(
        UnetParams(model=str(model_dir), runtime="onnx"), StepContext(home=home, threads=1)
    )
    res = [
        average_precision(cpu.segment(f, None).labels, gpu.segment(f, None).labels, (0.5,))
        for f in fr[:6]
    ]
    out["agreement_vs_cpu_onnx"] = {"ap@0.5": round(aggregate(res).ap[0.5], 4)}
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError(
                f"ONNX Runtime has no CUDA provider (providers: {ort.get_available_providers()};"
                f" install onnxruntime-gpu)"
            )
        data, _ = onnx_for_weights(gpu.predictor.ckpt, home)
        engine = OnnxEngine.from_bytes(data, device=device)
        pred = Predictor(gpu.predictor.ckpt, device="cpu", engine=engine)
        out["onnx_cuda_512"] = _timed(pred.predict, frames, lambda: None)
        out["onnx_cuda_512"]["providers"] = engine.providers  # type: ignore[index]
    except Exception as exc:  # report, never lose the other numbers
        out["onnx_cuda_512"] = {"skipped": repr(exc)}
    gpu.close()
    cpu.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--no-cellpose", action="store_true")
    p.add_argument("--cellpose-weights", default=None)
    p.add_argument(
        "--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script"
    )
    a = p.parse_args()

    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"benchmark": "gpu", "skipped": "no CUDA device (torch sees none)"}))
        return
    from liveseg.models import builtin_models
    from liveseg.synthetic import generate

    result: dict[str, object] = {
        "benchmark": "gpu",
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu (dry run)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    frames = [generate(70_000 + i, (512, 512), "train", bit_depths=(16,))[0] for i in range(8)]
    frames = [frames[i % len(frames)] for i in range(a.frames)]
    big, _ = generate(71_000, (2048, 2048), "train", bit_depths=(16,))
    models: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        seen: set[Path] = set()
        for name, model_dir in sorted(builtin_models().items()):
            card = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
            if card.get("backend") != "unet" or model_dir in seen:
                continue
            seen.add(model_dir)
            try:
                models[name] = _unet_model(model_dir, frames, big, Path(tmp), a.device)
            except Exception as exc:
                models[name] = {"error": repr(exc)}
    result["unet_models"] = models
    if not a.no_cellpose:
        cmd = [
            sys.executable,
            str(Path(__file__).with_name("cellpose_gpu.py")),
            "--device",
            "cuda",
        ]
        if a.cellpose_weights:
            cmd += ["--weights", a.cellpose_weights]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        try:
            result["cellpose_sam"] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            result["cellpose_sam"] = {"error": proc.stderr.strip()[-2000:]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
