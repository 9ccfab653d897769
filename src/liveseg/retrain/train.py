"""Retraining: clone → fine-tune → validate parent and candidate → report → promote.

The steps, in the order a microscopist already follows them:

1. resolve the parent (e.g. ``nuclei@prod``); it is never written (fine-tuning writes
   new weights into a staging directory and the registry copies them into a new version);
2. collect the corrected queue items and mix in generated base data (the synthetic
   style the parent learned from, ``training_style`` in its card) so the model does not
   forget what it could already do;
3. fine-tune with the backend's registered trainer (``register_trainers`` hook), with a
   progress bar and per-epoch losses;
4. validate parent and candidate with the full chain on the reference set;
5. register the candidate as ``name@N+1`` (always, with its training record, metrics and
   the decision, so it can be inspected or force-promoted later) and write the report;
6. move ``prod`` to the candidate only if it beats the parent on the reference set by
   more than ``min_gain`` in the chosen metric, or if ``force`` (recorded as forced).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.errors import LivesegError
from liveseg.types import LABEL_DTYPE, TrainItem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from liveseg.models import ModelVersion
    from liveseg.plugins import PluginHost
    from liveseg.retrain.queue import QueueItem
    from liveseg.retrain.validate import RefImage, ValidationResult
    from liveseg.types import FinetuneResult

__all__ = ["RetrainOptions", "RetrainOutcome", "base_items", "retrain"]

log = logging.getLogger("liveseg.retrain")

_NOT_INHERITED = frozenset(
    {"metrics", "training", "weights_sha256", "parent_weights_sha256", "created", "decision"}
)


@dataclass
class RetrainOptions:
    """Knobs of one retrain (CLI options of ``liveseg retrain``).

    ``base_items``: generated examples mixed in (``None``: three per corrected item, at
    least 4); ``metric``: the reference-set metric the decision uses; ``min_gain``: how
    much better the candidate must be; ``include_used``: also train on items that
    already trained an earlier version. ``guard_images`` generated images of the base
    style score parent and candidate on what the parent could already do (0 disables);
    with ``max_drop`` set, a candidate that loses more than that there is not promoted.
    """

    epochs: int = 30
    learning_rate: float | None = None
    seed: int = 0
    base_items: int | None = None
    base_style: str | None = None
    val_dir: Path | None = None
    force: bool = False
    min_gain: float = 0.0
    metric: str = "ap@0.5"
    alias: str = "prod"
    include_used: bool = False
    guard_images: int = 10
    max_drop: float | None = None
    report_dir: Path | None = None
    progress: bool = True


@dataclass
class RetrainOutcome:
    """What a retrain did and why."""

    parent: ModelVersion
    candidate: ModelVersion
    promoted: bool
    reason: str
    report: Path | None
    parent_metrics: dict[str, float] | None
    candidate_metrics: dict[str, float] | None
    base_domain: dict[str, Any] | None = None
    items: list[int] = field(default_factory=list)
    finetune: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (printed by ``liveseg retrain --json``)."""
        return {
            "parent": self.parent.spec,
            "candidate": self.candidate.spec,
            "promoted": self.promoted,
            "reason": self.reason,
            "report": str(self.report) if self.report else None,
            "parent_metrics": self.parent_metrics,
            "candidate_metrics": self.candidate_metrics,
            "base_domain": self.base_domain,
            "items": self.items,
            "seconds": self.seconds,
        }


def base_items(
    n: int, shapes: Sequence[tuple[int, int]], style: str, seed: int, kind: str = "nuclei"
) -> list[TrainItem]:
    """``n`` generated examples of the parent's sample type and style, sized like the items.

    ``kind`` is the parent's sample type (``training_data.kind`` in its card: ``cells``,
    ``bacteria``, ...), so a bacteria model is not reminded of nuclei.
    """
    from liveseg.synthetic import generate_sample

    out = []
    for k in range(n):
        shape = shapes[k % len(shapes)] if shapes else (256, 256)
        image, labels = generate_sample(kind, 10_000 + seed * 1000 + k, shape, style)
        out.append(TrainItem(image=image, labels=labels, name=f"base-{style}-{k}"))
    return out


def guard_set(
    n: int, shapes: Sequence[tuple[int, ...]], style: str, kind: str = "nuclei"
) -> list[RefImage]:
    """``n`` generated reference images of the base type and style (seeds apart from training)."""
    from liveseg.retrain.validate import RefImage
    from liveseg.synthetic import generate_sample

    out = []
    for k in range(n):
        shape = shapes[k % len(shapes)] if shapes else (256, 256)
        image, labels = generate_sample(kind, 50_000 + k, (int(shape[0]), int(shape[1])), style)
        out.append(RefImage(f"base-{style}-{k}", image, labels))
    return out


def _digest_refs(refs: Sequence[RefImage]) -> str:
    h = hashlib.sha256()
    for r in refs:
        h.update(r.name.encode())
        h.update(np.ascontiguousarray(r.labels, dtype=LABEL_DTYPE).tobytes())
    return h.hexdigest()[:16]


def _decide(
    parent: dict[str, float] | None,
    cand: dict[str, float] | None,
    opts: RetrainOptions,
    guard: tuple[dict[str, float], dict[str, float]] | None = None,
) -> tuple[bool, str]:
    if parent is None or cand is None:
        if opts.force:
            return True, "promoted with --force (no reference set to compare on)"
        return False, (
            "not promoted: no reference set to compare parent and candidate on "
            "(pass --val REF_DIR, or --force to promote anyway)"
        )
    m = opts.metric
    if m not in cand:
        raise LivesegError(f"unknown metric {m!r}; choose one of {', '.join(sorted(cand))}")
    pv, cv = parent[m], cand[m]
    better = not math.isnan(cv) and (math.isnan(pv) or cv > pv + opts.min_gain)
    compare = f"{m} {cv:.3f} vs parent {pv:.3f}"
    if better and guard is not None and opts.max_drop is not None:
        gp, gc = guard[0][m], guard[1][m]
        if gp - gc > opts.max_drop:
            forgot = (
                f"it forgets the base domain ({m} {gc:.3f} vs parent {gp:.3f} on generated "
                f"base-style images, drop > max_drop {opts.max_drop:g})"
            )
            if opts.force:
                return True, f"promoted with --force although {forgot}; target {compare}"
            return False, f"not promoted: better on the reference set ({compare}) but {forgot}"
    if better:
        return True, f"promoted: candidate is better on the reference set ({compare})"
    if opts.force:
        return True, f"promoted with --force although not better ({compare})"
    need = f" + min_gain {opts.min_gain:g}" if opts.min_gain else ""
    return False, (
        f"not promoted: candidate is not better than the parent on the reference set "
        f"({compare}{need}); the parent stays {opts.alias}"
    )


def retrain(
    spec: str,
    home: Path,
    opts: RetrainOptions | None = None,
    *,
    items: Sequence[QueueItem] | None = None,
    host: PluginHost | None = None,
) -> RetrainOutcome:
    """Fine-tune a clone of ``spec`` on corrected queue items; promote only if better.

    Raises
    ------
    LivesegError
        When there is nothing to train on, or no trainer for the model's backend.
    """
    from liveseg.assembly import build_host
    from liveseg.config import LivesegConfig
    from liveseg.models import ModelRegistry, ModelVersion, file_sha256
    from liveseg.retrain.queue import ItemState, RetrainQueue
    from liveseg.retrain.validate import load_reference_set, validate_model, write_report

    opts = opts or RetrainOptions()
    timings: dict[str, float] = {}
    registry = ModelRegistry(home)
    parent = registry.resolve(spec)
    host = host or build_host(LivesegConfig())
    trainers = host.trainers()
    if parent.backend not in trainers:
        raise LivesegError(
            f"no trainer for backend {parent.backend!r} (model {parent.spec}); installed "
            f"trainers: {', '.join(sorted(trainers)) or 'none'}"
        )
    finetune = trainers[parent.backend]
    queue = RetrainQueue(home)
    if items is None:
        states = [ItemState.CORRECTED] + ([ItemState.USED] if opts.include_used else [])
        items = queue.items(states)
    if not items:
        used = queue.counts().get(ItemState.USED.value, 0)
        if used and not opts.include_used:
            raise LivesegError(
                f"no corrected items left in the retraining queue: all {used} corrected "
                f"items trained a promoted model already; pass --include-used to train on "
                f"them again, or correct more frames"
            )
        raise LivesegError(
            "no corrected items in the retraining queue: flag frames (liveseg flag), "
            "correct them (liveseg queue export / import, or liveseg annotate ITEM), "
            "or add annotated pairs (liveseg queue add IMAGE --labels LABELS)"
        )
    refs = load_reference_set(opts.val_dir) if opts.val_dir is not None else None
    train_items = [it.train_item() for it in items]
    style = opts.base_style or str(parent.card.get("training_style") or "train")
    kind = str(dict(parent.card.get("training_data") or {}).get("kind") or "nuclei")
    n_base = opts.base_items if opts.base_items is not None else max(4, 3 * len(train_items))
    shapes = [ti.image.shape for ti in train_items]
    mixed = train_items + base_items(
        n_base, [(int(s[0]), int(s[1])) for s in shapes], style, opts.seed, kind
    )
    val_items = (
        [TrainItem(image=r.image, labels=r.labels, valid=r.valid, name=r.name) for r in refs]
        if refs
        else []
    )

    staging_root = home / "staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{parent.name}-", dir=staging_root))
    try:
        t0 = time.perf_counter()
        log.info("fine-tuning %s on %d items + %d base", parent.spec, len(items), n_base)
        result: FinetuneResult = finetune(
            parent.weights_path,
            mixed,
            staging,
            epochs=opts.epochs,
            learning_rate=opts.learning_rate,
            seed=opts.seed,
            val_items=val_items,
            progress=opts.progress,
        )
        timings["finetune_s"] = time.perf_counter() - t0
        weights = Path(result.weights_path)
        if not weights.is_file():
            raise LivesegError(f"trainer for {parent.backend!r} wrote no weights at {weights}")
        trained_card: dict[str, Any] = {}
        if (staging / "model.json").is_file():
            trained_card = json.loads((staging / "model.json").read_text(encoding="utf-8"))
        # A staged card so backends can load the candidate by directory before it is
        # registered; weights are referenced by name inside the staging directory.
        staged_dir = staging / "candidate"
        staged_dir.mkdir()
        shutil.copyfile(weights, staged_dir / weights.name)
        staged_card = {
            **{k: v for k, v in parent.card.items() if k not in _NOT_INHERITED},
            **trained_card,
            "name": parent.name,
            "version": 0,
            "backend": parent.backend,
            "weights": weights.name,
        }
        (staged_dir / "model.json").write_text(json.dumps(staged_card, default=str))
        staged = ModelVersion(parent.name, 0, staged_dir, staged_card)

        parent_res: ValidationResult | None = None
        cand_res: ValidationResult | None = None
        guard_res: tuple[ValidationResult, ValidationResult] | None = None
        if refs is not None:
            t0 = time.perf_counter()
            parent_res = validate_model(parent, refs, home, host=host, progress=opts.progress)
            cand_res = validate_model(
                staged,
                refs,
                home,
                host=host,
                ref=str(staged_dir),
                label="candidate",
                progress=opts.progress,
            )
            if opts.guard_images > 0:
                guard_refs = guard_set(opts.guard_images, shapes, style, kind)
                guard_res = (
                    validate_model(
                        parent, guard_refs, home, host=host, label=f"{parent.spec} (parent)"
                    ),
                    validate_model(
                        staged, guard_refs, home, host=host, ref=str(staged_dir), label="candidate"
                    ),
                )
            timings["validate_s"] = time.perf_counter() - t0
        p_sum = parent_res.summary() if parent_res else None
        c_sum = cand_res.summary() if cand_res else None
        g_sum = (guard_res[0].summary(), guard_res[1].summary()) if guard_res else None
        promoted, reason = _decide(p_sum, c_sum, opts, g_sum)

        ref_info = (
            {"ref_set": str(opts.val_dir), "ref_digest": _digest_refs(refs), "n": len(refs)}
            if refs
            else {}
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        card: dict[str, Any] = {
            **{k: v for k, v in trained_card.items() if k not in ("weights", "backend")},
            "training": {
                "items": [
                    {
                        "id": it.id,
                        "name": it.name,
                        "image_sha256": it.image_sha256,
                        "labels_sha256": it.labels_sha256,
                        "valid_sha256": it.valid_sha256,
                        "run": it.run,
                        "frame_index": it.frame_index,
                    }
                    for it in items
                ],
                "base_data": {
                    "generator": "liveseg.synthetic.generate_sample",
                    "kind": kind,
                    "style": style,
                    "n": n_base,
                    "seeds_from": 10_000 + opts.seed * 1000,
                },
                "hyperparameters": {
                    "epochs": opts.epochs,
                    "learning_rate": opts.learning_rate,
                    "seed": opts.seed,
                    **dict(result.hyperparameters),
                },
                "train_losses": list(result.train_losses),
                "val_losses": list(result.val_losses),
                "val_set": ref_info or None,
                "seconds": result.seconds,
            },
            "metrics": (
                [
                    {
                        "time": now,
                        **ref_info,
                        "model": "parent",
                        "spec": parent.spec,
                        **(p_sum or {}),
                    },
                    {"time": now, **ref_info, "model": "self", **(c_sum or {})},
                ]
                if refs
                else []
            ),
            "base_domain_check": (
                {"style": style, "n": opts.guard_images, "parent": g_sum[0], "self": g_sum[1]}
                if g_sum
                else None
            ),
            "decision": {
                "promoted": promoted,
                "reason": reason,
                "forced": opts.force,
                "metric": opts.metric,
                "min_gain": opts.min_gain,
            },
            "training_style": style,
        }
        extra = {
            p.name: p
            for p in staging.iterdir()
            if p.is_file() and p.name not in ("model.json", weights.name)
        }
        candidate = registry.add_version(
            parent.name,
            weights,
            backend=parent.backend,
            parent=parent,
            card=card,
            extra_files=extra,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    if parent_res is not None and cand_res is not None:
        cand_res.model = candidate.spec
        parent_res.model = f"{parent.spec} (parent)"
        if guard_res is not None:
            guard_res[1].model = candidate.spec
        registry.record(parent, "validate", {**ref_info, **(p_sum or {})})
        registry.record(candidate, "validate", {**ref_info, **(c_sum or {})})
    if promoted:  # a candidate that is not promoted leaves its items available
        queue.mark_used([it.id for it in items], candidate.spec)
    registry.record(
        candidate,
        "retrain",
        {
            "parent": parent.spec,
            "promoted": promoted,
            "reason": reason,
            "items": [it.id for it in items],
        },
    )
    if promoted:
        registry.promote(candidate.spec, alias=opts.alias, reason=reason, forced=opts.force)

    report = None
    report_dir = opts.report_dir or (home / "reports" / f"{candidate.name}@{candidate.version}")
    if parent_res is not None and cand_res is not None and refs is not None:
        report = write_report(
            report_dir,
            refs,
            [parent_res, cand_res],
            title=f"Retrain {parent.spec} → {candidate.spec}",
            losses={"train": result.train_losses, "validation": result.val_losses},
            decision=reason,
            details={
                "parent": parent.spec,
                "candidate": candidate.spec,
                "corrected items": ", ".join(str(it.id) for it in items),
                "generated base items": f"{n_base} ({style} style)",
                "epochs": opts.epochs,
                "seed": opts.seed,
                "fine-tune time": f"{timings.get('finetune_s', 0):.1f} s",
                "parent weights sha256": file_sha256(parent.weights_path)[:16],
                "validation losses": "computed on the reference set (curves only)",
            },
            guard=guard_res or (),
            guard_title=(
                f"Base-domain check: {opts.guard_images} generated '{style}' images "
                f"(what the parent could already do)"
            ),
        )
    return RetrainOutcome(
        parent=parent,
        candidate=candidate,
        promoted=promoted,
        reason=reason,
        report=report,
        parent_metrics=p_sum,
        candidate_metrics=c_sum,
        base_domain=card["base_domain_check"],
        items=[it.id for it in items],
        finetune={
            "train_losses": list(result.train_losses),
            "val_losses": list(result.val_losses),
            "epochs": result.epochs,
        },
        seconds=timings,
    )
