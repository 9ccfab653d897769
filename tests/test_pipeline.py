import numpy as np
import pytest

from liveseg.config import StepConfig
from liveseg.errors import ConfigError
from liveseg.hookspecs import hookimpl
from liveseg.pipeline import Pipeline, StepContext
from liveseg.testing import FakeBackend, register_fake_backend
from liveseg.types import Frame, FrameResult, FrameStatus


class _Tagger:
    """Appends its tag to a trace list: proves the run order."""

    def __init__(self, tag, trace):
        self.tag, self.trace = tag, trace

    def segment(self, frame, upstream):
        self.trace.append(self.tag)
        return FrameResult(labels=np.zeros(frame.shape, np.uint32))

    def close(self):
        pass


def test_chain_runs_in_config_order_not_registration_order(liveseg_host, tmp_path):
    trace = []

    class A:
        @hookimpl
        def register_backends(self, register):
            register("a", lambda p, c: _Tagger("a", trace))

    class B:
        @hookimpl
        def register_backends(self, register):
            register("b", lambda p, c: _Tagger("b", trace))

    liveseg_host.register(A(), name="A")
    liveseg_host.register(B(), name="B")
    ctx = StepContext(home=tmp_path)
    for order in (["a", "b"], ["b", "a", "b"]):
        trace.clear()
        steps = [StepConfig(backend=n) for n in order]
        pipe = Pipeline.build(steps, liveseg_host.backends(), ctx)
        pipe.run(Frame(0, np.zeros((8, 8), np.uint16)))
        assert trace == order


def test_unknown_backend_lists_available(liveseg_host, tmp_path):
    with pytest.raises(ConfigError) as exc:
        Pipeline.build(
            [StepConfig(backend="unett")], liveseg_host.backends(), StepContext(tmp_path)
        )
    assert "unknown backend 'unett'" in str(exc.value)
    available = str(exc.value).split("available backends: ")[1].split(", ")
    assert available == sorted(available)  # listed alphabetically
    assert {"normalize", "size_filter", "threshold"} <= set(available)


def test_invalid_step_parameter_names_step_field_and_allowed(liveseg_host, tmp_path):
    steps = [StepConfig(backend="threshold", name="seg", params={"method": "magic", "sigma": -1})]
    with pytest.raises(ConfigError) as exc:
        Pipeline.build(steps, liveseg_host.backends(), StepContext(tmp_path))
    msg = str(exc.value)
    assert "step 'seg'" in msg and "backend 'threshold'" in msg
    assert "method" in msg and "'otsu', 'local' or 'fixed'" in msg
    assert "sigma" in msg


def test_failing_step_gives_failed_result_not_exception(liveseg_host, tmp_path, disk_frame):
    fake = register_fake_backend(liveseg_host, fail_on={1})
    pipe = Pipeline.build(
        [StepConfig(backend="fake")], liveseg_host.backends(), StepContext(tmp_path)
    )
    frame0, _ = disk_frame(index=0)
    frame1, _ = disk_frame(index=1)
    assert pipe.run(frame0).status is FrameStatus.OK
    bad = pipe.run(frame1)
    assert bad.status is FrameStatus.FAILED
    assert "fake failure on frame 1" in bad.error
    assert bad.extra["failed_step"] == "0:fake"
    assert fake.calls == [0, 1]


def test_step_returning_wrong_labels_fails_that_frame(liveseg_host, tmp_path, disk_frame):
    register_fake_backend(liveseg_host, labels=np.zeros((3, 3), np.uint32))
    pipe = Pipeline.build(
        [StepConfig(backend="fake")], liveseg_host.backends(), StepContext(tmp_path)
    )
    frame, _ = disk_frame()
    result = pipe.run(frame)
    assert result.status is FrameStatus.FAILED
    assert "shape" in result.error


def test_duplicate_backend_name_keeps_the_first_and_records_an_error(liveseg_host):
    register_fake_backend(liveseg_host, name="threshold")
    assert liveseg_host.backend_plugin("threshold") == "threshold"  # the built-in kept it
    assert "registered twice" in liveseg_host.errors[0].error


def test_close_closes_every_backend(liveseg_host, tmp_path):
    fake = register_fake_backend(liveseg_host)
    pipe = Pipeline.build(
        [StepConfig(backend="fake")], liveseg_host.backends(), StepContext(tmp_path)
    )
    pipe.close()
    assert fake.closed


def test_fake_backend_thresholds_input(disk_frame):
    frame, truth = disk_frame()
    result = FakeBackend().segment(frame, None)
    assert result.count == truth.max()
