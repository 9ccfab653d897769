import inspect
import re
from pathlib import Path

import pytest

from liveseg.errors import PluginError
from liveseg.hookspecs import hookimpl
from liveseg.plugins import PluginHost, iter_hookspecs
from liveseg.types import Frame, FrameResult

README = Path(__file__).parents[1] / "README.md"


def test_builtins_are_plugins_and_can_be_denied():
    host = PluginHost(entry_points=False)
    assert {"normalize", "threshold", "size_filter"} <= set(host.backends())
    assert {p.source for p in host.plugins()} == {"builtin"}
    denied = PluginHost(entry_points=False, deny=["threshold"])
    assert "threshold" not in denied.backends()
    allowed = PluginHost(entry_points=False, allow=["normalize"])
    assert set(allowed.backends()) == {"normalize"}


def test_plugins_dir_loads_py_files(tmp_path):
    (tmp_path / "myplug.py").write_text(
        "from liveseg import hookimpl\n"
        "__version__ = '9.9'\n"
        "@hookimpl\n"
        "def register_backends(register):\n"
        "    register('mine', object)\n"
    )
    host = PluginHost(entry_points=False, plugins_dir=tmp_path)
    assert "mine" in host.backends()
    info = {p.name: p for p in host.plugins()}["myplug"]
    assert info.source == "dir" and info.version == "9.9"
    assert info.provides["backends"] == ["mine"]


def test_broken_plugin_file_gives_clear_error(tmp_path):
    (tmp_path / "broken.py").write_text("import does_not_exist\n")
    with pytest.raises(PluginError, match=r"broken\.py failed to import"):
        PluginHost(entry_points=False, plugins_dir=tmp_path)


def test_missing_plugins_dir(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        PluginHost(entry_points=False, plugins_dir=tmp_path / "nope")


def test_entry_point_plugins_are_found():
    host = PluginHost()
    sources = {p.name: p.source for p in host.plugins()}
    # the first-party plugins are installed by `make test`
    assert sources.get("torch") == "entrypoint" or sources.get("cellpose") == "entrypoint"


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
    import numpy as np

    cols = host.measure_frame(Frame(5, np.zeros((4, 4))), FrameResult(np.zeros((4, 4), np.uint32)))
    assert cols == {"extra": [1.0]}
    assert errors and errors[0][0] == "bad" and errors[0][1] == "measure_frame"
    assert errors[0][3] == 5


def test_every_hookspec_and_signature_is_documented_in_readme():
    text = README.read_text()
    specs = list(iter_hookspecs())
    assert len(specs) >= 10
    for name, fn in specs:
        params = ", ".join(inspect.signature(fn).parameters)
        pattern = re.escape(f"{name}({params})")
        assert re.search(pattern, text), f"README does not document hook {name}({params})"
        assert fn.__doc__ and len(fn.__doc__) > 40, f"hookspec {name} has no real docstring"


def test_hook_tracing_switch_logs_calls(monkeypatch, caplog):
    import logging

    import numpy as np

    monkeypatch.setenv("LIVESEG_TRACE_HOOKS", "1")
    host = PluginHost(entry_points=False)

    class Listener:
        @hookimpl
        def frame_processed(self, frame, result):
            return None

    host.register(Listener(), name="listener")
    with caplog.at_level(logging.INFO, logger="liveseg.plugins"):
        host.frame_processed(Frame(7, np.zeros((2, 2))), FrameResult(np.zeros((2, 2), np.uint32)))
    traced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hook:")]
    assert any("frame_processed [listener] frame=7" in m for m in traced)
