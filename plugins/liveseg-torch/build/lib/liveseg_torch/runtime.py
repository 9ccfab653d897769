"""Fast CPU inference: the network exported to ONNX and run with ONNX Runtime.

Torch stays the runtime for training and for CUDA; on a CPU, ONNX Runtime runs the same
network about 1.4x faster on one thread (``benchmarks/model_speed.py``). The export is a
plain function of the weights, so it is made once and kept:

- in a **model directory** (a registry version, an exported model), as ``model.onnx``
  next to the weights, with its record in ``model.json`` (key ``onnx``:
  ``sha256`` of the export, ``weights_sha256`` of the weights it came from, the
  exporter, opset and the measured difference to torch). :func:`export_onnx` writes it
  and is what the registry calls when it registers a version;
- for **any other weights** (the shipped ``default.pt``, a loose ``.pt`` file, a
  read-only version registered before exports existed), at first use into the cache
  ``<home>/cache/onnx/<weights sha256>/`` with the same record in ``onnx.json``.

Every load hashes the ``.onnx`` bytes it hands to ONNX Runtime and compares them with the
record: a tampered or damaged export is refused with both hashes named. An export whose
``weights_sha256`` no longer matches the weights is stale and is not used.

Each export is checked before it is kept: on a synthetic frame, in a batch of two, at a
size that is not square, ONNX Runtime's probabilities must match torch's within
:data:`ATOL`. The exporter is torch's TorchScript-based one (``dynamo=False``): on the
dev VM it exports in 0.2 s into one self-contained file and needs no ``onnxscript``; the
``torch.export``-based exporter took 8 s, wrote the weights to a second file, and ran at
the same speed in ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from liveseg.errors import ModelError

if TYPE_CHECKING:
    from liveseg_torch.weights import Checkpoint

__all__ = [
    "ATOL",
    "ONNX_NAME",
    "OnnxEngine",
    "Runtime",
    "choose_runtime",
    "export_onnx",
    "onnx_for_weights",
    "onnxruntime_available",
]

log = logging.getLogger("liveseg.torch")

Runtime = Literal["auto", "onnx", "torch"]
ONNX_NAME = "model.onnx"
OPSET = 17
ATOL = 1e-4
"""Largest absolute difference allowed between torch's and ONNX Runtime's probabilities."""
_CARD = "model.json"
_CACHE_RECORD = "onnx.json"
_EXPORTER = "torch.onnx.export (TorchScript-based, dynamo=False)"


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` imports (a broken or missing install counts as absent)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose_runtime(requested: Runtime, device_type: str) -> Literal["onnx", "torch"]:
    """The runtime to use for ``requested`` on a device of type ``device_type``.

    ``auto`` is ONNX Runtime on the CPU when it is installed, torch otherwise (CUDA stays
    on torch). ``onnx`` asks for ONNX Runtime on the CPU and is refused on another
    device; a missing ``onnxruntime`` falls back to torch (with one notice, logged by
    the caller).
    """
    if requested == "torch":
        return "torch"
    if device_type != "cpu":
        if requested == "onnx":
            raise ModelError(
                f"runtime 'onnx' runs on the CPU only, but the step's device is "
                f"{device_type!r}; use runtime 'auto' or 'torch' there, or device 'cpu'"
            )
        return "torch"
    return "onnx" if onnxruntime_available() else "torch"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    return _sha256_bytes(path.read_bytes())


def _with_sigmoid(model: Any) -> Any:
    """The network followed by its sigmoid: the export outputs probabilities, not logits."""
    import torch

    class Probabilities(torch.nn.Module):  # type: ignore[misc,unused-ignore]
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(x))

    return Probabilities(model).eval()


def _check_input(multiple: int) -> np.ndarray:
    """A batch of two normalised synthetic frames, not square, to check an export on."""
    from liveseg.synthetic import generate
    from liveseg_torch.inference import prepare_image

    h, w = 4 * multiple * 2, 4 * multiple * 3  # e.g. 64 x 96 for 3 levels
    frames = [prepare_image(generate(90_001 + i, (h, w), "train")[0]) for i in range(2)]
    return np.stack(frames)[:, None].astype(np.float32)


def _export_bytes(ckpt: Checkpoint) -> tuple[bytes, float]:
    """The ONNX export of ``ckpt``'s network and its largest difference to torch."""
    import io

    import torch

    wrapped = _with_sigmoid(ckpt.model.to("cpu").eval())
    m = ckpt.model.config.multiple
    example = torch.zeros(1, 1, 4 * m, 4 * m)
    buf = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation; it is the one chosen
        # (module docstring), so that notice is not the user's concern.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (example,),
            buf,
            dynamo=False,
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_axes={"image": axes, "probabilities": axes},
            opset_version=OPSET,
        )
    data = buf.getvalue()
    import onnx

    onnx.checker.check_model(onnx.load_from_string(data))
    x = _check_input(m)
    with torch.inference_mode():
        ref = wrapped(torch.from_numpy(x)).numpy()
    got = OnnxEngine.from_bytes(data, threads=1)(x)
    diff = float(np.abs(got - ref).max())
    if not diff <= ATOL:
        raise ModelError(
            f"the ONNX export of {ckpt.path} differs from torch by {diff:.2e} "
            f"(allowed {ATOL:.0e}); use runtime 'torch' for this model"
        )
    return data, diff


def _record(data: bytes, weights_sha256: str, diff: float) -> dict[str, Any]:
    import onnxruntime
    import torch

    return {
        "file": ONNX_NAME,
        "sha256": _sha256_bytes(data),
        "weights_sha256": weights_sha256,
        "exporter": _EXPORTER,
        "opset": OPSET,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "outputs": "probabilities (sigmoid applied), (N, 2, H, W)",
        "max_abs_diff_vs_torch": diff,
    }


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _weights_in(model_dir: Path) -> Path:
    card_path = model_dir / _CARD
    if card_path.is_file():
        name = json.loads(card_path.read_text(encoding="utf-8")).get("weights")
        if name and (model_dir / str(name)).is_file():
            return model_dir / str(name)
    for name in ("weights.pt", "default.pt"):
        if (model_dir / name).is_file():
            return model_dir / name
    raise ModelError(f"model directory {str(model_dir)!r} holds no weights to export")


def export_onnx(model_dir: str | os.PathLike[str]) -> Path:
    """Export a model directory's weights to ``model.onnx`` beside them; return its path.

    The export is checked against torch (:data:`ATOL`) and its record (hashes, exporter,
    measured difference) is added to the directory's ``model.json`` under ``onnx``.
    Meant for the model registry: call it on a version's staging directory after
    ``model.json`` is written and before the files are made read-only.

    Raises
    ------
    liveseg.errors.ModelError
        When the weights do not load or the export does not match torch.
    """
    from liveseg_torch.weights import load_checkpoint

    d = Path(model_dir)
    weights = _weights_in(d)
    data, diff = _export_bytes(load_checkpoint(weights))
    _write_atomic(d / ONNX_NAME, data)
    card_path = d / _CARD
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    card["onnx"] = _record(data, _sha256_file(weights), diff)
    _write_atomic(card_path, (json.dumps(card, indent=2) + "\n").encode("utf-8"))
    log.info("unet: exported %s to %s (max |diff| vs torch %.1e)", weights, d / ONNX_NAME, diff)
    return d / ONNX_NAME


def _verified(onnx_path: Path, record: dict[str, Any]) -> bytes:
    """The export's bytes, after checking them against the record's hash."""
    data = onnx_path.read_bytes()
    found, expected = _sha256_bytes(data), str(record.get("sha256", ""))
    if found != expected:
        raise ModelError(
            f"ONNX export {str(onnx_path)!r} does not match its record: sha256 {found} "
            f"on disk, {expected or '(none)'} recorded. It was changed or damaged after "
            f"export; delete it to re-export from the weights, or use runtime 'torch'."
        )
    return data


def onnx_for_weights(ckpt: Checkpoint, home: str | os.PathLike[str]) -> tuple[bytes, Path]:
    """The verified ONNX export of ``ckpt`` (exported and cached on first use).

    Looks for an export recorded in the weights' own ``model.json`` first, then in the
    cache under ``home``; exports into the cache when neither holds one for these
    weights.

    Raises
    ------
    liveseg.errors.ModelError
        When an export's bytes do not match its recorded sha256 (both hashes named), or
        a new export does not match torch.
    """
    if ckpt.path is None:
        raise ModelError("the checkpoint has no file, so its ONNX export cannot be found")
    weights = Path(ckpt.path)
    wsha = _sha256_file(weights)
    card_path = weights.parent / _CARD
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except ValueError:
            card = {}
        rec = card.get("onnx") if isinstance(card, dict) else None
        if isinstance(rec, dict) and rec.get("weights_sha256") == wsha:
            path = weights.parent / str(rec.get("file", ONNX_NAME))
            if path.is_file():
                return _verified(path, rec), path
    cache = Path(home) / "cache" / "onnx" / wsha
    path, rec_path = cache / ONNX_NAME, cache / _CACHE_RECORD
    if path.is_file() and rec_path.is_file():
        try:
            rec = json.loads(rec_path.read_text(encoding="utf-8"))
        except ValueError:
            rec = {}  # an unreadable record: export again from the weights
        if isinstance(rec, dict) and rec.get("weights_sha256") == wsha:
            return _verified(path, rec), path
    data, diff = _export_bytes(ckpt)
    # Both files appear at once (a directory rename), so a reader never pairs one
    # process's export with another's record; a stale pair is replaced whole.
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=cache.parent))
    (staging / ONNX_NAME).write_bytes(data)
    record = _record(data, wsha, diff)
    (staging / _CACHE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if cache.exists():
        shutil.rmtree(cache, ignore_errors=True)
    try:
        os.rename(staging, cache)
    except OSError:  # another process got there first: use its (verified) export
        shutil.rmtree(staging, ignore_errors=True)
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
        return _verified(path, rec), path
    log.info("unet: exported %s to %s (max |diff| vs torch %.1e)", weights, path, diff)
    return data, path


class OnnxEngine:
    """An ONNX Runtime session: ``(N, 1, H, W)`` float32 in, ``(N, 2, H, W)`` probabilities out.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        Built by :meth:`from_bytes`.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = str(session.get_inputs()[0].name)

    @classmethod
    def from_bytes(cls, data: bytes, threads: int = 1, device: str = "cpu") -> OnnxEngine:
        """A session over an export's (already verified) bytes.

        ``threads`` is ONNX Runtime's intra-op thread count (the session's ``threads``);
        operators run one after another, so that is all the threads it uses. ``device``
        ``"cuda"`` asks for the CUDA execution provider (``onnxruntime-gpu``), else CPU.
        """
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # warnings about unused initialisers are noise here
        # Idle pool threads sleep instead of spinning: with 2 threads on the shared
        # 2-core VM (load ~5) spinning cost 16 ms more CPU per 512² frame (70 vs 54 ms)
        # and was slower (174 vs 148 ms), CPU the acquisition thread needs.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        return cls(ort.InferenceSession(data, so, providers=providers))

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses, best first."""
        return [str(p) for p in self.session.get_providers()]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of a normalised ``(N, 1, H, W)`` batch."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        out: np.ndarray = self.session.run(None, {self.input_name: x})[0]
        return out
