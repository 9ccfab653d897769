"""One assembly: the host, chain, triggers, flag policies and sinks a config asks for.

Every entry point (``Session``, ``segment``, ``batch`` local and on Dask, ``resegment``,
``validate``) builds its parts here, so the config's ``plugins.allow`` / ``deny`` /
``dir`` hold everywhere and a sink enabled in ``sinks:`` runs whatever the entry point.
Each extension kind is built the same way: look up the factory by name, validate its
``Params``, call ``factory(params, context)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveseg.defaults import default_steps
from liveseg.home import resolve_home
from liveseg.pipeline import Pipeline, StepContext, lookup_factory, validate_params
from liveseg.plugins import PluginHost
from liveseg.processing.processor import ConsumerSpec, FrameProcessor

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from liveseg.config import LivesegConfig, StepConfig, WorkersConfig
    from liveseg.processing.worker_process import ProcessChainRunner

__all__ = ["Assembly", "assemble", "build_host", "build_pipeline"]

log = logging.getLogger("liveseg.assembly")


def build_host(config: LivesegConfig, plugins_dir: str | None = None) -> PluginHost:
    """The plugin host a config asks for (``plugins_dir`` overrides ``plugins.dir``)."""
    return PluginHost.from_config(config.plugins, plugins_dir=plugins_dir)


def build_pipeline(
    config: LivesegConfig,
    host: PluginHost,
    home: Path,
    steps: Sequence[StepConfig] | None = None,
) -> Pipeline:
    """The chain of ``steps`` (default: the config's, else the default chain)."""
    factories = host.backends()
    chosen = list(steps) if steps is not None else list(config.pipeline.steps)
    if not chosen:
        chosen = default_steps(factories)
    ctx = StepContext(home=home, threads=config.threads, device=config.device)
    return Pipeline.build(chosen, factories, ctx)


@dataclass
class Assembly:
    """The parts built from one config; ``close`` releases the backends.

    ``plugins_dir`` and ``steps`` are what :func:`assemble` was given, so that a worker
    process builds the same chain.
    """

    config: LivesegConfig
    home: Path
    host: PluginHost
    pipeline: Pipeline
    flag_policies: list[tuple[str, Any]] = field(default_factory=list)
    sinks: list[ConsumerSpec] = field(default_factory=list)
    plugins_dir: str | None = None
    steps: Sequence[StepConfig] | None = None
    _workers: ProcessChainRunner | None = field(default=None, init=False, repr=False)

    def _context(self, name: str) -> StepContext:
        return StepContext(
            home=self.home,
            threads=self.config.threads,
            device=self.config.device,
            step_name=name,
            logger=log.getChild(name),
        )

    def build_triggers(self, channel_group: str = "Channel") -> list[tuple[str, Any]]:
        """Fresh trigger objects for one run.

        The config's ``triggers:``, then one adapter per plugin implementing
        ``propose_events`` (:meth:`PluginHost.hook_triggers`), so the hook is called on
        every segmented frame even when the config lists no trigger.
        """
        from liveseg.plugin_api import TriggerContext

        factories = self.host.triggers()
        built: list[tuple[str, Any]] = []
        for i, cfg in enumerate(self.config.triggers):
            factory = lookup_factory("trigger", cfg.trigger, factories, f"(triggers[{i}])")
            params = validate_params(cfg.trigger, cfg.trigger, factory, cfg.params)
            ctx = TriggerContext(
                name=cfg.trigger,
                channel_group=channel_group,
                logger=logging.getLogger(f"liveseg.triggers.{cfg.trigger}"),
            )
            built.append((cfg.trigger, factory(params, ctx)))
        built.extend(self.host.hook_triggers())
        return built

    def processor(
        self,
        consumers: Sequence[ConsumerSpec],
        *,
        record: Callable[..., None] | None = None,
        measure: bool = True,
        sinks: bool = True,
        workers: WorkersConfig | None = None,
        frame_shape: tuple[int, int] | None = None,
    ) -> FrameProcessor:
        """A frame processor over this chain: ``consumers`` then (``sinks``) the plugin sinks.

        ``workers`` of kind ``process`` (a live run's ``backlog.workers``) run the chain in
        worker processes, warmed up on a ``frame_shape`` frame of noise when the processor
        is set up and kept warm for the next processor until :meth:`close`; otherwise it
        runs on threads of this process.
        """
        chosen = [*consumers, *(self.sinks if sinks else [])]
        timeout = self.config.pipeline.step_timeout_s
        runner = None
        if workers is not None and workers.kind == "process":
            from liveseg.processing.worker_process import ProcessChainRunner, WorkerSpec

            if self._workers is None:
                spec = WorkerSpec.of(
                    self.config,
                    self.home,
                    plugins_dir=self.plugins_dir,
                    steps=self.steps,
                    warmup_shape=frame_shape,
                )
                self._workers = ProcessChainRunner(
                    spec, workers.count, timeout, record, keep_warm=True
                )
            runner = self._workers
            runner.record = record or runner.record
        return FrameProcessor(
            self.pipeline,
            self.host,
            chosen,
            record=record,
            step_timeout_s=timeout,
            measure=measure,
            runner=runner,
        )

    def record_plugin_failures(self, record: Callable[..., None]) -> None:
        """Put every plugin that failed to load or to register into the run's events.

        The host already went on without it (``PluginHost.errors``); the run directory
        is where the operator looks afterwards, so it is said there too.
        """
        for f in self.host.errors:
            record("plugin_error", plugin=f.plugin, hook=f.hook, where=f.where, error=f.error)

    def run_info(self, entry_point: str, run_dir: str | Path) -> dict[str, Any]:
        """What every consumer's ``setup(run)`` gets (see ``plugin_api.Sink``)."""
        return {
            "entry_point": entry_point,
            "run_dir": str(run_dir),
            "config": self.config.model_dump(mode="json"),
            "chain": self.pipeline.backend_names,
        }

    def close(self) -> None:
        """Release the chain's backends and end the worker processes."""
        if self._workers is not None:
            self._workers.shutdown()
            self._workers = None
        self.pipeline.close()


def _flag_policies(
    config: LivesegConfig, host: PluginHost, ctx: Callable[[str], StepContext]
) -> list[tuple[str, Any]]:
    factories = host.flag_policies()
    out = []
    for cfg in config.flags:
        factory = lookup_factory("flag policy", cfg.policy, factories)
        params = validate_params(cfg.policy, cfg.policy, factory, cfg.params)
        out.append((cfg.policy, factory(params, ctx(cfg.policy))))
    out.extend(host.hook_flag_policies())  # flag_frame hookimpls, one adapter per plugin
    return out


def _sinks(
    config: LivesegConfig, host: PluginHost, ctx: Callable[[str], StepContext]
) -> list[ConsumerSpec]:
    owner = {n: p.name for p in host.plugins() for n in p.provides.get("sinks", [])}
    factories = host.sinks()
    out: list[ConsumerSpec] = []
    for i, cfg in enumerate(config.sinks):
        factory = lookup_factory("sink", cfg.sink, factories, f"(sinks[{i}])")
        params = validate_params(cfg.sink, cfg.sink, factory, cfg.params)
        name = cfg.sink if cfg.sink not in {s.name for s in out} else f"{cfg.sink}[{i}]"
        sink = factory(params, ctx(cfg.sink))
        out.append(ConsumerSpec(name, sink, plugin=owner.get(cfg.sink, "")))
    return out


def assemble(
    config: LivesegConfig,
    *,
    home: str | Path | None = None,
    plugins_dir: str | None = None,
    host: PluginHost | None = None,
    steps: Sequence[StepConfig] | None = None,
    flags: bool = True,
) -> Assembly:
    """Build everything ``config`` asks for (``host`` reuses an existing plugin host).

    ``steps`` replaces the config's chain (a pinned model version); ``flags=False``
    leaves out the flag policies (offline entry points do not flag).
    """
    root = resolve_home(home or config.home)
    host = host or build_host(config, plugins_dir)
    pipeline = build_pipeline(config, host, root, steps)
    parts = Assembly(config, Path(root), host, pipeline, plugins_dir=plugins_dir, steps=steps)
    try:
        if flags:
            parts.flag_policies = _flag_policies(config, host, parts._context)
        parts.sinks = _sinks(config, host, parts._context)
    except BaseException:
        pipeline.close()
        raise
    return parts
