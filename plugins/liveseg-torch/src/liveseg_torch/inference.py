"""Inference: normalise, tile, batch, (optionally) flip, stitch, decode.

The network sees percentile-normalised images, so uint8, uint16 and float frames of any
dynamic range look alike to it. Frames up to ``tile`` pixels on each side run in one
pass; larger frames are cut into overlapping tiles that run in batches, and the tiles'
*probability maps* (not their labels) are blended with a tent window before decoding once
over the whole frame, so no object is ever cut at a tile seam.

The network itself runs in an :class:`Engine`: torch (:class:`TorchEngine`, for CUDA and
as the fallback) or ONNX Runtime (:class:`liveseg_torch.runtime.OnnxEngine`, the CPU
default); everything around it is the same NumPy code for both.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from liveseg.builtins.normalize import normalize_image
from liveseg_torch.representation import FG_INTERIOR, decode, decode_interior, object_scores

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from liveseg_torch.weights import Checkpoint

__all__ = ["Engine", "Predictor", "TorchEngine", "prepare_image", "resolve_device"]

_CLAMP = (-1.0, 8.0)


class Engine(Protocol):
    """Runs the network: normalised ``(N, 1, H, W)`` float32 -> ``(N, 2, H, W)`` probabilities."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (sigmoid of the logits) of one batch."""
        ...


class TorchEngine:
    """The network in torch on ``device`` (channels_last on the CPU: 2-4x faster, oneDNN)."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.device = device
        self.memory_format = (
            torch.channels_last if device.type == "cpu" else torch.contiguous_format
        )
        self.model = model.to(device, memory_format=self.memory_format).eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of one batch (computed on the device, returned on the host)."""
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            y = torch.sigmoid(self.model(x))
        out: np.ndarray = y.float().cpu().numpy()
        return out


def prepare_image(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Percentile-normalise a 2-D frame of any dtype to float32, clamped to a sane range.

    Training and inference both go through this function, so they see the same inputs.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    # normalize_image may return float64 (NumPy 2 scalar promotion); the net wants float32.
    out = np.asarray(normalize_image(img, low, high), dtype=np.float32)
    if img.dtype.kind not in "biu":  # integer frames (what cameras give) hold no NaN
        np.nan_to_num(out, copy=False, nan=0.0, posinf=_CLAMP[1], neginf=_CLAMP[0])
    return np.clip(out, *_CLAMP, out=out)


def resolve_device(device: str | None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else the CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    n = math.ceil((size - tile) / step) + 1
    return sorted({min(i * step, size - tile) for i in range(n)})


def _window(tile_h: int, tile_w: int, overlap: int) -> np.ndarray:
    """Tent weights: 1 in the middle, ramping down over ``overlap`` pixels at the edges."""

    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, dtype=np.float32)
        idx = np.arange(n, dtype=np.float32)
        edge = np.minimum(idx + 0.5, n - idx - 0.5) / overlap
        out: np.ndarray = np.clip(edge, 1e-3, 1.0)
        return out

    return np.outer(ramp(tile_h), ramp(tile_w)).astype(np.float32)


class Predictor:
    """A loaded model ready to turn frames into probability maps and labels.

    Parameters
    ----------
    ckpt : Checkpoint
        The loaded weights (see :func:`liveseg_torch.weights.load_checkpoint`).
    device : str or None
        ``None``: CUDA if available, else CPU.
    tile, overlap : int
        Tile side and overlap in pixels (rounded up to multiples of 8).
    batch_size : int
        Tiles (or frames, in :meth:`predict_batch`) per forward pass.
    test_time_flips : bool
        Average the predictions of the four flips of each tile (4x slower).
    decode_scale : int
        2: watershed on half-resolution maps (fast, default); 1: at full resolution.
    engine : Engine or None
        What runs the network: ``None`` is torch on ``device``
        (:class:`TorchEngine`); :class:`liveseg_torch.runtime.OnnxEngine` is ONNX
        Runtime.
    overlap_decode : bool
        In :meth:`predict_batch`, decode one pass's maps on a second thread while the
        network runs the next pass.
    """

    def __init__(
        self,
        ckpt: Checkpoint,
        *,
        device: str | None = None,
        tile: int = 512,
        overlap: int = 32,
        batch_size: int = 4,
        test_time_flips: bool = False,
        decode_scale: int = 2,
        engine: Engine | None = None,
        overlap_decode: bool = False,
    ) -> None:
        self.ckpt = ckpt
        self.device = resolve_device(device)
        m = ckpt.model.config.multiple
        self.multiple = m
        self.tile = max(m, int(math.ceil(tile / m) * m))
        self.overlap = max(0, min(int(overlap), self.tile // 2))
        self.batch_size = max(1, int(batch_size))
        self.test_time_flips = test_time_flips
        self.decode_scale = decode_scale
        self.engine: Engine = engine or TorchEngine(ckpt.model, self.device)
        self.overlap_decode = overlap_decode
        self._pool: ThreadPoolExecutor | None = None
        self.runtime = "torch" if isinstance(self.engine, TorchEngine) else "onnx"

    # -- maps -----------------------------------------------------------------------
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W) normalised images -> (N, 2, H, W) probabilities (sigmoid outputs)."""
        x = np.ascontiguousarray(batch[:, None], dtype=np.float32)
        y = self.engine(x)
        if self.test_time_flips:
            for axes in ((-1,), (-2,), (-2, -1)):
                y = y + np.flip(self.engine(np.ascontiguousarray(np.flip(x, axes))), axes)
            y /= 4.0
        return y

    def _run(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for i in range(0, len(tiles), self.batch_size):
            out.extend(self._forward(np.stack(tiles[i : i + self.batch_size])))
        return out

    def _pad(self, img: np.ndarray, h: int, w: int) -> np.ndarray:
        ph, pw = h - img.shape[0], w - img.shape[1]
        if ph == 0 and pw == 0:
            return img
        return np.pad(img, ((0, ph), (0, pw)), mode="reflect" if min(img.shape) > 1 else "edge")

    def maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Foreground probability and normalised distance maps of one frame."""
        norm = self.ckpt.normalize
        img = prepare_image(image, norm.get("low", 1.0), norm.get("high", 99.8))
        return self._maps_prepared(img)

    def _maps_prepared(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape
        m, t = self.multiple, self.tile
        if h <= t and w <= t:
            ph, pw = math.ceil(h / m) * m, math.ceil(w / m) * m
            y = self._run([self._pad(img, ph, pw)])[0]
            return y[0, :h, :w], y[1, :h, :w]
        th, tw = min(t, math.ceil(h / m) * m), min(t, math.ceil(w / m) * m)
        padded = self._pad(img, max(h, th), max(w, tw))
        ys = _starts(padded.shape[0], th, th - self.overlap)
        xs = _starts(padded.shape[1], tw, tw - self.overlap)
        coords = [(y0, x0) for y0 in ys for x0 in xs]
        outs = self._run([padded[y0 : y0 + th, x0 : x0 + tw] for y0, x0 in coords])
        win = _window(th, tw, self.overlap)
        acc = np.zeros((2, *padded.shape), dtype=np.float32)
        wsum = np.zeros(padded.shape, dtype=np.float32)
        for (y0, x0), out in zip(coords, outs, strict=True):
            acc[:, y0 : y0 + th, x0 : x0 + tw] += out * win
            wsum[y0 : y0 + th, x0 : x0 + tw] += win
        acc /= wsum
        return acc[0, :h, :w], acc[1, :h, :w]

    # -- labels ---------------------------------------------------------------------
    def decode_settings(
        self,
        prob_threshold: float | None = None,
        seed_threshold: float | None = None,
        min_size: int | None = None,
    ) -> dict[str, float]:
        """Decoding settings: explicit values, else the checkpoint's, else defaults."""
        d = self.ckpt.decode
        return {
            "prob_threshold": d.get("prob_threshold", 0.5)
            if prob_threshold is None
            else prob_threshold,
            "seed_threshold": d.get("seed_threshold", 0.5)
            if seed_threshold is None
            else seed_threshold,
            "min_size": d.get("min_size", 8) if min_size is None else min_size,
        }

    def predict(
        self,
        image: np.ndarray,
        *,
        prob_threshold: float | None = None,
        seed_threshold: float | None = None,
        min_size: int | None = None,
    ) -> tuple[np.ndarray, dict[int, float]]:
        """Labels (``uint32``) and per-object confidence of one frame."""
        image = np.asarray(image)
        if image.ndim == 2 and image.size and image.min() == image.max():
            return np.zeros(image.shape, dtype=np.uint32), {}  # blank or saturated: no objects
        norm = self.ckpt.normalize
        img = prepare_image(image, norm.get("low", 1.0), norm.get("high", 99.8))
        if not img.any():  # normalised to zeros: nothing to find either
            return np.zeros(img.shape, dtype=np.uint32), {}
        prob, dist = self._maps_prepared(img)
        s = self.decode_settings(prob_threshold, seed_threshold, min_size)
        return self._decode(prob, dist, s)

    def _decode(
        self, prob: np.ndarray, dist: np.ndarray, s: dict[str, float]
    ) -> tuple[np.ndarray, dict[int, float]]:
        """Labels and per-object scores from the network's two maps."""
        if self.ckpt.representation == FG_INTERIOR:  # full resolution whatever decode_scale
            labels = decode_interior(
                prob,
                dist,
                prob_threshold=s["prob_threshold"],
                seed_threshold=s["seed_threshold"],
                min_size=int(s["min_size"]),
            )
            return labels, object_scores(labels, prob)
        labels = decode(
            prob,
            dist,
            prob_threshold=s["prob_threshold"],
            seed_threshold=s["seed_threshold"],
            min_size=int(s["min_size"]),
            scale=self.decode_scale,
        )
        return labels, object_scores(labels, prob)

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        *,
        prob_threshold: float | None = None,
        seed_threshold: float | None = None,
        min_size: int | None = None,
    ) -> list[tuple[np.ndarray, dict[int, float]]]:
        """Labels and scores of many frames; same-shaped small frames share passes.

        Frames that fit in one tile go through the network ``batch_size`` at a time; a
        larger frame is tiled on its own. With ``overlap_decode`` the maps of one pass
        are decoded on a second thread while the network runs the next pass (ONNX
        Runtime and torch release the GIL while they compute).
        """
        norm = self.ckpt.normalize
        s = self.decode_settings(prob_threshold, seed_threshold, min_size)
        prepared = [
            prepare_image(im, norm.get("low", 1.0), norm.get("high", 99.8)) for im in images
        ]
        results: list[tuple[np.ndarray, dict[int, float]] | None] = [None] * len(prepared)
        pending: list[tuple[int, Future[tuple[np.ndarray, dict[int, float]]]]] = []
        pool = self._decoder_pool() if self.overlap_decode else None
        for i, prob, dist in self._iter_maps(prepared):
            if not prepared[i].any():  # a constant frame holds no objects
                results[i] = (np.zeros(prepared[i].shape, dtype=np.uint32), {})
            elif pool is not None:
                pending.append((i, pool.submit(self._decode, prob, dist, s)))
            else:
                results[i] = self._decode(prob, dist, s)
        for i, fut in pending:
            results[i] = fut.result()
        return [r for r in results if r is not None]

    def _iter_maps(
        self, prepared: list[np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(index, prob, dist)`` of each prepared frame, one forward pass at a time."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(prepared):
            h, w = img.shape
            if h <= self.tile and w <= self.tile:
                groups.setdefault((h, w), []).append(i)
            else:
                groups[(-1 - i, 0)] = [i]  # tiled on its own
        m = self.multiple
        for (h, w), idx in groups.items():
            if h < 0:
                yield (idx[0], *self._maps_prepared(prepared[idx[0]]))
                continue
            ph, pw = math.ceil(h / m) * m, math.ceil(w / m) * m
            for k in range(0, len(idx), self.batch_size):
                chunk = idx[k : k + self.batch_size]
                outs = self._forward(np.stack([self._pad(prepared[i], ph, pw) for i in chunk]))
                for i, o in zip(chunk, outs, strict=True):
                    yield i, o[0, :h, :w], o[1, :h, :w]

    def _decoder_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unet-decode")
        return self._pool

    def close(self) -> None:
        """Stop the decoding thread (if one was started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
