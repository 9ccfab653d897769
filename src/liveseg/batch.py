"""Offline batch segmentation of a folder (TIFF/PNG) or an OME-Zarr, locally or on Dask.

Outputs in ``OUT`` (the reference-set convention, so a batch output can be corrected
and used as a reference set):

* ``<name>_labels.tif``: uint32 labels of every input image/plane;
* ``<name>_classes.tif``: uint8 class map (class names in its description) when the
  chain returns one;
* ``<name>_objects.csv``: its per-object table (:func:`liveseg.measure.measure_objects`);
* ``objects.csv``: all per-object rows with an ``image`` column, rebuilt from the
  per-image tables at the end of every run (so each image appears exactly once);
* ``images.csv``: one row per input (status ok / error, count, seconds, error text);
* ``batch.jsonl``: an append-only log of every attempt; ``run.json``: provenance
  (inputs, the exact model version ``name@N``, chain, plugin versions).

Resumable: an image is done when its ``_labels.tif`` exists; both per-image files are
written under temporary names and renamed (objects table first, labels last), so a
crash never leaves a file that looks done but is not, and re-running skips exactly the
finished images. One bad file is an error row, never the end of the batch.

``workers=N`` starts a ``distributed.LocalCluster`` bound to 127.0.0.1 (one thread per
worker process); ``scheduler=ADDRESS`` uses an existing Dask scheduler. Each task builds
the chain once and processes a chunk of images.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liveseg.assembly import assemble
from liveseg.errors import ConfigError, LivesegError
from liveseg.imageio import write_classes_tif
from liveseg.processing import BaseConsumer, ConsumerSpec, PluginNotifier
from liveseg.types import Frame, FrameStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from liveseg.config import LivesegConfig, StepConfig
    from liveseg.imageio import ImageSelection
    from liveseg.types import FrameResult

__all__ = ["BatchFiles", "BatchInput", "discover_inputs", "process_chunk", "run_batch"]

log = logging.getLogger("liveseg.batch")


@dataclass(frozen=True)
class BatchInput:
    """One image to segment: a file, or one plane of an OME-Zarr array."""

    name: str
    path: str
    array: str | None = None  # path of the array inside the zarr store
    index: tuple[int, ...] = ()  # leading (non-YX) indices of the plane
    selection: ImageSelection | None = None  # scene/channel/time/z of a file (bioio)

    def pixel_size(self, override: float | None = None) -> tuple[float, str | None]:
        """The pixel size (µm) and its source: the config, the file (or store), or none."""
        from liveseg.imageio import resolve_pixel_size

        # A plane of a store: its own image group states the size (positions may differ).
        where = Path(self.path) / Path(self.array).parent if self.array else Path(self.path)
        return resolve_pixel_size(where, override, self.selection)

    def read(self) -> np.ndarray:
        """The 2-D image (errors name the file and say what is wrong)."""
        from liveseg.imageio import check_image, read_image

        if self.array is None:
            return read_image(self.path, self.selection)
        import zarr

        arr = zarr.open_array(str(Path(self.path) / self.array), mode="r")
        plane = np.asarray(arr[self.index] if self.index else arr[...])
        return check_image(plane, f"{self.path}/{self.array}{list(self.index)}")


def _strip(name: str) -> str:
    from liveseg.imageio import image_stem

    return image_stem(name)


def _multiscale_arrays(group: Any, prefix: str = "") -> list[tuple[str, list[str]]]:
    """(array path, axis names) of the full-resolution level of every image in a group."""
    attrs = dict(group.attrs)
    ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    found: list[tuple[str, list[str]]] = []
    if ms:
        first = ms[0]
        axes = [a["name"] if isinstance(a, dict) else str(a) for a in first.get("axes", [])]
        path = first["datasets"][0]["path"]
        found.append((f"{prefix}{path}", axes))
        return found
    import zarr

    for key, child in sorted(group.members()):
        if key in ("labels", "OME"):
            continue
        if isinstance(child, zarr.Group):
            found.extend(_multiscale_arrays(child, f"{prefix}{key}/"))
        elif isinstance(child, zarr.Array) and not prefix and len(found) == 0:
            found.append((f"{prefix}{key}", []))
    return found


def discover_inputs(
    source: str | os.PathLike[str], selection: ImageSelection | None = None
) -> list[BatchInput]:
    """Every image of a folder (not ``_labels``/``_valid``) or OME-Zarr plane.

    ``selection`` picks the plane of every multi-dimensional file; with a choice, an
    OME-Zarr store is one input (the chosen plane) rather than one input per plane.

    Raises
    ------
    ConfigError
        When the input does not exist or holds no images.
    """
    src = Path(source)
    if not src.exists():
        raise ConfigError(f"batch input {src} does not exist")
    is_zarr = src.is_dir() and (
        src.name.lower().endswith(".zarr")
        or (src / "zarr.json").is_file()
        or (src / ".zgroup").is_file()
    )
    chosen = selection if selection is not None and selection.describe() else None
    if not is_zarr or chosen is not None:
        if not src.is_dir() or is_zarr:
            return [BatchInput(_strip(src.name), str(src), selection=chosen)]
        from liveseg.imageio import IMAGE_SUFFIXES, list_images

        files = list_images(src)
        if not files:
            raise ConfigError(f"batch input {src} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        return [BatchInput(_strip(p.name), str(p), selection=chosen) for p in files]
    import zarr

    node = zarr.open(str(src), mode="r")
    stem = _strip(src.name)
    if isinstance(node, zarr.Array):
        arrays: list[tuple[str, list[str]]] = [("", [])]
    else:
        arrays = _multiscale_arrays(node)
    inputs = []
    for array_path, axes in arrays:
        arr = zarr.open_array(str(src / array_path), mode="r") if array_path else node
        lead = arr.shape[:-2]
        names = (
            axes[: len(lead)]
            if len(axes) >= len(lead) + 2
            else [f"d{i}" for i in range(len(lead))]
        )
        tag = array_path.replace("/", "-")
        for idx in np.ndindex(*lead) if lead else [()]:
            parts = [stem, tag] + [f"{n}{i}" for n, i in zip(names, idx, strict=True)]
            inputs.append(
                BatchInput(
                    "_".join(p for p in parts if p),
                    str(src),
                    array_path or None,
                    tuple(int(i) for i in idx),
                )
            )
    if not inputs:
        raise ConfigError(f"{src}: no image arrays found in this zarr store")
    if not any(i.array for i in inputs):
        inputs = [BatchInput(i.name, i.path, "", i.index) for i in inputs]
    return inputs


def _atomic_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_labels(path: Path, labels: np.ndarray, pixel_size_um: float | None = None) -> None:
    import tifffile

    from liveseg.imageio import resolution_tags

    extra = resolution_tags(pixel_size_um)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    with open(tmp, "wb") as fh:
        tifffile.imwrite(fh, np.asarray(labels, dtype=np.uint32), compression="zlib", **extra)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _is_done(out: Path, name: str) -> bool:
    return (out / f"{name}_labels.tif").is_file() and (out / f"{name}_objects.csv").is_file()


def _cell(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


class BatchFiles(BaseConsumer):
    """The batch's per-image outputs: ``<name>_objects.csv`` then ``<name>_labels.tif``.

    A chain that returns a class map also writes ``<name>_classes.tif`` (before the
    labels, which stay the done marker).

    Both are written under temporary names and renamed, labels last: the labels file is
    the "done" marker that resume looks for. Critical: a write that fails fails the image.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out = out_dir

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """Write the files of an ok image."""
        if result.status is not FrameStatus.OK:
            return
        n = len(next(iter(objects.values()))) if objects else 0
        rows = [
            {"image": frame.name, **{c: _cell(v[j]) for c, v in objects.items()}} for j in range(n)
        ]
        _atomic_csv(self.out / f"{frame.name}_objects.csv", rows, ["image", *objects])
        known = frame.metadata.get("pixel_size_source") is not None
        px = frame.pixel_size_um if known else None
        if result.classes is not None:
            write_classes_tif(
                self.out / f"{frame.name}_classes.tif", result.classes, result.class_names, px
            )
        _atomic_labels(self.out / f"{frame.name}_labels.tif", result.labels, px)  # done marker


class _Batch:
    """One assembled chain whose processor segments batch inputs (one per Dask task)."""

    def __init__(
        self,
        out_dir: Path,
        config: LivesegConfig,
        steps: Sequence[StepConfig],
        home: Path,
        plugins_dir: str | None,
    ) -> None:
        self.out = out_dir
        self.parts = assemble(config, home=home, plugins_dir=plugins_dir, steps=steps, flags=False)
        self.files = ConsumerSpec("files", BatchFiles(out_dir), critical=True)
        self.processor = self.parts.processor(
            [self.files, ConsumerSpec("plugins", PluginNotifier(self.parts.host))],
            record=self._record,
        )
        self.parts.record_plugin_failures(self._record)
        self.processor.setup(self.parts.run_info("batch", out_dir))
        self._k = 0
        self._records: list[dict[str, Any]] = []

    def _record(self, kind: str, **fields: Any) -> None:
        _log_attempt(self.out, {"kind": kind, **fields})

    def process(self, item: BatchInput) -> dict[str, Any]:
        """Segment one input and write its files; a failure becomes an error record."""
        t0 = time.perf_counter()
        rec: dict[str, Any] = {
            "name": item.name,
            "source": _source(item),
            "count": None,
            "error": "",
        }
        report = self.processor.reports[self.files.name]
        errors_before = report.errors
        index, self._k = self._k, self._k + 1
        try:
            try:
                image = item.read()
            except Exception as exc:
                msg = str(exc) if isinstance(exc, LivesegError) else f"{type(exc).__name__}: {exc}"
                self.processor.unreadable(index, item.name, msg, file=_source(item))
                raise LivesegError(msg) from None
            px, px_source = item.pixel_size(self.parts.config.hardware.pixel_size_um)
            frame = Frame(
                index=index,
                image=image,
                name=item.name,
                pixel_size_um=px,
                metadata={"pixel_size_source": px_source},
            )
            result = self.processor.process(frame)
            if result.status is not FrameStatus.OK:
                raise LivesegError(f"segmentation failed: {result.error}")
            if report.errors > errors_before:
                raise LivesegError(f"writing the outputs failed: {report.last_error}")
            rec.update(status="ok", count=result.count)
        except Exception as exc:
            msg = str(exc) if isinstance(exc, LivesegError) else f"{type(exc).__name__}: {exc}"
            rec.update(status="error", error=msg)
            log.warning("%s: %s", item.name, msg)
        rec["seconds"] = time.perf_counter() - t0
        _log_attempt(self.out, rec)
        self._records.append(rec)
        return rec

    def close(self) -> None:
        """Finish the consumers (sinks) and release the chain's backends."""
        ok = sum(r["status"] == "ok" for r in self._records)
        try:
            self.processor.finish({"kind": "batch", "ok": ok, "total": len(self._records)})
        finally:
            self.parts.close()


def _done_record(item: BatchInput) -> dict[str, Any]:
    return {
        "name": item.name,
        "source": _source(item),
        "status": "done",
        "count": None,
        "seconds": 0.0,
        "error": "",
    }


def process_chunk(
    inputs: Sequence[BatchInput],
    out_dir: str,
    steps: Sequence[dict[str, Any]],
    home: str,
    plugins_dir: str | None = None,
    threads: int = 1,
    config: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Segment ``inputs`` with one chain built here (one Dask task).

    ``config`` (a ``LivesegConfig`` as JSON) brings the plugin allow/deny lists and the
    sinks. Returns one record per input: ``name``, ``status`` (ok / error / done),
    ``count``, ``seconds``, ``error``. Never raises for one input's failure.
    """
    out = Path(out_dir)
    records = [_done_record(i) for i in inputs if _is_done(out, i.name)]
    todo = [i for i in inputs if not _is_done(out, i.name)]
    if not todo:
        return records
    batch = _Batch(out, _batch_config(config, threads), _steps(steps), Path(home), plugins_dir)
    try:
        records.extend(batch.process(item) for item in todo)
    finally:
        batch.close()
    return records


def _batch_config(config: dict[str, Any] | None, threads: int) -> LivesegConfig:
    from liveseg.config import parse_config

    cfg = parse_config(config or {}, "batch config")
    return cfg.model_copy(update={"threads": threads})


def _steps(steps: Sequence[dict[str, Any]]) -> list[StepConfig]:
    from liveseg.config import StepConfig

    return [StepConfig.model_validate(s) for s in steps]


def _source(item: BatchInput) -> str:
    if item.array is None:
        return item.path
    return f"{item.path}/{item.array}{list(item.index)}"


def _log_attempt(out: Path, rec: dict[str, Any]) -> None:
    line = json.dumps({"time": _dt.datetime.now(_dt.UTC).isoformat(), **rec}, default=str)
    with open(out / "batch.jsonl", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _chunks(items: Sequence[BatchInput], n: int) -> list[list[BatchInput]]:
    size = max(1, math.ceil(len(items) / max(n, 1)))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _merge_tables(out: Path, inputs: Iterable[BatchInput]) -> int:
    """Rebuild objects.csv from the per-image tables (each image exactly once)."""
    rows: list[dict[str, str]] = []
    columns: list[str] = []
    for item in inputs:
        f = out / f"{item.name}_objects.csv"
        if not f.is_file():
            continue
        with open(f, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            for c in reader.fieldnames or []:
                if c not in columns:
                    columns.append(c)
            rows.extend(reader)
    _atomic_csv(out / "objects.csv", rows, columns or ["image"])
    return len(rows)


def _same_batch(info: Mapping[str, Any], source: str | os.PathLike[str]) -> bool:
    """Whether run.json ``info`` is an earlier batch of ``source`` (resume it)."""
    if info.get("kind") != "batch" or not info.get("input"):
        return False
    return Path(str(info["input"])).resolve() == Path(source).resolve()


def run_batch(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    steps: Sequence[StepConfig],
    home: Path,
    model: str | None = None,
    plugins_dir: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int = 1,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    config: LivesegConfig | None = None,
    selection: ImageSelection | None = None,
) -> dict[str, Any]:
    """Segment every input of ``source`` into ``out_dir``; returns the summary.

    ``selection`` picks the scene/channel/time point/z-plane of multi-dimensional files.

    ``steps`` is the chain (already carrying the exact model version). ``config`` gives
    the plugin allow/deny lists and the ``sinks:`` (its own chain is not used). Finished
    images are skipped; failed ones are retried on the next run.
    """
    from tqdm import tqdm

    from liveseg.assembly import build_host
    from liveseg.store import check_output_dir

    t0 = time.perf_counter()
    out = Path(out_dir)
    check_output_dir(out, "batch", own=lambda info: _same_batch(info, source))
    out.mkdir(parents=True, exist_ok=True)
    inputs = discover_inputs(source, selection)
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"batch input has images with the same name: {', '.join(dup)}")
    step_dicts = [s.model_dump(mode="json") for s in steps]
    cfg_json = config.model_dump(mode="json") if config is not None else None
    cfg = _batch_config(cfg_json, threads)
    done_before = sum(_is_done(out, i.name) for i in inputs)
    info = {
        "kind": "batch",
        "input": str(source),
        "model": model,
        "chain": step_dicts,
        "n_inputs": len(inputs),
        "started": _dt.datetime.now(_dt.UTC).isoformat(),
        "plugins": build_host(cfg, plugins_dir).versions(),
        "dask": {"workers": workers, "scheduler": scheduler},
        **({"selection": selection.describe()} if selection and selection.describe() else {}),
        **(provenance or {}),
    }
    _write_json(out / "run.json", {**info, "status": "running"})
    records: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(inputs), desc="batch", unit="img", disable=not progress, initial=done_before
    )
    try:
        todo = [i for i in inputs if not _is_done(out, i.name)]
        records.extend(_done_record(i) for i in inputs if _is_done(out, i.name))
        if workers or scheduler:
            task = (str(out), step_dicts, str(home), plugins_dir, threads, cfg_json)
            records.extend(_run_dask(todo, task, workers, scheduler, bar))
        elif todo:
            batch = _Batch(out, cfg, steps, home, plugins_dir)
            try:
                for item in todo:
                    records.append(batch.process(item))
                    bar.update(1)
            finally:
                batch.close()
    finally:
        bar.close()
    by_name = {r["name"]: r for r in records}
    ordered = [by_name[i.name] for i in inputs if i.name in by_name]
    _atomic_csv(
        out / "images.csv", ordered, ["name", "source", "status", "count", "seconds", "error"]
    )
    n_objects = _merge_tables(out, inputs)
    errors = {r["name"]: r["error"] for r in ordered if r["status"] == "error"}
    summary = {
        "total": len(inputs),
        "ok": sum(r["status"] == "ok" for r in ordered),
        "skipped_done": sum(r["status"] == "done" for r in ordered),
        "failed": len(errors),
        "errors": errors,
        "objects": n_objects,
        "wall_s": time.perf_counter() - t0,
        "out": str(out),
    }
    _write_json(out / "run.json", {**info, "status": "finished", "summary": summary})
    return summary


def _run_dask(
    todo: Sequence[BatchInput],
    task: tuple[Any, ...],
    workers: int | None,
    scheduler: str | None,
    bar: Any,
) -> list[dict[str, Any]]:
    """Chunks of images as Dask tasks on a local cluster (127.0.0.1) or a scheduler.

    ``task`` is the rest of :func:`process_chunk`'s arguments after the chunk.
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise LivesegError(
            "Dask is not installed: pip install 'liveseg[dask]' (or run without --workers)"
        ) from None
    if not todo:
        return []
    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="30s")  # type: ignore[no-untyped-call]
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    else:
        n_workers = int(workers or 1)
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # None still binds 8787 (a busy port warns)
        )
        client = Client(cluster)  # type: ignore[no-untyped-call]
    records: list[dict[str, Any]] = []
    try:
        chunks = _chunks(todo, n_workers * 4)
        futures = [client.submit(process_chunk, chunk, *task, pure=False) for chunk in chunks]
        for fut in as_completed(futures):  # type: ignore[no-untyped-call]
            res = fut.result()
            records.extend(res)
            bar.update(len(res))
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()  # type: ignore[no-untyped-call]
    return records


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the CLI."""
    return (
        f"{summary['ok']} segmented, {summary['skipped_done']} already done, "
        f"{summary['failed']} failed of {summary['total']} → {summary['out']}"
    )
