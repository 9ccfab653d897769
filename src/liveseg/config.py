"""Pydantic models of the YAML configs users write (``configs/*.yaml``).

Errors name the file, the line (for YAML syntax) or the field path (for values), and
what is allowed, because the person reading them is at a microscope, not in a debugger.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from liveseg.errors import ConfigError

__all__ = [
    "BacklogConfig",
    "HardwareConfig",
    "LivesegConfig",
    "PipelineConfig",
    "PluginsConfig",
    "SampleObject",
    "SelectionConfig",
    "SimulationConfig",
    "SinkConfig",
    "StageLimits",
    "StepConfig",
    "StorageConfig",
    "TriggerConfig",
    "WorkersConfig",
    "apply_overrides",
    "load_config",
    "load_yaml",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepConfig(_Model):
    """One chain step: which backend, its parameters, an optional display name."""

    backend: str
    params: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None


class PipelineConfig(_Model):
    """The ordered chain.

    ``step_timeout_s``: a frame whose chain takes longer is recorded as ``failed`` with
    the step that hung, and the run goes on (``None`` waits for ever). A hung native call
    keeps its thread; while it has not returned, later frames fail at once instead of
    queueing behind it.
    """

    steps: list[StepConfig] = Field(default_factory=list)
    step_timeout_s: float | None = Field(default=60.0, gt=0)


class SinkConfig(_Model):
    """One plugin sink by name with its parameters: gets every frame, whatever its status."""

    sink: str
    params: dict[str, Any] = Field(default_factory=dict)


class WorkersConfig(_Model):
    """Who runs the chain of a live run: ``count`` workers of one ``kind``.

    ``thread``: worker threads in the run's process. ``process``: each worker thread
    hands its frames to a worker process of its own (pixels and labels through shared
    memory), so inference never holds the acquisition's GIL; a worker process that
    dies fails the frame it held and is restarted. Live runs only: ``segment``,
    ``batch`` and ``resegment`` run the chain as before.
    """

    kind: Literal["thread", "process"] = "thread"
    count: int = Field(default=1, ge=1, le=16)


class BacklogConfig(_Model):
    """What to do when segmentation is slower than the camera.

    ``all``: every frame is segmented, late if need be (frames wait in a spool on disk
    when the in-memory queue is full, so nothing is lost). ``latest``: live mode, only
    the newest frame is segmented; skipped frames are recorded as ``skipped``.
    ``workers``: :class:`WorkersConfig`, or a number (the count of thread workers, as
    configs written before worker processes say).
    """

    policy: Literal["all", "latest"] = "all"
    queue_size: int = Field(default=16, ge=1)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    batch: int = Field(
        default=4,
        ge=1,
        le=64,
        description="under 'all', up to this many frames already waiting are segmented "
        "together (a step with segment_batch shares forward passes); 1: one at a time",
    )
    max_rate_hz: float | None = Field(
        default=100.0,
        gt=0,
        description="under 'latest', the newest frame is segmented at most this many "
        "times a second (the others are skipped as usual); null: as often as the chain "
        "can. Live results are for eyes and triggers; segmenting blank or trivial frames "
        "at a fast camera's full rate would only take the interpreter from acquisition",
    )
    freeze_heap: bool = Field(
        default=True,
        description="during a live run, keep the objects that existed before it out of "
        "Python's garbage collections (gc.freeze), whose walks of the whole heap stall "
        "the acquisition thread",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _count_alone(cls, value: Any) -> Any:
        """``workers: 2`` is ``workers: {count: 2}`` (the default kind)."""
        if isinstance(value, int) and not isinstance(value, bool):
            return {"count": value}
        return value


class SampleObject(_Model):
    """One simulated object at a stage position (µm)."""

    x: float
    y: float
    radius: float = Field(default=5.0, gt=0)
    intensity: float = Field(default=1.0, gt=0)


class SimulationConfig(_Model):
    """A simulated sample drawn by pymmcore-plus ``experimental.simulate``.

    Objects sit at known stage coordinates; the demo camera then images them wherever
    the stage is. ``objects`` lists them explicitly; otherwise ``n_objects`` are placed
    with ``seed`` inside ``extent_um`` (a square centred on the stage origin).
    ``kind: grains`` shows a generated polished-and-etched metal section instead
    (:func:`liveseg.materials.sample.grain_sample`, ``extent_um`` wide, from ``seed``).
    """

    kind: Literal["points", "grains"] = Field(
        default="points",
        description="points: round objects (below); grains: a generated metal section",
    )
    objects: list[SampleObject] = Field(default_factory=list)
    n_objects: int = Field(default=0, ge=0)
    extent_um: float = Field(default=1000.0, gt=0)
    radius_um: tuple[float, float] = (4.0, 7.0)
    seed: int = 0
    background: float = Field(default=0.03, ge=0, le=1)
    noise: float = Field(default=0.02, ge=0)


class HardwareConfig(_Model):
    """The Micro-Manager hardware: ``mm_config`` is ``demo`` or a path to a .cfg file."""

    mm_config: str = "demo"
    properties: list[tuple[str, str, str | float | int]] = Field(default_factory=list)
    exposure_ms: float | None = Field(default=None, ge=0)
    pixel_size_um: float | None = Field(default=None, gt=0)
    simulate: SimulationConfig | None = None


class StorageConfig(_Model):
    """How a live run treats its disk.

    ``max_write_failures``: consecutive failed image writes (a full or vanished disk)
    after which the acquisition stops instead of imaging into the void.
    ``index_interval_s``: how long written images' frame-index rows may wait to be
    appended to ``frames.csv`` together, and processed frames' rows in frames.csv and
    objects.csv to be flushed together (a kill inside the window loses no image: the
    reader recovers them from the image store, and ``resegment`` fills in their labels).
    """

    max_write_failures: int = Field(default=3, ge=1)
    index_interval_s: float = Field(default=0.05, ge=0, le=60)


class PluginsConfig(_Model):
    """Which plugins load: ``allow`` (None = all), ``deny``, and an extra ``dir``."""

    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)
    dir: str | None = None


class TriggerConfig(_Model):
    """One smart-microscopy trigger by name with its parameters."""

    trigger: str
    params: dict[str, Any] = Field(default_factory=dict)


class StageLimits(_Model):
    """Allowed stage range (µm) for triggered targets; ``None`` leaves an axis free."""

    x: tuple[float, float] | None = None
    y: tuple[float, float] | None = None


class SelectionConfig(_Model):
    """How trigger proposals are selected and scheduled (see ``liveseg.triggers``).

    ``insert``: ``asap`` runs triggered work as soon as the current event ends when it
    fits before the next time point; ``between_timepoints`` only after a time point's
    last event. Work that does not fit waits at most ``max_defer_timepoints`` time points,
    then runs and the delay it causes is recorded.
    """

    dedupe_radius_um: float = Field(default=10.0, ge=0)
    max_per_frame: int | None = Field(default=20, ge=0)
    max_per_minute: int | None = Field(default=600, ge=0)
    stage_limits: StageLimits | None = None
    insert: Literal["asap", "between_timepoints"] = "asap"
    max_defer_timepoints: int = Field(default=1, ge=0)
    gate_timeout_s: float = Field(default=2.0, gt=0)
    drain_timeout_s: float = Field(default=10.0, gt=0)


class FlagPolicyConfig(_Model):
    """One automatic flag policy by name with its parameters."""

    policy: str
    params: dict[str, Any] = Field(default_factory=dict)


class LivesegConfig(_Model):
    """A whole run: hardware, sequence, chain, backlog, triggers, outputs."""

    name: str = "run"
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    sequence: dict[str, Any] = Field(default_factory=dict)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    backlog: BacklogConfig = Field(default_factory=BacklogConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    threads: int = Field(default=1, ge=1, description="torch/numpy threads for live inference")
    device: str | None = None
    output: str = "runs"
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    triggers: list[TriggerConfig] = Field(default_factory=list)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    flags: list[FlagPolicyConfig] = Field(default_factory=list)
    sinks: list[SinkConfig] = Field(default_factory=list)
    home: str | None = None

    def useq_sequence(self) -> Any:
        """The acquisition as a ``useq.MDASequence``."""
        import useq

        try:
            return useq.MDASequence.model_validate(self.sequence)
        except pydantic.ValidationError as exc:
            raise ConfigError(f"invalid sequence: {_format_errors(exc, 'sequence')}") from None


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; syntax errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a text file ({exc.reason})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None


def _format_errors(exc: pydantic.ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {loc}: {msg}")
    return "\n" + "\n".join(lines)


def _resolve_includes(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``sequence:`` and ``pipeline:`` may name another YAML file (relative to the config)."""
    for key in ("sequence", "pipeline"):
        value = data.get(key)
        if isinstance(value, str):
            target = (base / value).resolve()
            loaded = load_yaml(target)
            if not isinstance(loaded, dict):
                raise ConfigError(f"{target}: expected a mapping for {key!r}")
            data[key] = loaded
    return data


def parse_config(data: Any, source: str = "<config>", base: Path | None = None) -> LivesegConfig:
    """Validate a config mapping."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping, got {type(data).__name__}")
    data = _resolve_includes(copy.deepcopy(data), base or Path.cwd())
    try:
        return LivesegConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{source}: invalid config:{_format_errors(exc)}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a config mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node: Any = data
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, dict | list):  # e.g. backlog.workers: 1, then .kind=…
                where = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"--set {key}: {where} is {node!r}, not a mapping; set {where} as a whole"
                )
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> LivesegConfig:
    """Read, override and validate a config file."""
    p = Path(path)
    data = load_yaml(p)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p}: the config must be a mapping, got {type(data).__name__}")
    data = _resolve_includes(dict(data or {}), p.parent)
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_config(data, str(p), p.parent)
