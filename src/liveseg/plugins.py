"""PluginHost: the one typed door to pluggy.

Built-in features are plugin modules (listed in :data:`BUILTIN_PLUGINS`), third-party
plugins come from the ``liveseg`` entry point group or from ``*.py`` files in a plugins
directory, and an allow/deny list switches any of them off by name. The rest of liveseg
calls typed methods here, never ``pm.hook.x(...)`` directly, and every call is guarded:
one plugin that raises is logged and reported; the others still run. That includes
loading (a plugin file or entry point that fails to import) and the ``register_*``
hooks: such failures never stop a host from being built; they are listed in
:attr:`PluginHost.errors` (and ``liveseg plugins`` prints them).

The protocols of the objects plugins register live in :mod:`liveseg.plugin_api`; the
adapters :class:`HookTrigger` and :class:`HookFlagPolicy` turn ``propose_events`` and
``flag_frame`` implementations into a :class:`~liveseg.plugin_api.Trigger` and a
:class:`~liveseg.plugin_api.FlagPolicy`, so each job has one mechanism.

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
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from liveseg import hookspecs
from liveseg.builtins import BUILTIN_PLUGINS
from liveseg.errors import ModelError, PluginError
from liveseg.types import FrameStatus

if TYPE_CHECKING:
    import numpy as np

    from liveseg.config import PluginsConfig
    from liveseg.plugin_api import (
        BackendFactory,
        FlagPolicyFactory,
        ModelSource,
        SinkFactory,
        Trainer,
        TriggerFactory,
        TriggerState,
    )
    from liveseg.types import Flag, Frame, FrameResult, Proposal

__all__ = [
    "BUILTIN_PLUGINS",
    "ErrorHandler",
    "HookFlagPolicy",
    "HookTrigger",
    "PluginFailure",
    "PluginHost",
    "PluginInfo",
    "RegisteredModel",
    "ShippedModels",
    "iter_hookspecs",
    "shipped_models",
]

log = logging.getLogger("liveseg.plugins")

ErrorHandler = Callable[[str, str, BaseException, "int | None"], None]
"""``handler(plugin, hook, exception, frame_index)``: told about every guarded failure.

``hook`` is the hook's name, or ``"import"`` for a plugin that failed to load."""

_REGISTRIES = ("backends", "triggers", "sinks", "flag_policies", "trainers", "models")
_SINGULAR = {
    "backends": "backend",
    "triggers": "trigger",
    "sinks": "sink",
    "flag_policies": "flag policy",
    "trainers": "trainer",
    "models": "model",
}


@dataclass
class PluginInfo:
    """What ``liveseg plugins`` shows for one loaded plugin."""

    name: str
    source: str  # builtin | entrypoint | dir | api
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class PluginFailure:
    """One plugin that failed to load or raised in a ``register_*`` hook.

    ``hook`` is ``"import"`` when the plugin could not be loaded at all (``where`` then
    names the file or entry point); ``error`` is ``"ExceptionType: message"`` on one line.
    """

    plugin: str
    hook: str
    error: str
    where: str = ""

    def line(self) -> str:
        """One line for a terminal: who failed, where, and why."""
        where = f" ({self.where})" if self.where else ""
        if self.hook == "import":
            return (
                f"plugin {self.plugin!r}{where} failed to import: {self.error} "
                f"(fix or uninstall it, or deny it: plugins.deny: [{self.plugin}])"
            )
        return f"plugin {self.plugin!r}{where} raised in {self.hook}: {self.error}"


@dataclass(frozen=True)
class RegisteredModel:
    """A model a plugin ships (``register_models``): a directory or a loader for one."""

    name: str
    plugin: str
    source: str | os.PathLike[str] | ModelSource
    description: str = ""

    @property
    def is_loader(self) -> bool:
        """True when the plugin registered a callable (called on first use only)."""
        return callable(self.source)

    def directory(self) -> Path:
        """The model directory (weights + ``model.json``), calling the loader if needed.

        Raises
        ------
        ModelError
            When the loader raises or the directory holds no ``model.json``.
        """
        try:
            raw = self.source() if callable(self.source) else self.source
            path = Path(os.fspath(raw))
        except Exception as exc:
            raise ModelError(
                f"model {self.name!r} shipped by plugin {self.plugin!r} failed to load: "
                f"{_one_line(exc)}"
            ) from exc
        if not (path / "model.json").is_file():
            raise ModelError(
                f"model {self.name!r} shipped by plugin {self.plugin!r} points at {path}, "
                f"which holds no model.json"
            )
        return path

    def backend(self) -> str:
        """The backend named by the model card, without calling a loader ('' if unknown)."""
        if self.is_loader:
            return ""
        import json

        card = Path(os.fspath(self.source)) / "model.json"  # type: ignore[arg-type]
        try:
            return str(json.loads(card.read_text(encoding="utf-8")).get("backend", ""))
        except (OSError, ValueError):
            return ""


class ShippedModels(Mapping[str, Path]):
    """Name → model directory of every shipped model; loaders run on first access only."""

    def __init__(self, models: Mapping[str, RegisteredModel]) -> None:
        self._models = dict(models)
        self._dirs: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._dirs:
            self._dirs[name] = self._models[name].directory()
        return self._dirs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._models  # without calling a loader (Mapping's default would)

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def entries(self) -> dict[str, RegisteredModel]:
        """The registrations behind the names (plugin, description, source)."""
        return dict(self._models)


@dataclass
class _Registered:
    plugin: str
    item: Any
    description: str


def _short_name(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PluginHost:
    """A typed wrapper over one pluggy ``PluginManager`` (one per Session; no globals).

    Parameters
    ----------
    builtins, entry_points
        Register the built-in plugin modules / the installed ``liveseg`` entry points.
    plugins_dir
        A directory whose ``*.py`` files are registered as plugins (a missing directory
        is a :class:`~liveseg.errors.PluginError`: that is a typo, not a broken plugin).
    allow, deny
        Plugin names to load (``None``: all) and to skip; they apply to every source,
        the built-ins included.
    on_error
        Told about every guarded failure, from loading on (default: log it).
    """

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
        self._registries: dict[str, dict[str, _Registered]] | None = None
        self._lock = threading.RLock()
        self.errors: list[PluginFailure] = []
        """Plugins that failed to load or raised in a ``register_*`` hook, in order."""
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

    @classmethod
    def from_config(
        cls,
        plugins: PluginsConfig,
        *,
        plugins_dir: str | os.PathLike[str] | None = None,
        on_error: ErrorHandler | None = None,
        entry_points: bool = True,
    ) -> PluginHost:
        """The host a config's ``plugins:`` section asks for (allow, deny, dir).

        ``plugins_dir`` (the ``--plugins-dir`` option) wins over ``plugins.dir``. This is
        the constructor every entry point should go through, so that allow/deny are
        honoured everywhere.
        """
        return cls(
            entry_points=entry_points,
            plugins_dir=plugins_dir or plugins.dir,
            allow=plugins.allow,
            deny=plugins.deny,
            on_error=on_error,
        )

    # -- discovery --------------------------------------------------------------------
    def _enabled(self, name: str) -> bool:
        if name in self._deny:
            return False
        return self._allow is None or name in self._allow

    def _fail(self, plugin: str, hook: str, exc: BaseException, *, where: str = "") -> None:
        """Record a load or registration failure and tell ``on_error``."""
        failure = PluginFailure(plugin, hook, _one_line(exc), where)
        self.errors.append(failure)
        try:
            self.on_error(plugin, hook, exc, None)
        except Exception:
            log.exception("the plugin error handler itself raised")

    def register(
        self, plugin: object, *, name: str | None = None, source: str = "api", version: str = ""
    ) -> str:
        """Register a plugin object or module; returns the name it is known by.

        Raises
        ------
        PluginError
            When the name is taken or pluggy finds the hook implementations invalid.
        """
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
            where = f"entry point {ep.value}"
            try:
                obj = ep.load()
                version = ep.dist.version if ep.dist is not None else ""
                self.register(obj, name=ep.name, source="entrypoint", version=version)
            except Exception as exc:
                self._fail(ep.name, "import", exc, where=where)

    def load_dir(self, directory: str | os.PathLike[str]) -> list[str]:
        """Register every ``*.py`` file of ``directory`` as a plugin module.

        A file that fails to import (or holds invalid hook implementations) is recorded
        in :attr:`errors` and skipped; the other files still load.

        Raises
        ------
        PluginError
            When ``directory`` does not exist.
        """
        path = Path(directory)
        if not path.is_dir():
            raise PluginError(f"plugins directory {str(path)!r} does not exist")
        names = []
        for file in sorted(path.glob("*.py")):
            if not self._enabled(file.stem):
                continue
            try:
                names.append(self._load_file(file))
            except Exception as exc:
                self._fail(file.stem, "import", exc.__cause__ or exc, where=str(file))
        return names

    def _load_file(self, file: Path) -> str:
        modname = f"liveseg_dirplugin_{file.stem}"
        spec = importlib.util.spec_from_file_location(modname, file)
        if spec is None or spec.loader is None:
            raise PluginError(f"cannot import plugin file {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
            return self.register(module, name=file.stem, source="dir")
        except BaseException:
            sys.modules.pop(modname, None)
            raise

    # -- registries (register_* hooks) ------------------------------------------------
    def _collect(self) -> dict[str, dict[str, _Registered]]:
        """Call every ``register_*`` hook once (guarded) and cache what they registered."""
        with self._lock:  # worker threads may ask first; every hook still runs once
            if self._registries is None:
                self._registries = self._collect_all()
            return self._registries

    def _collect_all(self) -> dict[str, dict[str, _Registered]]:
        regs: dict[str, dict[str, _Registered]] = {k: {} for k in _REGISTRIES}
        for kind in _REGISTRIES:
            hook_name = f"register_{kind}"
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                self._collect_one(kind, hook_name, impl, regs[kind])
        for info in self._info.values():
            info.provides = {
                kind: sorted(n for n, r in regs[kind].items() if r.plugin == info.name)
                for kind in _REGISTRIES
            }
        return regs

    def _collect_one(
        self, kind: str, hook_name: str, impl: pluggy.HookImpl, into: dict[str, _Registered]
    ) -> None:
        """One plugin's ``register_<kind>``: all of it, or (when it raises) none of it."""
        plugin = impl.plugin_name
        staged: list[tuple[str, _Registered]] = []

        def register(name: str, item: Any, description: str = "") -> None:
            if kind == "models":
                if not (callable(item) or isinstance(item, str | os.PathLike)):
                    raise TypeError(
                        f"register({name!r}, ...) needs a model directory or a loader, "
                        f"got {type(item).__name__}"
                    )
            elif not callable(item):
                raise TypeError(
                    f"register({name!r}, ...) needs a factory (a callable), "
                    f"got {type(item).__name__}"
                )
            staged.append((str(name), _Registered(plugin, item, str(description))))

        try:
            impl.function(**dict.fromkeys(impl.argnames, register))
        except Exception as exc:
            self._fail(plugin, hook_name, exc)
            return
        for name, reg in staged:
            if name in into:
                other = into[name].plugin
                self._fail(
                    plugin,
                    hook_name,
                    PluginError(
                        f"{_SINGULAR[kind]} {name!r} registered twice (by {other!r} and "
                        f"{plugin!r}); keeping {other!r}'s"
                    ),
                )
                continue
            into[name] = reg
        if self._trace:
            log.info("hook: %s [%s] -> %s", hook_name, plugin, [n for n, _ in staged])

    def _items(self, kind: str) -> dict[str, Any]:
        return {n: r.item for n, r in self._collect()[kind].items()}

    def backends(self) -> dict[str, BackendFactory]:
        """Backend factories by name (:class:`liveseg.plugin_api.BackendFactory`)."""
        return self._items("backends")

    def backend_plugin(self, backend: str) -> str:
        """The plugin that registered ``backend`` (empty if unknown)."""
        entry = self._collect()["backends"].get(backend)
        return entry.plugin if entry else ""

    def triggers(self) -> dict[str, TriggerFactory]:
        """Trigger factories by name (:class:`liveseg.plugin_api.TriggerFactory`)."""
        return self._items("triggers")

    def sinks(self) -> dict[str, SinkFactory]:
        """Sink factories by name (:class:`liveseg.plugin_api.SinkFactory`)."""
        return self._items("sinks")

    def flag_policies(self) -> dict[str, FlagPolicyFactory]:
        """Flag policy factories by name (:class:`liveseg.plugin_api.FlagPolicyFactory`)."""
        return self._items("flag_policies")

    def trainers(self) -> dict[str, Trainer]:
        """Fine-tuning functions by backend name (:class:`liveseg.plugin_api.Trainer`)."""
        return self._items("trainers")

    def models(self) -> dict[str, RegisteredModel]:
        """Models the plugins ship (``register_models``), by name; no loader is called."""
        return {
            n: RegisteredModel(n, r.plugin, r.item, r.description)
            for n, r in self._collect()["models"].items()
        }

    # -- the adapters that make propose_events / flag_frame thin -----------------------
    def hook_triggers(self) -> list[tuple[str, HookTrigger]]:
        """``(plugin, trigger)`` for every plugin implementing ``propose_events``.

        Append these to the configured triggers of a live run: each calls only its own
        plugin's implementation, so a proposal's source and an error's plugin are exact.
        """
        return [(p, HookTrigger(self, p)) for p in self._implementers("propose_events")]

    def hook_flag_policies(self) -> list[tuple[str, HookFlagPolicy]]:
        """``(plugin, policy)`` for every plugin implementing ``flag_frame``."""
        return [(p, HookFlagPolicy(self, p)) for p in self._implementers("flag_frame")]

    def _implementers(self, hook_name: str) -> list[str]:
        impls = reversed(getattr(self.pm.hook, hook_name).get_hookimpls())
        return [impl.plugin_name for impl in impls]

    def plugins(self) -> list[PluginInfo]:
        """Every loaded plugin, in registration order."""
        self._collect()
        return list(self._info.values())

    # -- guarded hook calls -----------------------------------------------------------
    def _guarded(
        self, hook_name: str, frame_index: int | None, only: str | None = None, **kwargs: Any
    ) -> list[Any]:
        """Call every implementation of ``hook_name`` (or only plugin ``only``'s), guarded."""
        results = []
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            if only is not None and impl.plugin_name != only:
                continue
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
        self,
        frame: Frame,
        result: FrameResult,
        history: Sequence[Proposal],
        *,
        plugin: str | None = None,
    ) -> list[Proposal]:
        """All proposals from every ``propose_events`` implementation (or ``plugin``'s)."""
        out: list[Proposal] = []
        for _, props in self._guarded(
            "propose_events", frame.index, plugin, frame=frame, result=result, history=history
        ):
            out.extend(props)
        return out

    def flag_frame(
        self, frame: Frame, result: FrameResult, *, plugin: str | None = None
    ) -> list[tuple[str, str]]:
        """``(plugin, reason)`` for every implementation that wants this frame flagged."""
        return [
            (p, str(r))
            for p, r in self._guarded(
                "flag_frame", frame.index, plugin, frame=frame, result=result
            )
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


class HookTrigger:
    """A :class:`~liveseg.plugin_api.Trigger` that asks one plugin's ``propose_events``.

    This is what makes ``propose_events`` a thin adapter onto ``register_triggers``: the
    live run appends :meth:`PluginHost.hook_triggers` to its configured triggers, so the
    hook's proposals pass through the same selection and are recorded the same way. It
    asks only for frames segmented ``ok`` and never raises (the host guards the call and
    reports an error through ``on_error``).
    """

    gates = False

    def __init__(self, host: PluginHost, plugin: str) -> None:
        self.host = host
        self.plugin = plugin

    def propose(
        self,
        frame: Frame,
        result: FrameResult,
        objects: Mapping[str, np.ndarray],
        state: TriggerState,
    ) -> list[Proposal] | None:
        """The plugin's proposals for one segmented frame (``None`` for other statuses)."""
        if result.status is not FrameStatus.OK:
            return None
        history = tuple(state.accepted)
        return self.host.propose_events(frame, result, history, plugin=self.plugin)

    def __repr__(self) -> str:
        return f"HookTrigger(plugin={self.plugin!r})"


class HookFlagPolicy:
    """A :class:`~liveseg.plugin_api.FlagPolicy` that asks one plugin's ``flag_frame``.

    The live run appends :meth:`PluginHost.hook_flag_policies` to its configured
    policies; the flag's source is the plugin's name. Never raises (the host guards it).
    """

    def __init__(self, host: PluginHost, plugin: str) -> None:
        self.host = host
        self.plugin = plugin

    def check(self, frame: Frame, result: FrameResult) -> str | None:
        """The plugin's reason to flag ``frame``, or ``None``."""
        reasons = self.host.flag_frame(frame, result, plugin=self.plugin)
        return "; ".join(r for _, r in reasons) or None

    def __repr__(self) -> str:
        return f"HookFlagPolicy(plugin={self.plugin!r})"


def shipped_models(host: PluginHost | None = None) -> ShippedModels:
    """Every model the plugins of ``host`` ship (``register_models``), name → directory.

    Without a host, the default discovery is used (built-ins and installed entry points;
    no plugins directory, no allow/deny): what a model spec can name anywhere. Loaders
    run only when a model's directory is looked up.
    """
    return ShippedModels((host if host is not None else PluginHost()).models())


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
    if hook == "import":
        log.error("plugin %r failed to import: %s", plugin, _one_line(exc))
    elif frame_index is None:
        log.error("plugin %r raised in %s: %s", plugin, hook, _one_line(exc))
    else:
        log.error("plugin %r raised in %s (frame %d): %r", plugin, hook, frame_index, exc)


def iter_hookspecs() -> Iterable[tuple[str, Callable[..., Any]]]:
    """Every hookspec function by name (used by the docs test and ``liveseg plugins``)."""
    for name in dir(hookspecs):
        obj = getattr(hookspecs, name)
        if callable(obj) and hasattr(obj, f"{hookspecs.PROJECT_NAME}_spec"):
            yield name, obj
