"""Regenerate the shipped weights from scratch: ``python -m liveseg_torch.pretrain --out DIR``.

Steps: generate the synthetic training frames (``liveseg.synthetic``, style ``train``,
seed 0), train :class:`~liveseg_torch.network.UNetLite` on random crops, pick the
decoding thresholds on a validation set (same style, seed 1), score the held-out hard set
(style ``test_hard``, seed 2), and write ``default.pt`` plus a ``model.json`` card to
``DIR``. Everything is seeded; with the default ``--threads 2`` the result matches the
shipped weights up to floating-point summation order (bit-reproducible with
``--threads 1``, about 1.6x slower). On a 2-core CPU the defaults take about 20 minutes.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import liveseg_torch
from liveseg.errors import ModelError
from liveseg_torch.evaluation import DATASETS, dataset, score
from liveseg_torch.inference import Predictor
from liveseg_torch.network import DECODERS, NetConfig, UNetLite, fold_batch_norm
from liveseg_torch.representation import FG_INTERIOR, REPRESENTATIONS
from liveseg_torch.train import DISTANCE_WEIGHT, INTERIOR_WEIGHT, make_sample, train_steps
from liveseg_torch.weights import REPRESENTATION, Checkpoint, save_checkpoint, store_half

__all__ = ["USES", "kind_sets", "main", "measure_speed", "pretrain", "tune_decoding"]


USES: dict[str, dict[str, str]] = {
    "nuclei": {
        "for": "fluorescent nuclei (DNA stains, H2B-FP), widefield or confocal, 10-40 px wide",
        "not_for": "whole cells, cytoplasm stains, transmitted light, bacteria",
    },
    "cells": {
        "for": "whole cells in fluorescence (cytoplasm stain or cytoplasmic FP with a "
        "brighter nucleus), sparse to confluent, cells 20-60 px wide",
        "not_for": "nuclei-only stains (use nuclei), transmitted light, bacteria",
    },
    "bacteria": {
        "for": "rod-shaped bacteria in phase contrast (dark cells, bright halo) or "
        "brightfield, sparse fields and micro-colonies, rods 3-25 px wide",
        "not_for": "cocci chains, filamentous cells, eukaryotic cells, fluorescence",
    },
    "transmitted": {
        "for": "unstained eukaryotic cells and emulsion droplets in brightfield, oblique or "
        "DIC-like light, objects 8-80 px wide",
        "not_for": "fluorescence, bacteria, phase contrast with strong halos",
    },
}
"""What each shipped model is for and not for (copied into its ``model.json``)."""


_REP_CARD: dict[str, dict[str, Any]] = {
    REPRESENTATION: {
        "outputs": ["foreground probability", "per-object normalised distance"],
        "decoding": "seeds = distance > seed_threshold inside foreground; watershed",
    },
    FG_INTERIOR: {
        "outputs": ["foreground probability", "interior probability (object minus its rim)"],
        "decoding": "seeds = 8-connected components of interior > seed_threshold inside "
        "foreground; grown back over the foreground by two 3x3 dilations; full resolution",
    },
}
"""How each representation is described in a model card."""


def measure_speed(predictor: Predictor, kind: str, repeats: int = 10) -> dict[str, Any]:
    """End-to-end ``predict`` time on one 512x512 frame of ``kind``, median of ``repeats``."""
    from liveseg.synthetic import generate_sample

    img, _ = generate_sample(kind, 99, (512, 512), "train")
    predictor.predict(img)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict(img)
        times.append(time.perf_counter() - t0)
    ms = float(np.median(times)) * 1e3
    return {
        "frame": "512x512",
        "threads": torch.get_num_threads(),
        "ms_per_frame": round(ms, 1),
        "frames_per_s": round(1e3 / ms, 1),
        "note": "median of 10, end to end (normalise, network, decode) on a shared 2-core VM",
    }


def tune_decoding(
    predictor: Predictor, pairs: list[tuple[np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """Grid-search the decoding thresholds for AP@0.5 on ``pairs`` (a validation set)."""
    maps = [predictor.maps(img) for img, _ in pairs]
    from liveseg.metrics import aggregate, average_precision
    from liveseg_torch.representation import decode, decode_interior

    # At the predictor's decode scale: thresholds picked at 2 and scored at 1 were not
    # the best ones for what is scored (``rescore --decode-scale 1`` before this).
    dec = (
        decode_interior
        if predictor.ckpt.representation == FG_INTERIOR
        else functools.partial(decode, scale=predictor.decode_scale)
    )
    best: tuple[float, float, float] = (-1.0, 0.5, 0.5)
    for pt in (0.4, 0.5, 0.6):
        for st in (0.3, 0.4, 0.5, 0.6, 0.7):
            res = aggregate(
                average_precision(lab, dec(p, d, prob_threshold=pt, seed_threshold=st))
                for (p, d), (_, lab) in zip(maps, pairs, strict=True)
            )
            val = res.ap[0.5] + 0.5 * res.ap[0.75]
            if val > best[0]:
                best = (val, pt, st)
    return {"prob_threshold": best[1], "seed_threshold": best[2], "min_size": 8}


def pretrain(
    out: Path,
    *,
    n_train: int = 1200,
    steps: int = 12000,
    batch_size: int = 8,
    crop: int = 128,
    learning_rate: float = 3e-3,
    channels: int = 16,
    levels: int = 3,
    batch_norm: bool = False,
    decoder: str | None = None,
    seed: int = 0,
    threads: int = 1,
    progress: bool = True,
    kind: str = "nuclei",
    init: Path | None = None,
    representation: str = REPRESENTATION,
    full_res_head: bool = False,
    noise: float = 0.0,
    train_style: str | None = None,
    widen: int | None = None,
    half_weights: bool = False,
) -> dict[str, Any]:
    """Train a model and write ``default.pt`` + ``model.json``.

    ``kind`` picks the sample type (:data:`liveseg.synthetic.SAMPLE_TYPES`): ``nuclei``
    uses the sets of :data:`~liveseg_torch.evaluation.DATASETS`; the other types train
    on their ``train`` style (seed 0), pick thresholds on 16 more ``train`` frames (seed
    1) and report their held-out ``test`` style (seed 2, 24 frames). ``init`` starts from
    an existing checkpoint's weights (and architecture) instead of a random network.
    ``decoder`` picks how the U-Net's skips join (:data:`~liveseg_torch.network.DECODERS`;
    default ``concat``, or the ``init`` checkpoint's). With ``init`` and another decoder
    than the checkpoint's, the new network takes every tensor of the checkpoint whose
    name and shape match (the encoder and the head) and starts its decoder at random;
    the same for ``full_res_head`` on weights without the head (the new head starts
    random). ``representation`` picks the targets and the decoder
    (:data:`liveseg_torch.representation.REPRESENTATIONS`). ``noise`` adds Gaussian
    noise to half the training crops (:func:`liveseg_torch.train.train_steps`).
    ``train_style`` draws the training frames from another preset of the type (still at
    seed 0, so never the held-out frames): a diagnostic, e.g. ``test`` to measure how far
    the network gets when it trains on the very conditions it is scored on. The card
    records it; the shipped models use the default. ``widen`` (with ``init``) embeds the
    weights in a network with that many base channels, computing the same maps
    (:func:`widen_network`), and trains it from there: more capacity without starting over.
    ``half_weights`` stores the weights as float16 (half the file; the network still
    computes in float32); the scores are those of the rounded weights, as saved.
    """
    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    spec = DATASETS["train"]
    from liveseg.synthetic import SAMPLE_TYPES, generate_sample

    if kind not in SAMPLE_TYPES:
        raise ValueError(f"unknown sample type {kind!r}; known: {', '.join(SAMPLE_TYPES)}")
    split = train_style or (spec["style"] if kind == "nuclei" else "train")
    if split not in _presets(kind):
        raise ValueError(_style_error(kind, split))
    if widen is not None:
        _check_widen(init, widen)
    val_set, test_set = kind_sets(kind)
    samples = []
    for i in tqdm(range(n_train), desc="synthetic frames", disable=not progress):
        img, lab = generate_sample(kind, spec["seed"] * 1_000_003 + i, spec["shape"], split)
        samples.append(make_sample(img, lab, representation=representation))
    t_data = time.perf_counter() - t_start

    torch.manual_seed(seed)
    if init is not None:
        from liveseg_torch.weights import load_checkpoint

        model = load_checkpoint(init).model
        channels, levels, batch_norm = model.config.channels, model.config.levels, False
        if decoder is not None and decoder != model.config.decoder:
            model = _transplant(model, replace(model.config, decoder=decoder))
        if full_res_head and not model.config.full_res_head:
            model = _transplant(model, replace(model.config, full_res_head=True))
        decoder, full_res_head = model.config.decoder, model.config.full_res_head
        if widen is not None:
            model = widen_network(model, widen)
            channels = widen
    else:
        decoder = decoder or "concat"
        model = UNetLite(
            NetConfig(
                channels=channels,
                levels=levels,
                batch_norm=batch_norm,
                decoder=decoder,
                full_res_head=full_res_head,
            )
        )
    bar = tqdm(total=steps, desc="pretraining", disable=not progress)
    ema: list[float] = []

    def on_step(i: int, loss: float) -> None:
        ema.append(loss if not ema else 0.98 * ema[-1] + 0.02 * loss)
        bar.update(1)
        if i % 10 == 0:
            bar.set_postfix(loss=f"{ema[-1]:.4f}")

    losses = train_steps(
        model,
        samples,
        steps=steps,
        batch_size=batch_size,
        crop=crop,
        learning_rate=learning_rate,
        seed=seed,
        noise=noise,
        on_step=on_step,
    )
    bar.close()
    t_train = time.perf_counter() - t_start - t_data
    model = fold_batch_norm(model)  # what is scored below is exactly what is saved

    ckpt = Checkpoint(model=model, representation=representation)
    if half_weights:
        store_half(ckpt)
    predictor = Predictor(ckpt, device="cpu")
    ckpt.decode = tune_decoding(predictor, val_set)
    test = score(lambda im: predictor.predict(im)[0], test_set)
    val = score(lambda im: predictor.predict(im)[0], val_set)
    seconds = time.perf_counter() - t_start
    card: dict[str, Any] = {
        "name": "default" if kind == "nuclei" else kind,
        "description": f"liveseg-torch {kind} model: {SAMPLE_TYPES[kind]}",
        "backend": "unet",
        "weights": "default.pt",
        "format": "liveseg-torch/unet",
        "version": liveseg_torch.__version__,
        "architecture": {
            "type": f"UNetLite ({levels} levels, stride-2 stem, {decoder} skips, "
            + (
                "full-resolution refinement head)"
                if full_res_head
                else "bilinear output upsampling)"
            ),
            **model.config.as_dict(),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "weights_dtype": ckpt.weights_dtype,
        },
        "representation": {
            "name": representation,
            **_REP_CARD[representation],
            "defaults": ckpt.decode,
        },
        "input": {"normalize": "percentile 1 / 99.8 per frame, clamped to [-1, 8]"},
        "training_data": {
            "generator": "liveseg.synthetic.generate_sample",
            "kind": kind,
            "style": split,
            "frames": n_train,
            "shape": list(spec["shape"]),
            "seeds": f"{spec['seed']} * 1000003 + i, i < {n_train}",
            "description": (
                "synthetic fluorescence nuclei: varied size, elongation, outline, texture, "
                "brightness and density (sparse to touching), mitotic and apoptotic "
                "objects, unlabelled out-of-focus nuclei, uneven illumination, haze, "
                "blur, Poisson + read noise, 8/12/16-bit and float encodings"
            )
            if kind == "nuclei"
            else f"see the liveseg.synthetic.{kind} module docstring",
        },
        "training": {
            "seed": seed,
            "steps": steps,
            "batch_size": batch_size,
            "crop": crop,
            "optimizer": "AdamW (wd 1e-4), linear warm-up then cosine decay",
            "learning_rate": learning_rate,
            "loss": f"masked BCE(foreground) + {INTERIOR_WEIGHT} * BCE(interior)"
            if representation == FG_INTERIOR
            else f"masked BCE(foreground) + {DISTANCE_WEIGHT} * MSE(distance)",
            "augmentation": "random crops, flips, 90-degree rotations, intensity jitter"
            + (f", Gaussian noise up to {noise:g} on half the crops" if noise else ""),
            "batch_norm": (
                "after every convolution while training, then folded into the convolutions"
                if batch_norm
                else "none"
            ),
            "final_loss_mean_last_100": float(np.mean(losses[-100:])),
            "threads": threads,
            "seconds": {
                "data": round(t_data, 1),
                "train": round(t_train, 1),
                "total": round(seconds, 1),
            },
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
            "torch": torch.__version__,
        },
        "intended_use": USES[kind],
        "metrics": {"test_hard" if kind == "nuclei" else "test": test, "val": val},
        "speed": measure_speed(predictor, kind),
        "command": (
            f"python -m liveseg_torch.pretrain --out DIR --kind {kind} --steps {steps} "
            f"--n-train {n_train} --batch-size {batch_size} --crop {crop} --lr {learning_rate} "
            f"--channels {channels} --levels {levels} --seed {seed} --threads {threads}"
            + (" --batch-norm" if batch_norm else "")
            + (f" --decoder {decoder}" if decoder != "concat" else "")
            + (" --full-res-head" if full_res_head else "")
            + (f" --representation {representation}" if representation != REPRESENTATION else "")
            + (f" --noise {noise:g}" if noise else "")
            + (f" --train-style {train_style}" if train_style else "")
            + (f" --widen {widen}" if widen is not None else "")
            + (" --half-weights" if half_weights else "")
            + (f" --init {init}" if init is not None else "")
        ),
    }
    ckpt.meta = {"card": "model.json", "trained_steps": steps, "seed": seed}
    save_checkpoint(ckpt, out / "default.pt")
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _transplant(source: UNetLite, config: NetConfig) -> UNetLite:
    """A new ``config`` network holding every tensor of ``source`` that fits by name and shape."""
    target = UNetLite(config)
    own = target.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    own.update(shared)
    target.load_state_dict(own)
    return target


def kind_sets(
    kind: str,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """The validation and held-out test sets of a sample type (frames, labels).

    Validation is 16 ``train``-style frames at seed 1, plus the type's 24-frame ``val``
    preset where it has one (its crowded, dim end, seed 1), so the decoding thresholds
    suit the hard frames too. The held-out set is 24 ``test``-style frames at seed 2.
    """
    if kind == "nuclei":
        return dataset("val"), dataset("test_hard")
    from liveseg.synthetic import PRESETS, iter_samples

    val = list(iter_samples(kind, 16, 1, (256, 256), "train"))
    if "val" in PRESETS[kind]:
        val += iter_samples(kind, 24, 1, (256, 256), "val")
    return val, list(iter_samples(kind, 24, 2, (256, 256), "test"))


def rescore(
    out: Path, threads: int = 2, decode_scale: int | None = None, half_weights: bool = False
) -> dict[str, Any]:
    """Re-pick decoding thresholds and re-score ``out/default.pt``; update both files.

    For a changed decoder or evaluation set, without retraining. The sample type comes
    from the card (``training_data.kind``, default nuclei). ``decode_scale`` 1 makes the
    model's step decode at full resolution (recorded as ``step_params`` in the card,
    which :func:`liveseg.commands.try_models.resolve_model_spec` passes to the step);
    thin touching objects (rods 3-8 px wide) need it, at the cost of speed.
    ``half_weights`` rewrites the weights as float16 (what ``pretrain --half-weights``
    would have saved) and scores the rounded weights; a float16 file stays float16.
    """
    from liveseg_torch.weights import load_checkpoint

    torch.set_num_threads(threads)
    card: dict[str, Any] = json.loads((out / "model.json").read_text())
    kind = str(card.get("training_data", {}).get("kind", "nuclei"))
    if decode_scale is None:
        decode_scale = int(card.get("step_params", {}).get("decode_scale", 2))
    ckpt = load_checkpoint(out / "default.pt")
    if half_weights and ckpt.weights_dtype != "float16":
        store_half(ckpt)
        if "command" in card and " --half-weights" not in card["command"]:
            card["command"] += " --half-weights"
    card.setdefault("architecture", {})["weights_dtype"] = ckpt.weights_dtype
    predictor = Predictor(ckpt, device="cpu", decode_scale=decode_scale)
    val_set, test_set = kind_sets(kind)
    ckpt.decode = tune_decoding(predictor, val_set)
    card["representation"]["defaults"] = ckpt.decode
    card["metrics"] = {
        "test_hard" if kind == "nuclei" else "test": score(
            lambda im: predictor.predict(im)[0], test_set
        ),
        "val": score(lambda im: predictor.predict(im)[0], val_set),
    }
    if decode_scale != 2:
        card["step_params"] = {"decode_scale": decode_scale}
    else:
        card.pop("step_params", None)
    if kind in USES:
        card["intended_use"] = USES[kind]
        card["speed"] = measure_speed(predictor, kind)
    save_checkpoint(ckpt, out / "default.pt")
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def widen_network(source: UNetLite, channels: int) -> UNetLite:
    """``source`` embedded in a network of ``channels`` base channels, same output.

    Every convolution keeps its trained weights in its leading slice; the new output
    channels start at the new network's random initialisation, and every weight that
    reads a new channel starts at zero, so the new channels change nothing until training
    moves those weights (Net2Net-style widening).
    """
    if channels <= source.config.channels:
        raise ValueError(_widen_error(source.config.channels, channels))
    target = UNetLite(replace(source.config, channels=channels))
    old = source.state_dict()
    own = target.state_dict()
    for name, tensor in own.items():
        w = old[name]
        t = tensor.clone()
        if t.ndim == 4:  # convolution weights (out, in, kh, kw)
            t[:, w.shape[1] :] = 0
            t[: w.shape[0], : w.shape[1]] = w
        else:  # biases
            t[w.shape[0] :] = 0
            t[: w.shape[0]] = w
        own[name] = t
    target.load_state_dict(own)
    return target


def _check_widen(init: Path | None, widen: int) -> None:
    if init is None:
        raise ValueError("needs --init (the weights to widen)")
    from liveseg_torch.weights import load_checkpoint

    have = load_checkpoint(init).model.config.channels
    if widen <= have:
        raise ValueError(_widen_error(have, widen))


def _widen_error(have: int, want: int) -> str:
    return f"widen to {want} channels: must be more than the network's {have}"


def _presets(kind: str) -> list[str]:
    """The style presets of a sample type (``generate_sample``'s ``split`` values)."""
    from liveseg.synthetic import PRESETS

    return [*PRESETS[kind]] if kind in PRESETS else []


def _style_error(kind: str, style: str) -> str:
    return f"unknown {kind} style {style!r}; known: {', '.join(_presets(kind))}"


def _non_negative(text: str) -> float:
    """An argparse type: a finite float >= 0 (a noise level)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(
        prog="python -m liveseg_torch.pretrain", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, required=True, help="directory for default.pt + model.json")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--n-train", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument(
        "--levels", type=int, default=3, choices=(3, 4), help="U-Net depth (see network.py)"
    )
    p.add_argument(
        "--batch-norm",
        action="store_true",
        help="train with BatchNorm, folded away before saving (converges faster; try --lr 1e-2)",
    )
    p.add_argument(
        "--decoder",
        default=None,
        choices=DECODERS,
        help="how skips join the decoder: concat (original, default) or add (about 1.5x "
        "faster); with --init, the encoder and head come from the weights",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--kind",
        default="nuclei",
        help="sample type to train for: nuclei, cells, bacteria, transmitted",
    )
    p.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.add_argument(
        "--representation",
        choices=REPRESENTATIONS,
        default=REPRESENTATION,
        help="what the network predicts (foreground+interior: thin touching rods)",
    )
    p.add_argument(
        "--full-res-head",
        action="store_true",
        help="add the full-resolution refinement head (objects a few pixels wide)",
    )
    p.add_argument(
        "--noise",
        type=_non_negative,
        default=0.0,
        help="extra Gaussian noise on half the training crops, standard deviation drawn up "
        "to this (normalised units; 0 = none)",
    )
    p.add_argument(
        "--train-style",
        default=None,
        help="preset to draw the training frames from (default: train). Another one, "
        "e.g. test, only as a diagnostic of what the network can reach on those "
        "conditions: the held-out seeds stay unseen and the card records the style",
    )
    p.add_argument(
        "--widen",
        type=int,
        default=None,
        help="with --init: embed its weights in a network with this many base channels "
        "(same output at first; the new channels start random and unused), then train",
    )
    p.add_argument(
        "--half-weights",
        action="store_true",
        help="store the weights as float16: half the file, the same network in float32 "
        "(the card's scores are the rounded weights')",
    )
    p.add_argument(
        "--decode-scale",
        type=int,
        choices=(1, 2),
        default=None,
        help="with --rescore: 1 = full-resolution watershed (thin rods), 2 = live default",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="torch threads (1 = bit-reproducible, ~1.6x slower)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--rescore", action="store_true", help="only re-tune decoding and re-score DIR/default.pt"
    )
    a = p.parse_args(argv)
    if a.train_style is not None and a.train_style not in _presets(a.kind):
        p.error(f"--train-style: {_style_error(a.kind, a.train_style)}")
    if a.widen is not None:
        try:
            _check_widen(a.init, a.widen)
        except (ValueError, ModelError) as exc:
            p.error(f"--widen: {exc}")
    if a.rescore:
        card = rescore(a.out, a.threads, a.decode_scale, a.half_weights)
        print(json.dumps({"metrics": card["metrics"]}))
        return 0
    card = pretrain(
        a.out,
        n_train=a.n_train,
        steps=a.steps,
        batch_size=a.batch_size,
        crop=a.crop,
        learning_rate=a.lr,
        channels=a.channels,
        levels=a.levels,
        batch_norm=a.batch_norm,
        decoder=a.decoder,
        seed=a.seed,
        threads=a.threads,
        progress=not a.no_progress,
        kind=a.kind,
        init=a.init,
        representation=a.representation,
        full_res_head=a.full_res_head,
        noise=a.noise,
        train_style=a.train_style,
        widen=a.widen,
        half_weights=a.half_weights,
    )
    print(json.dumps({"metrics": card["metrics"], "seconds": card["training"]["seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
