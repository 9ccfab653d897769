"""PluginHost: the one typed door to pluggy.

Built-in features are plugin modules (listed in :data:`BUILTIN_PLUGINS`), third-party
plugins come from the ``liveseg`` entry point group or from ``*.py`` files in a plugins
directory, and an allow/deny list switches any of them off by name. The rest of liveseg
calls typed methods here, never ``pm.hook.x(...)`` directly, and every call is guarded:
one plugin that raises is logged and reported; the others still run.

Set ``LIVESEG_TRACE_HOOKS=1`` to log every hook call and its result.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from liveseg import hookspecs
from liveseg.errors import PluginError

if TYPE_CHECKING:
    import numpy as np

    from liveseg.types import Flag, Frame, FrameResult, Proposal

__all__ = ["BUILTIN_PLUGINS", "ErrorHandler", "PluginHost", "PluginInfo"]

log = logging.getLogger("liveseg.plugins")

BUILTIN_PLUGINS: tuple[str, ...] = (
    "liveseg.builtins.normalize",
    "liveseg.builtins.threshold",
    "liveseg.builtins.size_filter",
    "liveseg.builtins.triggers",
    "liveseg.builtins.flags",
    "liveseg.builtins.kmeans",
    "liveseg.builtins.pixel_classifier",
    "liveseg.builtins.classes",
)
"""Built-in plugin modules, registered first; each can be denied by its short name."""

ErrorHandler = Callable[[str, str, BaseException, "int | None"], None]
"""``handler(plugin, hook, exception, frame_index)``: told about every guarded failure."""

_REGISTRIES = ("backends", "triggers", "sinks", "flag_policies", "trainers")


@dataclass
class PluginInfo:
    """What ``liveseg plugins`` shows for one loaded plugin."""

    name: str
    source: str  # builtin | entrypoint | dir
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=dict)


def _short_name(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1]


class PluginHost:
    """A typed wrapper over one pluggy ``PluginManager`` (one per Session; no globals)."""

    def __init__(
        self,
        *,
        builtins: bool = True,
        entry_points: bool = True,
        plugins_dir: str | os.PathLike[str] | None = None,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] = (),
        on_error: ErrorHandler | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._allow = set(allow) if allow is not None else None
        self._deny = set(deny)
        self._info: dict[str, PluginInfo] = {}
        self._registries: dict[str, dict[str, tuple[str, Callable[..., Any]]]] | None = None
        self.on_error: ErrorHandler = on_error or _log_error
        self._trace = bool(os.environ.get("LIVESEG_TRACE_HOOKS"))
        if self._trace:
            self.pm.trace.root.setwriter(lambda msg: log.info("hook: %s", msg.rstrip()))
            self.pm.enable_tracing()
        if builtins:
            for modname in BUILTIN_PLUGINS:
                if self._enabled(_short_name(modname)):
                    self.register(importlib.import_module(modname), source="builtin")
        if entry_points:
            self._load_entry_points()
        if plugins_dir is not None:
            self.load_dir(plugins_dir)

    # -- discovery --------------------------------------------------------------------
    def _enabled(self, name: str) -> bool:
        if name in self._deny:
            return False
        return self._allow is None or name in self._allow

    def register(
        self, plugin: object, *, name: str | None = None, source: str = "api", version: str = ""
    ) -> str:
        """Register a plugin object or module; returns the name it is known by."""
        if isinstance(plugin, ModuleType):
            modname = plugin.__name__
        else:
            modname = type(plugin).__module__
        pname = name or (
            _short_name(plugin.__name__)
            if isinstance(plugin, ModuleType)
            else type(plugin).__name__
        )
        if self.pm.has_plugin(pname):
            raise PluginError(f"a plugin named {pname!r} is already registered")
        try:
            self.pm.register(plugin, name=pname)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {pname!r} ({modname}) is invalid: {exc}") from exc
        version = version or str(getattr(plugin, "__version__", "")) or _dist_version(modname)
        hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        self._info[pname] = PluginInfo(pname, source, version, modname, hooks)
        self._registries = None
        return pname

    def unregister(self, name: str) -> None:
        """Remove a plugin by name (tests use this to swap behaviour)."""
        self.pm.unregister(name=name)
        self._info.pop(name, None)
        self._registries = None

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT_NAME):
            if not self._enabled(ep.name) or self.pm.has_plugin(ep.name):
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} (entry point {ep.value}) failed to import: {exc!r}. "
                    f"Fix or uninstall it, or deny it in the config (plugins.deny: [{ep.name}])."
                ) from exc
            version = ep.dist.version if ep.dist is not None else ""
            self.register(obj, name=ep.name, source="entrypoint", version=version)

    def load_dir(self, directory: str | os.PathLike[str]) -> list[str]:
        """Register every ``*.py`` file of ``directory`` as a plugin module."""
        path = Path(directory)
        if not path.is_dir():
            raise PluginError(f"plugins directory {str(path)!r} does not exist")
        names = []
        for file in sorted(path.glob("*.py")):
            if not self._enabled(file.stem):
                continue
            modname = f"liveseg_dirplugin_{file.stem}"
            spec = importlib.util.spec_from_file_location(modname, file)
            if spec is None or spec.loader is None:
                raise PluginError(f"cannot import plugin file {file}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[modname] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(modname, None)
                raise PluginError(f"plugin file {file} failed to import: {exc!r}") from exc
            names.append(self.register(module, name=file.stem, source="dir"))
        return names

    # -- registries (register_* hooks) ------------------------------------------------
    def _collect(self) -> dict[str, dict[str, tuple[str, Callable[..., Any]]]]:
        if self._registries is not None:
            return self._registries
        regs: dict[str, dict[str, tuple[str, Callable[..., Any]]]] = {k: {} for k in _REGISTRIES}
        for kind in _REGISTRIES:
            hook = getattr(self.pm.hook, f"register_{kind}")
            for impl in hook.get_hookimpls():
                plugin_name = impl.plugin_name

                def register(
                    name: str,
                    factory: Callable[..., Any],
                    _kind: str = kind,
                    _plugin: str = plugin_name,
                ) -> None:
                    if name in regs[_kind]:
                        other = regs[_kind][name][0]
                        raise PluginError(
                            f"{_kind[:-1]} {name!r} registered twice "
                            f"(by {other!r} and {_plugin!r})"
                        )
                    regs[_kind][name] = (_plugin, factory)

                impl.function(register=register)
        for info in self._info.values():
            info.provides = {
                kind: sorted(n for n, (p, _) in regs[kind].items() if p == info.name)
                for kind in _REGISTRIES
            }
        self._registries = regs
        return regs

    def backends(self) -> dict[str, Callable[..., Any]]:
        """Backend factories by name."""
        return {n: f for n, (_, f) in self._collect()["backends"].items()}

    def backend_plugin(self, backend: str) -> str:
        """The plugin that registered ``backend`` (empty if unknown)."""
        entry = self._collect()["backends"].get(backend)
        return entry[0] if entry else ""

    def triggers(self) -> dict[str, Callable[..., Any]]:
        """Trigger factories by name."""
        return {n: f for n, (_, f) in self._collect()["triggers"].items()}

    def sinks(self) -> dict[str, Callable[..., Any]]:
        """Sink factories by name."""
        return {n: f for n, (_, f) in self._collect()["sinks"].items()}

    def flag_policies(self) -> dict[str, Callable[..., Any]]:
        """Flag policy factories by name."""
        return {n: f for n, (_, f) in self._collect()["flag_policies"].items()}

    def trainers(self) -> dict[str, Callable[..., Any]]:
        """Fine-tuning functions by backend name."""
        return {n: f for n, (_, f) in self._collect()["trainers"].items()}

    def plugins(self) -> list[PluginInfo]:
        """Every loaded plugin, in registration order."""
        self._collect()
        return list(self._info.values())

    # -- guarded hook calls -----------------------------------------------------------
    def _guarded(self, hook_name: str, frame_index: int | None, **kwargs: Any) -> list[Any]:
        results = []
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            try:
                res = impl.function(**{a: kwargs[a] for a in impl.argnames})
            except Exception as exc:
                self.on_error(impl.plugin_name, hook_name, exc, frame_index)
                continue
            if self._trace:
                log.info(
                    "hook: %s [%s] frame=%s -> %s", hook_name, impl.plugin_name, frame_index, res
                )
            if res is not None:
                results.append((impl.plugin_name, res))
        return results

    def measure_frame(self, frame: Frame, result: FrameResult) -> dict[str, np.ndarray]:
        """Merged per-object columns from every ``measure_frame`` implementation."""
        columns: dict[str, np.ndarray] = {}
        for plugin, cols in self._guarded(
            "measure_frame", frame.index, frame=frame, result=result
        ):
            for key, values in dict(cols).items():
                if key in columns:
                    log.debug("column %r from %r overrides an earlier one", key, plugin)
                columns[key] = values
        return columns

    def propose_events(
        self, frame: Frame, result: FrameResult, history: Sequence[Proposal]
    ) -> list[Proposal]:
        """All proposals from every ``propose_events`` implementation."""
        out: list[Proposal] = []
        for _, props in self._guarded(
            "propose_events", frame.index, frame=frame, result=result, history=history
        ):
            out.extend(props)
        return out

    def flag_frame(self, frame: Frame, result: FrameResult) -> list[tuple[str, str]]:
        """``(plugin, reason)`` for every implementation that wants this frame flagged."""
        return [
            (p, str(r))
            for p, r in self._guarded("flag_frame", frame.index, frame=frame, result=result)
        ]

    def frame_processed(self, frame: Frame, result: FrameResult) -> None:
        """Notify every plugin that ``frame`` is done."""
        self._guarded("frame_processed", frame.index, frame=frame, result=result)

    def frame_flagged(self, frame: Frame, flag: Flag) -> None:
        """Notify every plugin that ``frame`` was flagged."""
        self._guarded("frame_flagged", frame.index, frame=frame, flag=flag)

    def sequence_started(self, run_dir: str, config: Mapping[str, Any]) -> None:
        """Notify every plugin that a run starts."""
        self._guarded("sequence_started", None, run_dir=run_dir, config=config)

    def sequence_finished(self, run_dir: str, summary: Mapping[str, Any]) -> None:
        """Notify every plugin that a run finished."""
        self._guarded("sequence_finished", None, run_dir=run_dir, summary=summary)

    def versions(self) -> dict[str, str]:
        """Plugin name → version, for run.json."""
        return {i.name: i.version for i in self._info.values()}


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _dist_version(module_name: str) -> str:
    top = module_name.split(".")[0]
    if top == "liveseg":
        from liveseg import __version__

        return __version__
    try:
        dists = _packages_distributions().get(top, [])
        return importlib.metadata.version(dists[0]) if dists else ""
    except Exception:
        return ""


def _log_error(plugin: str, hook: str, exc: BaseException, frame_index: int | None) -> None:
    log.error("plugin %r raised in %s (frame %s): %r", plugin, hook, frame_index, exc)


def iter_hookspecs() -> Iterable[tuple[str, Callable[..., Any]]]:
    """Every hookspec function by name (used by the docs test and ``liveseg plugins``)."""
    for name in dir(hookspecs):
        obj = getattr(hookspecs, name)
        if callable(obj) and hasattr(obj, f"{hookspecs.PROJECT_NAME}_spec"):
            yield name, obj
