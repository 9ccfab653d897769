"""CLI of the retraining loop.

Commands: ``flag``, ``queue``, ``annotate``, ``models``, ``retrain``, ``validate``,
``batch`` and ``mosaic``.

Every command takes ``--home`` (else ``$LIVESEG_HOME``, else the platform's user data
directory), where the queue and the model registry live.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from liveseg.commands.options import image_selection_options

if TYPE_CHECKING:
    from liveseg.imageio import ImageSelection

__all__ = ["commands"]

_home_option = click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="LIVESEG_HOME",
    help="liveseg data directory (queue, models); default $LIVESEG_HOME or the user data dir.",
)


def _home(home: str | None) -> Path:
    from liveseg.home import resolve_home

    return resolve_home(home)


def _queue(home: str | None) -> Any:
    from liveseg.retrain.queue import RetrainQueue

    return RetrainQueue(_home(home))


def _registry(home: str | None) -> Any:
    from liveseg.models import ModelRegistry

    return ModelRegistry(_home(home))


class _ListOptionsCommand(click.Command):
    """A command whose ``--labels`` / ``--valid`` take several values after one flag.

    ``queue add a.tif b.tif --labels a_labels.tif b_labels.tif`` (one flag, several
    values) and ``queue add a.tif --labels a_labels.tif b.tif --labels b_labels.tif``
    (the flag repeated, one value each) both work: a flag given once takes every bare
    value that follows it, up to the next option; a flag given several times takes one
    value each time, as click does.
    """

    list_options: tuple[str, ...] = ("--labels", "--valid", "--classes")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Expand ``--labels A B`` into ``--labels A --labels B`` before click parses."""
        return super().parse_args(ctx, _expand_list_options(args, self.list_options))


def _expand_list_options(args: list[str], names: tuple[str, ...]) -> list[str]:
    """Repeat a once-given list option before each bare value that follows it."""
    end = args.index("--") if "--" in args else len(args)
    once = {n for n in names if args[:end].count(n) == 1}
    out: list[str] = []
    current: str | None = None
    for k, token in enumerate(args):
        if k >= end:
            out.extend(args[k:])
            break
        if token in once:
            current = token
            continue
        if token.startswith("-"):
            current = None
        elif current is not None:
            out.append(current)
        out.append(token)
    return out


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- flag --------------------------------------------------------------------------------
@click.command("flag")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--frame", "frames", type=int, multiple=True, required=True, help="Frame index.")
@click.option("--reason", default="", help="Why the frame needs correcting.")
@_home_option
def flag_cmd(run: str, frames: tuple[int, ...], reason: str, home: str | None) -> None:
    """Put frames of a (finished or running) RUN into the retraining queue.

    A frame that is already in the queue is not added twice (its item is named).
    """
    import datetime as dt

    from liveseg import open_run
    from liveseg.errors import LivesegError

    reader = open_run(run)
    known = [int(r["index"]) for r in reader.frames()]
    missing = [i for i in frames if i not in set(known)]
    if missing:
        where = (
            f"it has frames {_ranges(known)} ({len(known)} frames)"
            if known
            else "it has no frames"
        )
        raise LivesegError(
            f"frame {', '.join(map(str, missing))} is not in run {run}: {where}; "
            f"frame numbers are the 'index' column of frames.csv"
        )
    queue = _queue(home)
    run_key = str(Path(run).resolve())
    for index in frames:
        existing = queue.find(run_key, index)
        if existing is not None:
            queue.note(existing, f"flagged again (operator): {reason or '-'}")
            click.echo(f"frame {index} is already flagged: queue item {existing}")
            continue
        item = queue.add(
            reader.image(index),
            reader.labels(index),
            run=run_key,
            frame_index=index,
            reason=reason,
            source="operator",
        )
        record = {
            "time": dt.datetime.now().isoformat(),
            "kind": "flag",
            "frame": index,
            "reason": reason,
            "source": "operator",
            "item": item,
        }
        with (Path(run) / "events.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        click.echo(f"frame {index} → queue item {item}")


def _ranges(values: list[int]) -> str:
    """``0..9, 12, 20..24``: sorted integers as compact ranges."""
    vals = sorted(set(values))
    parts: list[str] = []
    start = prev = vals[0]
    for v in [*vals[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)


# -- queue -------------------------------------------------------------------------------
@click.group("queue")
def queue_group() -> None:
    """The retraining queue: flagged frames and their corrections."""


@queue_group.command("list")
@click.option("--state", type=click.Choice(["new", "corrected", "used"]), help="Only this state.")
@click.option("--json", "as_json", is_flag=True)
@_home_option
def queue_list(state: str | None, as_json: bool, home: str | None) -> None:
    """List queue items."""
    items = _queue(home).items(state)
    if as_json:
        _echo_json([it.as_dict() for it in items])
        return
    if not items:
        click.echo("queue is empty" + (f" (state {state})" if state else ""))
        return
    click.echo(f"{'id':>4}  {'state':<9}  {'name':<28}  {'source':<10}  reason")
    for it in items:
        click.echo(f"{it.id:>4}  {it.state.value:<9}  {it.name:<28}  {it.source:<10}  {it.reason}")


@queue_group.command("show")
@click.argument("item", type=int)
@_home_option
def queue_show(item: int, home: str | None) -> None:
    """Show one item and its history."""
    q = _queue(home)
    _echo_json({**q.get(item).as_dict(), "history": q.history(item)})


@queue_group.command("add", cls=_ListOptionsCommand)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--labels",
    "labels",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Label image for each IMAGE, in order (TIFF/PNG/_seg.npy); one flag, several files.",
)
@click.option(
    "--valid",
    "valid",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Optional valid-region mask for each IMAGE, in order.",
)
@click.option(
    "--classes",
    "classes",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Class map for each IMAGE instead of --labels (class values; with --valid: "
    "sparse scribbles, only the painted pixels count).",
)
@click.option("--reason", default="annotated elsewhere")
@click.option("--relabel", is_flag=True, hidden=True, help="No effect: gaps are renumbered.")
@_home_option
def queue_add(
    images: tuple[str, ...],
    labels: tuple[str, ...],
    valid: tuple[str, ...],
    classes: tuple[str, ...],
    reason: str,
    relabel: bool,
    home: str | None,
) -> None:
    """Add image/label pairs annotated elsewhere as corrected items (all or nothing).

    Label ids with gaps are renumbered (recorded on the item); a binary mask is refused.
    ``--classes`` adds class-map corrections (for the pixel classifier) instead.
    """
    from liveseg.retrain.annotate import add_pairs

    del relabel
    if labels and classes:
        raise click.UsageError("give --labels or --classes, not both")
    q = _queue(home)
    added = add_pairs(q, images, classes or labels, valid, reason=reason, class_maps=bool(classes))
    for image_path, item_id in zip(images, added, strict=True):
        item = q.get(item_id)
        note = ""
        if item.renumberings():
            from liveseg.retrain.annotate import describe_renumbering

            mapping = item.renumberings()[-1]["old_to_new"]
            note = f"; {describe_renumbering({int(k): v for k, v in mapping.items()})}"
        click.echo(f"{image_path} → queue item {item_id} {item.name!r} (corrected{note})")


@queue_group.command("export")
@click.argument("items", nargs=-1, type=int)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["tif", "seg", "both"]), default="tif")
@click.option("--state", type=click.Choice(["new", "corrected", "used"]), default=None)
@_home_option
def queue_export(
    items: tuple[int, ...], output: str, fmt: str, state: str | None, home: str | None
) -> None:
    """Export items (default: all new ones) as TIFF pairs and/or Cellpose _seg.npy."""
    from liveseg.retrain.annotate import export_items

    q = _queue(home)
    chosen = [q.get(i) for i in items] if items else q.items(state or "new")
    written = export_items(q, chosen, output, fmt=fmt)
    click.echo(f"exported {len(chosen)} items ({len(written)} label files) to {output}")
    click.echo(f"correct the *_labels.tif / *_seg.npy files, then: liveseg queue import {output}")


@queue_group.command("import")
@click.argument("source", type=click.Path(exists=True))
@click.option("--item", type=int, help="With a single label file: the item it corrects.")
@click.option("--valid", type=click.Path(exists=True, dir_okay=False))
@click.option("--relabel", is_flag=True, hidden=True, help="No effect: gaps are renumbered.")
@click.option("--all", "include_unchanged", is_flag=True, help="Also accept unchanged labels.")
@_home_option
def queue_import(
    source: str,
    item: int | None,
    valid: str | None,
    relabel: bool,
    include_unchanged: bool,
    home: str | None,
) -> None:
    """Import corrected labels: an exported folder, or one file with --item."""
    from liveseg.retrain.annotate import import_folder, import_labels

    del relabel
    q = _queue(home)
    if Path(source).is_dir():
        outcome = import_folder(q, source, include_unchanged=include_unchanged)
        for name, what in outcome.items():
            click.echo(f"{name}: {what}")
        return
    if item is None:
        raise click.UsageError("importing a single file needs --item ID")
    updated = import_labels(q, item, source, valid)
    click.echo(f"item {updated.id}: corrected (revision {updated.revision})")


@queue_group.command("drop")
@click.argument("items", nargs=-1, type=int, required=True)
@_home_option
def queue_drop(items: tuple[int, ...], home: str | None) -> None:
    """Remove items and their files."""
    q = _queue(home)
    for i in items:
        q.drop(i)
        click.echo(f"dropped item {i}")


@click.command("annotate")
@click.argument("item", type=int)
@_home_option
def annotate_cmd(item: int, home: str | None) -> None:
    """Open ITEM in napari (image + labels); edited labels are saved on close."""
    from liveseg.retrain.annotate import open_in_napari

    updated = open_in_napari(_queue(home), item)
    if updated is None:
        click.echo("labels unchanged")
    else:
        click.echo(f"item {updated.id}: corrected (revision {updated.revision})")


# -- models ------------------------------------------------------------------------------
@click.group("models")
def models_group() -> None:
    """The model registry: versions, aliases, lineage."""


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@_home_option
def models_list(as_json: bool, home: str | None) -> None:
    """List the shipped models (with their purpose) and the registered versions.

    A shipped model is usable by name (``--model cells``) before it is registered: the
    first use registers it as ``NAME@1`` (alias ``prod``).
    """
    from liveseg.commands.try_models import installed_models

    reg = _registry(home)
    installed = installed_models()
    shipped = {name: purpose for name, (_, purpose) in installed.items()}
    rows: list[dict[str, Any]] = []
    for name in reg.names():
        aliases = reg.aliases(name)
        for v in reg.versions(name):
            mv = reg.get(name, v)
            tags = [a for a, av in aliases.items() if av == v]
            rows.append(
                {
                    "spec": mv.spec,
                    "version": v,
                    "backend": mv.backend,
                    "parent": mv.parent,
                    "created": mv.card.get("created"),
                    "aliases": tags,
                    "source": mv.source,
                    "shipped": False,
                    "purpose": shipped.get(name, ""),
                }
            )
    if as_json:
        registered = set(reg.names())
        rows += [
            {
                "spec": n,
                "version": None,
                "backend": None,
                "parent": None,
                "created": None,
                "aliases": [],
                "source": {"kind": "shipped", "source": str(directory)},
                "shipped": True,
                "purpose": p,
            }
            for n, (directory, p) in installed.items()
            if n not in registered
        ]
        _echo_json(rows)
        return
    if shipped:
        click.echo("shipped models (use by name: --model NAME; registered on first use):")
        width = max(len(n) for n in shipped)
        for n, p in shipped.items():
            click.echo(f"  {n:<{width}}  {p}")
    if not rows:
        click.echo("no registered versions yet")
        return
    click.echo("registered versions:")
    for r in rows:
        alias = f"  [{', '.join(r['aliases'])}]" if r["aliases"] else ""
        parent = f"  ← {r['parent']}" if r["parent"] else ""
        click.echo(f"  {r['spec']:<20} {r['backend']:<10} {r['created']}{parent}{alias}")


@models_group.command("show")
@click.argument("spec")
@_home_option
def models_show(spec: str, home: str | None) -> None:
    """Print a version's model.json (plus its path)."""
    mv = _registry(home).resolve(spec)
    _echo_json({"spec": mv.spec, "path": str(mv.path), **mv.card})


@models_group.command("clone")
@click.argument("spec")
@click.option("--name", help="Name of the clone (default: same name, next version).")
@_home_option
def models_clone(spec: str, name: str | None, home: str | None) -> None:
    """Copy a version; the original's files are never written again."""
    mv = _registry(home).clone(spec, name=name)
    click.echo(f"{spec} → {mv.spec}")


@models_group.command("promote")
@click.argument("spec")
@click.option("--alias", default="prod", show_default=True)
@click.option("--reason", default="manual promotion")
@_home_option
def models_promote(spec: str, alias: str, reason: str, home: str | None) -> None:
    """Point an alias (prod) at a version; recorded in the model's history."""
    mv = _registry(home).promote(spec, alias=alias, reason=reason, forced=True)
    click.echo(f"{mv.name}@{alias} → {mv.spec}")


@models_group.command("export")
@click.argument("spec")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["liveseg", "bioimageio"]),
    default="liveseg",
    show_default=True,
    help="liveseg: the version folder; bioimageio: a BioImage Model Zoo package.",
)
@click.option("--zip", "make_zip", is_flag=True, help="bioimageio: also write OUTPUT.zip.")
@_home_option
def models_export(spec: str, output: str, fmt: str, make_zip: bool, home: str | None) -> None:
    """Copy a version (weights + model.json) to a folder, or write it as a Zoo package."""
    if fmt == "bioimageio":
        rdf = _registry(home).export_bioimageio(spec, output, make_zip=make_zip)
        click.echo(f"exported {spec} as a BioImage Model Zoo package: {rdf}")
        return
    out = _registry(home).export(spec, output)
    click.echo(f"exported {spec} to {out}")


@models_group.command("import")
@click.argument("source", type=click.Path(exists=True))
@click.option("--name", help="Registry name (default: from model.json or the rdf).")
@click.option("--backend", help="Backend, when model.json does not say.")
@click.option("--decoder", help="Zoo package: how to decode its output (default: from it).")
@click.option("--promote", is_flag=True, help="Make it prod when the name has no prod yet.")
@_home_option
def models_import(
    source: str,
    name: str | None,
    backend: str | None,
    decoder: str | None,
    promote: bool,
    home: str | None,
) -> None:
    """Register a model folder (an export, a cellpose model) or a Zoo package (RDF|DIR|ZIP)."""
    from liveseg.models_bioimageio import import_package, is_package

    if is_package(source):
        mv = import_package(_registry(home), source, name=name, decoder=decoder, promote=promote)
        click.echo(f"imported {source} as {mv.spec} (decoder {mv.card['decoder']['name']})")
        return
    if Path(source).is_file():
        raise click.UsageError(f"{source}: import takes a model folder, an rdf.yaml or a .zip")
    mv = _registry(home).import_dir(source, name=name, backend=backend, promote=promote)
    click.echo(f"imported {source} as {mv.spec}")


@models_group.command("import-default")
@click.option("--name", default="default", show_default=True)
@_home_option
def models_import_default(name: str, home: str | None) -> None:
    """Register the shipped default model (liveseg-torch) as NAME@N with alias prod."""
    from liveseg.errors import ModelError
    from liveseg.models import builtin_models

    shipped = builtin_models()
    if "default" not in shipped:
        raise ModelError("no shipped default model: install the liveseg-torch plugin")
    mv = _registry(home).import_dir(
        shipped["default"], name=name, note="shipped default model", promote=True
    )
    click.echo(f"shipped default model → {mv.spec}")


# -- validate / retrain ------------------------------------------------------------------
@click.command("validate")
@click.argument("ref_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "specs", multiple=True, required=True, help="Model(s) to compare.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Report folder.")
@click.option("--plugins-dir", type=click.Path(file_okay=False), help="Extra *.py plugins.")
@click.option("--json", "as_json", is_flag=True)
@_home_option
@image_selection_options
def validate_cmd(
    ref_dir: str,
    specs: tuple[str, ...],
    output: str | None,
    plugins_dir: str | None,
    as_json: bool,
    home: str | None,
    selection: ImageSelection,
) -> None:
    """Score model(s) on a reference set (AP@0.5/0.75/0.9, matched IoU) and write a report."""
    from liveseg.assembly import build_host
    from liveseg.config import LivesegConfig
    from liveseg.retrain.validate import load_reference_set, validate_model, write_report

    host = build_host(LivesegConfig(), plugins_dir)
    h = _home(home)
    reg = _registry(home)
    refs = load_reference_set(ref_dir, selection)
    results = []
    last = ""
    for spec in specs:
        mv = reg.resolve(spec, verify=False)  # the backend checks the weights as it loads
        # Each row carries the spec the user typed (and the version it meant), so
        # ``--model nuclei@1 --model nuclei@prod`` never prints two ``nuclei@1`` rows.
        ref = reg.reference(mv, spec)  # a model folder or weights file outside the registry
        label = spec.strip() if ref != mv.spec else mv.spec
        if ref == mv.spec and spec.strip() != mv.spec:
            label = f"{spec.strip()} ({mv.spec})"
        res = validate_model(mv, refs, h, progress=True, label=label, host=host, ref=ref)
        if reg.is_registered(mv):
            reg.record(mv, "validate", {"ref_set": str(ref_dir), **res.summary()})
        results.append(res)
        last = mv.spec if reg.is_registered(mv) else mv.name
    out = Path(output) if output else h / "reports" / f"validate-{last}"
    report = write_report(out, refs, results, title=f"Validation on {ref_dir}")
    if as_json:
        _echo_json({r.model: r.summary() for r in results} | {"report": str(report)})
        return
    for r in results:
        s = r.summary()
        click.echo(
            f"{r.model}: AP@0.5 {s['ap@0.5']:.3f}  AP@0.75 {s['ap@0.75']:.3f}  "
            f"AP@0.9 {s['ap@0.9']:.3f}  matched IoU {s['mean_matched_iou']:.3f}  "
            f"P {s['precision@0.5']:.3f}  R {s['recall@0.5']:.3f}"
        )
    click.echo(f"report: {report}")


@click.command("retrain")
@click.option("--model", "spec", default="default@prod", show_default=True)
@click.option("--from-queue", is_flag=True, default=True, help="Train on corrected queue items.")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--val",
    "val_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Reference set deciding the promotion.",
)
@click.option("--base-items", type=int, default=None, help="Generated items mixed in.")
@click.option("--base-style", default=None, help="Synthetic style of the base data.")
@click.option("--min-gain", type=float, default=0.0, show_default=True)
@click.option("--metric", default="ap@0.5", show_default=True)
@click.option("--include-used", is_flag=True, help="Also train on items used before.")
@click.option(
    "--guard-images",
    type=int,
    default=10,
    show_default=True,
    help="Generated base-style images that show what the candidate forgot (0: off).",
)
@click.option(
    "--max-drop",
    type=float,
    default=None,
    help="Refuse a candidate that loses more than this (metric) on the base-style images.",
)
@click.option("--force", is_flag=True, help="Promote even if not better (recorded).")
@click.option("-o", "--report", "report_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
@_home_option
def retrain_cmd(
    spec: str,
    from_queue: bool,
    epochs: int,
    learning_rate: float | None,
    seed: int,
    val_dir: str | None,
    base_items: int | None,
    base_style: str | None,
    min_gain: float,
    metric: str,
    include_used: bool,
    guard_images: int,
    max_drop: float | None,
    force: bool,
    report_dir: str | None,
    as_json: bool,
    home: str | None,
) -> None:
    """Fine-tune a clone of MODEL on corrected items; promote to prod only if better."""
    from liveseg.retrain.train import RetrainOptions, retrain

    opts = RetrainOptions(
        epochs=epochs,
        learning_rate=learning_rate,
        seed=seed,
        base_items=base_items,
        base_style=base_style,
        val_dir=Path(val_dir) if val_dir else None,
        force=force,
        min_gain=min_gain,
        metric=metric,
        include_used=include_used,
        guard_images=guard_images,
        max_drop=max_drop,
        report_dir=Path(report_dir) if report_dir else None,
        progress=sys.stderr.isatty() or not as_json,
    )
    out = retrain(_registered_spec(spec, home), _home(home), opts)
    if as_json:
        _echo_json(out.as_dict())
        return
    click.echo(f"{out.parent.spec} → {out.candidate.spec}: {out.reason}")
    if out.parent_metrics and out.candidate_metrics:
        for key in ("ap@0.5", "ap@0.75", "ap@0.9", "mean_matched_iou"):
            click.echo(
                f"  {key:<17} parent {out.parent_metrics[key]:.3f}  "
                f"candidate {out.candidate_metrics[key]:.3f}"
            )
    if out.base_domain:
        key = metric if metric in out.base_domain["parent"] else "ap@0.5"
        click.echo(
            f"  base domain ({out.base_domain['style']}, {key}): parent "
            f"{out.base_domain['parent'][key]:.3f}  candidate {out.base_domain['self'][key]:.3f}"
        )
    if out.report:
        click.echo(f"report: {out.report}")


def _registered_spec(spec: str, home: str | None) -> str:
    """``spec`` as a registry spec: a model folder outside the registry is imported first.

    Fine-tunes are versions with a parent, so ``retrain --model DIR`` registers ``DIR``
    (``liveseg models import``) and fine-tunes that version; a bare weights file is
    refused, since a version is a folder with its card.
    """
    from liveseg.errors import ModelError

    reg = _registry(home)
    mv = reg.resolve(spec)
    if reg.is_registered(mv):
        return spec
    if Path(spec).expanduser().is_file():
        raise ModelError(
            f"retrain needs a model folder or a registered model, not the weights file "
            f"{spec}; pass its folder, or register it first: liveseg models import FOLDER"
        )
    imported = reg.import_dir(mv.path, note=f"imported from {mv.path} to retrain")
    click.echo(f"registered {mv.path} as {imported.spec}", err=True)
    return imported.spec


# -- batch -------------------------------------------------------------------------------
def offline_chain(
    config: str | None, spec: str | None, plugins_dir: str | None, home: str | None
) -> tuple[Any, str | None, list[Any], str | None]:
    """The config, plugins folder, chain and pinned model version of ``batch``/``mosaic``.

    The chain is the config's (or pipeline file's), with ``--model`` pinned to its exact
    version ``name@N`` for the whole run; without either, the default chain.
    """
    from liveseg.assembly import build_host
    from liveseg.config import LivesegConfig
    from liveseg.configfile import load_config_file
    from liveseg.defaults import default_steps
    from liveseg.models import model_chain

    cfg = load_config_file(config) if config else LivesegConfig()  # config or pipeline file
    pdir = plugins_dir or cfg.plugins.dir
    host = build_host(cfg, pdir)  # the config's allow/deny hold offline too
    factories = host.backends()
    steps = list(cfg.pipeline.steps)
    resolved = None
    if spec:  # pinned: name@N, a resolved path, or classical (models.model_chain)
        steps, resolved = model_chain(spec, steps, factories, _home(home))
    if not steps:
        steps = default_steps(factories)
    return cfg, pdir, steps, resolved


@click.command("batch")
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option(
    "--model",
    "spec",
    help="Model for the chain's model step: nuclei, cells, bacteria, transmitted, "
    "classical, name@N, name@alias, or a model folder / weights file.",
)
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="Chain config.")
@click.option("--workers", type=int, help="Dask LocalCluster on 127.0.0.1 with N workers.")
@click.option("--scheduler", help="Address of an existing Dask scheduler.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--plugins-dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
@_home_option
@image_selection_options
def batch_cmd(
    source: str,
    output: str,
    spec: str | None,
    config: str | None,
    workers: int | None,
    scheduler: str | None,
    threads: int,
    plugins_dir: str | None,
    as_json: bool,
    home: str | None,
    selection: ImageSelection,
) -> None:
    """Segment a folder of images (TIFF/PNG/CZI/ND2/LIF) or an OME-Zarr into OUT (resumable).

    --channel/--scene/-t/--z pick the plane of every multi-dimensional file.
    """
    from liveseg.batch import run_batch, summary_line

    h = _home(home)
    cfg, pdir, steps, resolved = offline_chain(config, spec, plugins_dir, home)
    summary = run_batch(
        source,
        output,
        steps=steps,
        home=h,
        model=resolved,
        plugins_dir=pdir,
        workers=workers,
        scheduler=scheduler,
        threads=threads,
        progress=not as_json,
        config=cfg,
        selection=selection,
    )
    if as_json:
        _echo_json(summary)
    else:
        click.echo(summary_line(summary))
        for name, err in summary["errors"].items():
            click.echo(f"  error {name}: {err}", err=True)
    if summary["failed"]:
        sys.exit(1)


# -- mosaic ------------------------------------------------------------------------------
@click.command("mosaic")
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(), help="New OUT.ome.zarr.")
@click.option("--block", type=int, default=2048, show_default=True, help="Tile edge (px).")
@click.option("--overlap", default="auto", show_default=True, help="Halo (px) or auto.")
@click.option("--model", "spec", help="Model for the chain's model step (e.g. nuclei@prod).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="Chain config.")
@click.option("--workers", type=int, help="Dask LocalCluster on 127.0.0.1 with N workers.")
@click.option("--scheduler", help="Address of an existing Dask scheduler.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--plugins-dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
@_home_option
def mosaic_cmd(
    source: str,
    output: str,
    block: int,
    overlap: str,
    spec: str | None,
    config: str | None,
    workers: int | None,
    scheduler: str | None,
    threads: int,
    plugins_dir: str | None,
    as_json: bool,
    home: str | None,
) -> None:
    """Segment one large image (or a grid run) in tiles into one stitched label image.

    SOURCE is an OME-Zarr, zarr array, TIFF/PNG, or a liveseg run directory of a grid
    acquisition (stitched by stage position); OUT is a new OME-Zarr holding the image and
    its labels in labels/cells.
    """
    from liveseg.errors import ConfigError
    from liveseg.mosaic import segment_mosaic, summary_line

    if overlap != "auto" and not overlap.isdigit():
        raise ConfigError(f"--overlap must be a number of pixels or auto, got {overlap!r}")
    cfg, pdir, steps, resolved = offline_chain(config, spec, plugins_dir, home)
    summary = segment_mosaic(
        source,
        output,
        steps=steps,
        home=_home(home),
        block=block,
        overlap=None if overlap == "auto" else int(overlap),
        model=resolved,
        plugins_dir=pdir,
        workers=workers,
        scheduler=scheduler,
        threads=threads,
        config=cfg,
    )
    if as_json:
        _echo_json(summary)
    else:
        click.echo(summary_line(summary))


commands: list[click.Command] = [
    flag_cmd,
    queue_group,
    annotate_cmd,
    models_group,
    validate_cmd,
    retrain_cmd,
    batch_cmd,
    mosaic_cmd,
]
