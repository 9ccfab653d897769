"""Core commands: run, segment, resegment, plugins, validate-config."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from liveseg.commands.options import image_selection_options
from liveseg.commands.plugins import plugins_cmd

if TYPE_CHECKING:
    from collections.abc import Iterator

    from liveseg.imageio import ImageSelection

__all__ = ["commands"]


def _load(config: str | None, overrides: tuple[str, ...]) -> Any:
    from liveseg.config import LivesegConfig, apply_overrides, parse_config
    from liveseg.configfile import load_config_file

    if config is None:
        if overrides:
            return parse_config(apply_overrides({}, list(overrides)), "<--set>")
        return LivesegConfig()
    return load_config_file(config, overrides)  # a whole config or a pipeline-only file


_model_option = click.option(
    "--model",
    "model",
    metavar="SPEC",
    help="Model to run instead of the config's: nuclei, cells, bacteria, transmitted, "
    "classical, name@N, name@alias, or a model folder / weights file.",
)


def _with_model(cfg: Any, spec: str | None, home: str | None, plugins_dir: str | None) -> Any:
    """``cfg`` with its model step pointed at ``spec`` (:func:`liveseg.models.model_chain`).

    The config's own steps stay (thresholds, filters) when one of them runs the model's
    backend; otherwise the default chain runs the model. Prints the pinned model.
    """
    if not spec:
        return cfg
    from liveseg.assembly import build_host
    from liveseg.models import model_chain

    factories = build_host(cfg, plugins_dir).backends()
    steps, ref = model_chain(spec, cfg.pipeline.steps, factories, home)
    click.echo(f"model: {ref}", err=True)
    pipeline = cfg.pipeline.model_copy(update={"steps": steps})
    return cfg.model_copy(update={"pipeline": pipeline})


def _print_summary(summary: dict[str, Any]) -> None:
    lines = [
        ("frames acquired", summary.get("frames_acquired")),
        ("frames segmented", summary.get("frames_segmented")),
        ("frames skipped", summary.get("frames_skipped")),
        ("frames failed", summary.get("frames_failed")),
        *(
            [("images not written", summary["frames_write_failed"])]
            if summary.get("frames_write_failed")
            else []
        ),
        ("objects per frame (mean)", f"{summary.get('objects_per_frame_mean', 0):.1f}"),
        ("acquisition frames/s", f"{summary.get('acquisition_fps', 0):.1f}"),
        ("segmentation frames/s", f"{summary.get('segmentation_fps', 0):.1f}"),
        (
            "latency p50 / p95 (ms)",
            "{:.0f} / {:.0f}".format(
                summary.get("latency_ms_p50", float("nan")),
                summary.get("latency_ms_p95", float("nan")),
            ),
        ),
        ("max backlog (frames)", summary.get("max_backlog")),
        (
            "per step (ms, mean)",
            ", ".join(f"{k} {v:.1f}" for k, v in summary.get("step_ms_mean", {}).items()),
        ),
        ("chain", " -> ".join(summary.get("chain", []))),
        *(
            [("class maps (mean)", _class_line(summary["class_summary_mean"]))]
            if summary.get("class_summary_mean")
            else []
        ),
        *_simulation_lines(summary.get("simulation_check") or {}),
        ("output", summary.get("run_dir")),
    ]
    width = max(len(k) for k, _ in lines)
    click.echo("liveseg run summary")
    for key, value in lines:
        click.echo(f"  {key:<{width}}  {value}")


def _class_line(values: dict[str, float]) -> str:
    """One line of a class map's numbers: G for grains, porosity for pores, else fractions."""
    parts: list[str] = []
    if "grain.g_planimetric" in values:
        parts.append(
            f"G {values['grain.g_planimetric']:.2f} (planimetric), "
            f"{values.get('grain.g_intercept', float('nan')):.2f} (intercept), "
            f"{values.get('grain.count', 0):.0f} grains"
        )
    if "pore.area_fraction" in values:
        parts.append(
            f"porosity {100 * values['pore.area_fraction']:.1f}%, "
            f"{values.get('pore.count', 0):.0f} pores"
        )
    if not parts:
        fractions = {
            k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("class_fraction.")
        }
        parts.append(", ".join(f"{n} {100 * v:.1f}%" for n, v in fractions.items()))
    return "; ".join(parts)


def _print_class_lines(session: Any) -> None:
    """Print each segmented frame's class-map line (G per frame) to stderr, live."""
    from tqdm import tqdm

    def on_frame(frame: Any, result: Any, objects: Any) -> None:
        values = result.extra.get("class_summary")
        if values:
            tqdm.write(f"frame {frame.index}: {_class_line(values)}", file=sys.stderr)

    session.events.frame_segmented.connect(on_frame)


def _simulation_lines(check: dict[str, float]) -> list[tuple[str, Any]]:
    if not check:
        return []
    return [
        (
            "simulated truth",
            f"{check['true_objects_per_frame']:.1f} objects/frame clear of the edge, "
            f"{check['detected_objects_per_frame']:.1f} found "
            f"(mean |error| {check['mean_abs_count_error']:.2f}, "
            f"{100 * check['frames_exact']:.0f}% of frames exact)",
        )
    ]


@click.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Run directory to create.")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value."
)
@click.option("--home", type=click.Path(file_okay=False), help="liveseg data directory.")
@click.option("--plugins-dir", type=click.Path(file_okay=False), help="Extra *.py plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_model_option
def run_cmd(
    config: str,
    output: str | None,
    overrides: tuple[str, ...],
    home: str | None,
    plugins_dir: str | None,
    as_json: bool,
    model: str | None,
) -> None:
    """Acquire CONFIG's sequence and segment every frame live (--model: another model)."""
    from liveseg.hardware import preflight
    from liveseg.home import ensure_parent_writable, ensure_writable_dir
    from liveseg.session import Session

    cfg = _with_model(_load(config, overrides), model, home, plugins_dir)
    if output:
        ensure_parent_writable(output, "run directory", hint="choose another with -o DIR")
    else:
        ensure_writable_dir(cfg.output, "output folder", hint="set output: or -o DIR")
    preflight(cfg.hardware)  # a bad .cfg or property: one line, before the store opens
    with Session(cfg, home=home, plugins_dir=plugins_dir) as session:
        click.echo(f"chain: {' -> '.join(session.pipeline.step_names)}", err=True)
        _print_class_lines(session)
        with _stop_on_signals(session) as received:
            summary = session.run(output=output, progress=True)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    status = summary.get("status", "finished")
    if status != "finished":
        why = summary.get("write_stopped") or (
            f"{summary.get('frames_write_failed', 0)} images could not be written"
            if status == "write_failed"
            else "stopped by a signal"
        )
        click.echo(f"run {status}: {why}; see {summary.get('run_dir')}/events.jsonl", err=True)
        raise SystemExit(128 + received[0] if received else 1)


@contextlib.contextmanager
def _stop_on_signals(session: Any) -> Iterator[list[int]]:
    """SIGINT / SIGTERM (SIGBREAK on Windows) stop a live run cleanly.

    The first signal stops acquiring and lets the workers drain the backlog; the second
    stops draining. Either way the run closes its store and records ``interrupted``.
    Yields the list of signals received (for the exit status).
    """
    received: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            n = session.request_stop(drain=True)
            click.echo(f"\ndraining {n} frames, Ctrl-C again to stop now", err=True)
        else:
            session.request_stop(drain=False)
            click.echo(
                "stopping now; unsegmented frames can be filled in with 'liveseg resegment'",
                err=True,
            )

    names = ["SIGINT", "SIGTERM", "SIGBREAK"]  # SIGTERM/SIGBREAK exist only where they work
    sigs = [getattr(signal, n) for n in names if hasattr(signal, n)]
    previous = {sig: signal.signal(sig, handler) for sig in sigs}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.command("segment")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Use this chain.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--home", type=click.Path(file_okay=False))
@_model_option
@image_selection_options
def segment_cmd(
    images: tuple[str, ...],
    output: str,
    config: str | None,
    overrides: tuple[str, ...],
    home: str | None,
    selection: ImageSelection,
    model: str | None,
) -> None:
    """Segment image files offline with the config's (or default) chain.

    IMAGES: TIFF, OME-TIFF, PNG, OME-Zarr, and CZI/ND2/LIF with the ``formats`` extra;
    --channel/--scene/-t/--z pick the plane of a multi-dimensional file.

    ``--model cells`` (or ``bacteria``, ``transmitted``, ``nuclei``, ``classical``,
    ``name@N``, a model folder or weights file) runs that model instead.

    Writes <name>_labels.tif per image (keeping the path below the inputs' common
    folder, so same-named inputs never collide) and objects.csv / frames.csv /
    events.jsonl. Refuses an output directory that already holds a run.
    """
    from liveseg.offline import segment_files

    cfg = _with_model(_load(config, overrides), model, home, None)
    result = segment_files(
        [Path(p) for p in images], Path(output), cfg, home=home, selection=selection
    )
    click.echo(
        f"segmented {result['ok']} of {result['total']} images "
        f"({result['failed']} failed) -> {output}"
    )
    sizes = {(s["um"], s["source"]) for s in result["pixel_sizes"].values()}
    for um, source in sorted(sizes, key=str):
        said = f"from {source}" if source else "the file states none: µm columns are pixels"
        click.echo(f"pixel size {um:g} µm ({said})")
    if result["failed"]:
        for name, err in result["errors"].items():
            click.echo(f"  {err}" if err.startswith(name) else f"  {name}: {err}", err=True)
        raise SystemExit(1)


@click.command("resegment")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--all", "all_frames", is_flag=True, help="Resegment every frame, not only skipped/failed."
)
@click.option(
    "--config", "config", type=click.Path(dir_okay=False), help="Use this chain instead."
)
@click.option("--home", type=click.Path(file_okay=False))
def resegment_cmd(run: str, all_frames: bool, config: str | None, home: str | None) -> None:
    """Segment the frames of RUN that have no labels, in place.

    That is frames acquired but never segmented (a killed or stopped run), skipped or
    failed; spool files left by an interrupted run are consumed.
    """
    from liveseg.offline import resegment_run

    cfg = _load(config, ()) if config else None
    done = resegment_run(Path(run), config=cfg, all_frames=all_frames, home=home)
    click.echo(f"resegmented {done['ok']} frames ({done['failed']} failed) in {run}")


@click.command("validate-config")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option(
    "--no-hardware", is_flag=True, help="Do not load the Micro-Manager config (no devices)."
)
def validate_config_cmd(config: str, overrides: tuple[str, ...], no_hardware: bool) -> None:
    """Check CONFIG: YAML, fields, sequence, every step, and the Micro-Manager config.

    The Micro-Manager configuration is loaded, and the config's device properties set,
    in a child process (``--no-hardware`` skips that).
    """
    from liveseg.assembly import build_host
    from liveseg.defaults import default_steps
    from liveseg.errors import ConfigError
    from liveseg.pipeline import lookup_factory, validate_params

    cfg = _load(config, overrides)
    cfg.useq_sequence()
    host = build_host(cfg)
    factories = host.backends()
    steps = cfg.pipeline.steps or default_steps(factories)
    for i, step in enumerate(steps):
        name = step.name or f"{i}:{step.backend}"
        factory = lookup_factory("backend", step.backend, factories, f"in step {name!r}")
        validate_params(name, step.backend, factory, step.params)
    mm = cfg.hardware.mm_config
    if mm != "demo" and not Path(mm).expanduser().is_file():
        raise ConfigError(f"Micro-Manager config file not found: {mm}")
    if not no_hardware:
        from liveseg.hardware import preflight

        preflight(cfg.hardware)
    click.echo(f"{config}: OK ({len(steps)} steps: {' -> '.join(s.backend for s in steps)})")


commands = [run_cmd, segment_cmd, resegment_cmd, plugins_cmd, validate_config_cmd]
