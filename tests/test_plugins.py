"""The plugin contract as a plugin author meets it: files in a plugins dir, the CLI."""

import inspect
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from liveseg import plugin_api
from liveseg.config import PluginsConfig
from liveseg.defaults import default_steps
from liveseg.errors import ModelError, PluginError
from liveseg.hookspecs import hookimpl
from liveseg.plugins import PluginHost, iter_hookspecs, shipped_models
from liveseg.testing import classical_config, register_fake_backend, run_liveseg
from liveseg.types import Frame, FrameResult, FrameStatus, Proposal

README = Path(__file__).parents[1] / "README.md"
REGISTER_HOOKS = [
    "register_backends",
    "register_triggers",
    "register_sinks",
    "register_flag_policies",
    "register_trainers",
    "register_models",
]

RAISER = """
from liveseg import hookimpl

def _boom(register):
    register("half_registered", lambda params, context: None)
    raise RuntimeError("boom")

""" + "\n".join(f"{h} = hookimpl(_boom)" for h in REGISTER_HOOKS)
# pluggy takes the hook name from the attribute name, so one function serves all six


def _registers(hook: str, name: str, factory: str) -> str:
    """A one-hook plugin file: ``hook`` registers ``name`` → ``factory``."""
    return (
        "from liveseg import hookimpl\n"
        f"@hookimpl\ndef {hook}(register):\n    register({name!r}, {factory})\n"
    )


def _write(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def _frame(index: int = 0, shape=(8, 8)) -> tuple[Frame, FrameResult]:
    labels = np.zeros(shape, np.uint32)
    labels[2:4, 2:4] = 1
    return Frame(index, np.zeros(shape, np.uint16)), FrameResult(labels)


# -- discovery ------------------------------------------------------------------------
def test_builtins_are_plugins_and_can_be_denied():
    host = PluginHost(entry_points=False)
    assert {"normalize", "threshold", "size_filter"} <= set(host.backends())
    assert {p.source for p in host.plugins()} == {"builtin"}
    denied = PluginHost(entry_points=False, deny=["threshold"])
    assert "threshold" not in denied.backends()
    allowed = PluginHost(entry_points=False, allow=["normalize"])
    assert set(allowed.backends()) == {"normalize"}


def test_from_config_honours_allow_deny_and_dir(tmp_path):
    _write(
        tmp_path,
        "mine",
        _registers("register_sinks", "s", "dict"),
    )
    _write(
        tmp_path,
        "other",
        _registers("register_sinks", "o", "dict"),
    )
    cfg = PluginsConfig(deny=["threshold", "other"], dir=str(tmp_path))
    host = PluginHost.from_config(cfg, entry_points=False)
    assert "threshold" not in host.backends() and "normalize" in host.backends()
    assert set(host.sinks()) == {"s"}
    allowed = PluginHost.from_config(PluginsConfig(allow=["other"], dir=str(tmp_path)))
    assert set(allowed.sinks()) == {"o"} and allowed.backends() == {}


def test_plugins_dir_loads_py_files(tmp_path):
    _write(
        tmp_path,
        "myplug",
        """
        from liveseg import hookimpl
        __version__ = '9.9'
        @hookimpl
        def register_backends(register):
            register('mine', object)
        """,
    )
    host = PluginHost(entry_points=False, plugins_dir=tmp_path)
    assert "mine" in host.backends()
    info = {p.name: p for p in host.plugins()}["myplug"]
    assert info.source == "dir" and info.version == "9.9"
    assert info.provides["backends"] == ["mine"]


def test_broken_plugin_file_is_recorded_and_the_others_still_load(tmp_path):
    _write(tmp_path, "broken", "import does_not_exist\n")
    _write(tmp_path, "syntax", "def oops(:\n")
    _write(
        tmp_path,
        "fine",
        _registers("register_backends", "fine", "object"),
    )
    seen = []
    host = PluginHost(
        entry_points=False, plugins_dir=tmp_path, on_error=lambda *a: seen.append(a[:2])
    )
    assert "fine" in host.backends()
    failed = {f.plugin: f for f in host.errors}
    assert set(failed) == {"broken", "syntax"}
    assert failed["broken"].hook == "import"
    assert "broken.py" in failed["broken"].line()
    assert "does_not_exist" in failed["broken"].line()
    assert "SyntaxError" in failed["syntax"].error
    assert ("broken", "import") in seen and ("syntax", "import") in seen


def test_plugin_with_invalid_hookimpl_is_recorded(tmp_path):
    _write(
        tmp_path,
        "wrongargs",
        """
        from liveseg import hookimpl
        @hookimpl
        def measure_frame(frame, result, nonsense):
            return None
        """,
    )
    host = PluginHost(entry_points=False, plugins_dir=tmp_path)
    assert [f.plugin for f in host.errors] == ["wrongargs"]
    assert "nonsense" in host.errors[0].error
    assert "wrongargs" not in {p.name for p in host.plugins()}


def test_missing_plugins_dir_is_a_clear_error(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        PluginHost(entry_points=False, plugins_dir=tmp_path / "nope")


def test_entry_point_plugins_are_found():
    host = PluginHost()
    sources = {p.name: p.source for p in host.plugins()}
    # the first-party plugins are installed by `make test`
    assert sources.get("torch") == "entrypoint" or sources.get("cellpose") == "entrypoint"


# -- register_* hooks are guarded -----------------------------------------------------
@pytest.mark.parametrize("hook", REGISTER_HOOKS)
def test_plugin_raising_in_a_register_hook_is_recorded_and_contributes_nothing(tmp_path, hook):
    _write(
        tmp_path,
        "raiser",
        f"""
        from liveseg import hookimpl
        @hookimpl
        def {hook}(register):
            register("half_registered", lambda *a: None)
            raise RuntimeError("boom")
        """,
    )
    seen = []
    host = PluginHost(entry_points=False, plugins_dir=tmp_path, on_error=lambda *a: seen.append(a))
    kind = hook.removeprefix("register_")
    registered = getattr(host, kind)()
    assert "half_registered" not in registered
    assert "threshold" in host.backends()  # the other plugins still registered
    assert [(f.plugin, f.hook) for f in host.errors] == [("raiser", hook)]
    assert "RuntimeError: boom" in host.errors[0].line()
    assert seen[0][0] == "raiser" and seen[0][1] == hook and seen[0][3] is None
    assert {p.name: p for p in host.plugins()}["raiser"].provides[kind] == []


def test_name_registered_twice_keeps_the_first_and_names_both(liveseg_host):
    class Dup:
        @hookimpl
        def register_backends(self, register):
            register("threshold", object)
            register("mine_too", object)

    liveseg_host.register(Dup(), name="dup")
    backends = liveseg_host.backends()
    assert backends["threshold"] is not object and backends["mine_too"] is object
    (failure,) = liveseg_host.errors
    assert failure.plugin == "dup"
    assert "'threshold' registered twice" in failure.error
    assert "'threshold' and 'dup'" in failure.error


def test_register_with_a_non_callable_factory_is_recorded(liveseg_host):
    class Bad:
        @hookimpl
        def register_sinks(self, register):
            register("nope", 42)

    liveseg_host.register(Bad(), name="bad")
    assert liveseg_host.sinks() == {}
    assert "needs a factory" in liveseg_host.errors[0].error


def test_cli_plugins_lists_every_failure_as_one_line(tmp_path):
    _write(tmp_path, "raiser", RAISER)
    _write(tmp_path, "broken", "import does_not_exist\n")
    out = run_liveseg("plugins", "--plugins-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    errors = [line for line in out.stdout.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(REGISTER_HOOKS) + 1
    for hook in REGISTER_HOOKS:
        assert any("'raiser'" in e and f"raised in {hook}" in e for e in errors), hook
    assert any("'broken'" in e and "broken.py" in e and "failed to import" in e for e in errors)
    assert "threshold" in out.stdout  # the listing itself is complete

    js = run_liveseg("plugins", "--plugins-dir", str(tmp_path), "--json")
    rows = {r["name"]: r for r in json.loads(js.stdout)}
    assert len(rows["raiser"]["errors"]) == len(REGISTER_HOOKS)
    assert rows["broken"]["source"] == "error" and rows["broken"]["errors"]
    assert rows["threshold"]["errors"] == []


def test_cli_plugins_reports_an_installed_plugin_that_fails_to_import(tmp_path):
    site = tmp_path / "site"
    dist = site / "brokenplug-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[liveseg]\nbrokenplug = brokenplug_missing.plugin\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    out = run_liveseg("plugins", env=env)
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("error: ")]
    assert "'brokenplug'" in line and "brokenplug_missing.plugin" in line
    assert "ModuleNotFoundError" in line


@pytest.mark.hardware
@pytest.mark.slow
def test_cli_run_completes_with_a_plugin_raising_in_every_register_hook(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _write(plugins, "raiser", RAISER)
    data = classical_config(plugins={"dir": str(plugins), "deny": ["torch", "cellpose"]})
    cfg = data.model_dump(mode="json")
    cfg["home"] = str(tmp_path / "home")
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    out = run_liveseg("run", str(tmp_path / "c.yaml"), "--output", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "frames segmented" in out.stdout
    assert "Traceback" not in out.stderr
    for hook in ("register_backends", "register_flag_policies"):
        assert f"plugin 'raiser' raised in {hook}" in out.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "finished"


# -- guarded per-frame hooks and tracing ----------------------------------------------
def test_raising_hook_is_reported_and_others_still_run():
    errors = []
    host = PluginHost(entry_points=False, on_error=lambda *a: errors.append(a))

    class Bad:
        @hookimpl
        def measure_frame(self, frame, result):
            raise ValueError("boom")

    class Good:
        @hookimpl
        def measure_frame(self, frame, result):
            return {"extra": [1.0]}

    host.register(Bad(), name="bad")
    host.register(Good(), name="good")
    cols = host.measure_frame(Frame(5, np.zeros((4, 4))), FrameResult(np.zeros((4, 4), np.uint32)))
    assert cols == {"extra": [1.0]}
    assert errors and errors[0][0] == "bad" and errors[0][1] == "measure_frame"
    assert errors[0][3] == 5


def test_hook_tracing_switch_logs_calls(monkeypatch, caplog):
    import logging

    monkeypatch.setenv("LIVESEG_TRACE_HOOKS", "1")
    host = PluginHost(entry_points=False)

    class Listener:
        @hookimpl
        def frame_processed(self, frame, result):
            return None

    host.register(Listener(), name="listener")
    with caplog.at_level(logging.INFO, logger="liveseg.plugins"):
        host.frame_processed(Frame(7, np.zeros((2, 2))), FrameResult(np.zeros((2, 2), np.uint32)))
        host.backends()
    traced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hook:")]
    assert any("frame_processed [listener] frame=7" in m for m in traced)
    assert any("register_backends [threshold] -> ['threshold']" in m for m in traced)


# -- one mechanism per job: the adapters ------------------------------------------------
def test_propose_events_and_flag_frame_are_adapted_per_plugin(liveseg_host):
    import useq

    errors = []
    liveseg_host.on_error = lambda *a: errors.append(a)

    class Proposer:
        @hookimpl
        def propose_events(self, frame, result, history):
            return [Proposal(useq.MDAEvent(), "proposer", frame.index, reason=str(len(history)))]

        @hookimpl
        def flag_frame(self, frame, result):
            return "always"

    class Raiser:
        @hookimpl
        def propose_events(self, frame, result, history):
            raise RuntimeError("nope")

    liveseg_host.register(Proposer(), name="proposer")
    liveseg_host.register(Raiser(), name="raiser")
    triggers = dict(liveseg_host.hook_triggers())
    assert set(triggers) == {"proposer", "raiser"}
    for trig in triggers.values():
        assert isinstance(trig, plugin_api.Trigger)
    frame, result = _frame(3)
    state = plugin_api.TriggerState(accepted=[])
    (prop,) = triggers["proposer"].propose(frame, result, {}, state)
    assert prop.source == "proposer" and prop.reason == "0"
    assert triggers["raiser"].propose(frame, result, {}, state) == []
    assert errors[-1][:2] == ("raiser", "propose_events") and errors[-1][3] == 3
    skipped = result.replace(status=FrameStatus.SKIPPED)
    assert triggers["proposer"].propose(frame, skipped, {}, state) is None

    ((name, policy),) = liveseg_host.hook_flag_policies()
    assert name == "proposer" and isinstance(policy, plugin_api.FlagPolicy)
    assert policy.check(frame, result) == "always"


# -- register_models ---------------------------------------------------------------------
def _model_dir(root: Path, backend: str) -> Path:
    root.mkdir(parents=True)
    (root / "weights.pt").write_bytes(b"not really weights")
    (root / "model.json").write_text(json.dumps({"backend": backend, "weights": "weights.pt"}))
    return root


def test_register_models_paths_and_lazy_loaders(tmp_path):
    model = _model_dir(tmp_path / "m", backend="mine")
    calls = tmp_path / "loader-calls.txt"
    plugin = f"""
        from pathlib import Path
        from liveseg import hookimpl

        def _load():
            with open({str(calls)!r}, "a") as fh:
                fh.write("called\\n")
            return {str(model)!r}

        def _bad():
            raise OSError("download failed")

        @hookimpl
        def register_models(register):
            register("default", {str(model)!r}, "a test model")
            register("lazy", _load, "fetched on first use")
            register("bad", _bad)

        @hookimpl
        def register_backends(register):
            register("mine", lambda params, context: None)
        """
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _write(plugins, "shipper", plugin)
    host = PluginHost(entry_points=False, plugins_dir=plugins)
    models = host.models()
    assert set(models) == {"default", "lazy", "bad"}
    assert models["default"].description == "a test model" and models["lazy"].is_loader
    shipped = shipped_models(host)
    assert "lazy" in shipped and not calls.exists()  # listing never calls a loader
    assert shipped["lazy"] == model and shipped["lazy"] == model
    assert calls.read_text().splitlines() == ["called"]
    with pytest.raises(ModelError, match=r"'bad' shipped by plugin 'shipper' failed.*download"):
        shipped["bad"]
    # the core names no plugin: the plugin shipping `default` provides the default chain
    steps = default_steps(host.backends(), host.models())
    assert [s.backend for s in steps] == ["mine", "size_filter"]
    assert steps[0].params == {"model": "default"}
    without = PluginHost(entry_points=False)
    assert [s.backend for s in default_steps(without.backends(), without.models())] == [
        "normalize",
        "threshold",
        "size_filter",
    ]


def test_liveseg_torch_ships_the_default_model_through_the_hook():
    host = PluginHost(allow=["torch"])
    if "torch" not in {p.name for p in host.plugins()}:
        pytest.skip("liveseg-torch is not installed")
    entry = host.models()["default"]
    assert entry.plugin == "torch" and "nuclei" in entry.description
    assert entry.backend() == "unet"
    assert (entry.directory() / "model.json").is_file()


def test_core_names_none_of_its_plugins():
    src = Path(__file__).parents[1] / "src" / "liveseg"
    offenders = []
    for path in src.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"liveseg_torch|liveseg_cellpose", line):
                offenders.append(f"{path.relative_to(src)}:{n}: {line.strip()}")
    assert offenders == []


# -- the documentation test (datasette's test_docs.py) ---------------------------------
def test_every_hookspec_and_signature_is_documented_in_readme():
    text = README.read_text()
    specs = list(iter_hookspecs())
    assert len(specs) >= 13
    for name, fn in specs:
        params = ", ".join(inspect.signature(fn).parameters)
        pattern = re.escape(f"{name}({params})")
        assert re.search(pattern, text), f"README does not document hook {name}({params})"
        assert fn.__doc__ and len(fn.__doc__) > 40, f"hookspec {name} has no real docstring"


def _protocols():
    for name, obj in vars(plugin_api).items():
        if (
            inspect.isclass(obj)
            and getattr(obj, "_is_protocol", False)
            and obj.__module__ == plugin_api.__name__
        ):
            yield name, obj


def test_every_protocol_and_its_methods_are_documented_in_readme():
    text = README.read_text()
    protocols = dict(_protocols())
    assert {"Backend", "Trigger", "FlagPolicy", "Trainer", "Sink", "ModelSource"} <= set(protocols)
    for name, proto in protocols.items():
        assert f"`{name}`" in text, f"README does not document protocol {name}"
        assert proto.__doc__ and len(proto.__doc__) > 40, f"{name} has no real docstring"
        for meth in ("segment", "close", "propose", "check", "setup", "frame", "finish"):
            fn = proto.__dict__.get(meth)
            if fn is None:
                continue
            params = [p for p in inspect.signature(fn).parameters if p != "self"]
            sig = f"{meth}({', '.join(params)})"
            assert sig in text, f"README does not document {name}.{sig}"


def test_disagreement_policy_builds_its_second_backend_from_the_runs_host(
    liveseg_host, tmp_path, disk_frame
):
    from liveseg.pipeline import StepContext, validate_params

    frame, truth = disk_frame()
    fake = register_fake_backend(liveseg_host, name="second_opinion", labels=truth)
    factory = liveseg_host.flag_policies()["disagreement"]
    params = validate_params(
        "disagreement", "disagreement", factory, {"backend": "second_opinion"}
    )
    ctx = StepContext(home=tmp_path, backends=liveseg_host.backends())
    policy = factory(params, ctx)
    assert policy.check(frame, FrameResult(truth)) is None  # full agreement
    assert fake.calls == [frame.index]
    assert "disagreement" in policy.check(frame, FrameResult(np.zeros_like(truth)))


@pytest.mark.parametrize(
    ("kind", "protocol", "context"),
    [
        ("backends", plugin_api.Backend, "step"),
        ("flag_policies", plugin_api.FlagPolicy, "step"),
        ("triggers", plugin_api.Trigger, "trigger"),
    ],
)
def test_every_builtin_extension_satisfies_its_protocol(
    liveseg_host, tmp_path, kind, protocol, context
):
    from liveseg.pipeline import validate_params

    required = {  # the built-ins whose params have no defaults
        "adaptive_interval": {"condition": "count >= 10", "fast_interval_s": 1.0},
        "stop_when": {"condition": "objects_total >= 500"},
        "when": {"condition": "class_fraction.pore > 0.3"},
        "pixel_classifier": {"model": "pores"},
    }
    factories = getattr(liveseg_host, kind)()
    assert factories
    for name, factory in factories.items():
        params = validate_params(name, name, factory, required.get(name, {}))
        if context == "step":
            ctx = plugin_api.StepContext(home=tmp_path, backends=liveseg_host.backends())
        else:
            ctx = plugin_api.TriggerContext(name=name)
        obj = factory(params, ctx)
        assert isinstance(obj, protocol), f"{kind} {name!r} is not a {protocol.__name__}"


def test_cli_plugins_lists_what_a_config_loads(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _write(plugins, "mine", _registers("register_sinks", "mysink", "dict"))
    cfg = classical_config(plugins={"deny": ["threshold"], "dir": str(plugins)})
    (tmp_path / "c.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))
    out = run_liveseg("plugins", "--config", str(tmp_path / "c.yaml"), "--json")
    assert out.returncode == 0, out.stderr
    names = {r["name"]: r for r in json.loads(out.stdout)}
    assert "threshold" not in names and "normalize" in names
    assert names["mine"]["provides"]["sinks"] == ["mysink"]


def test_discovering_every_installed_plugin_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from liveseg.plugins import PluginHost\n"
        "from liveseg.defaults import default_steps\n"
        "host = PluginHost()\n"
        "host.plugins(); default_steps(host.backends(), host.models())\n"
        "heavy = sorted(m for m in ('torch', 'cellpose', 'qtpy', 'PySide6') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
