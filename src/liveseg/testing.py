"""Test helpers for liveseg and its plugin authors (a pytest plugin, loaded automatically).

Fixtures
--------
``liveseg_host``
    A fresh :class:`~liveseg.plugins.PluginHost` with builtins only (entry-point
    discovery off), so a plugin under test is registered explicitly.
``liveseg_home``
    A temporary liveseg data directory (queue, registry), also set as ``LIVESEG_HOME``.
``disk_frame``
    A factory for synthetic frames of bright disks with known instance labels.

:class:`FakeBackend` is the official fake: it returns labels you give it, sleeps or
raises on chosen frames — enough to test chains, backlog policies and error handling
against the real contract. :func:`contract_frames` gives a sink or trigger under test
one frame of each status (``ok``, ``skipped``, ``failed``) the way liveseg hands them
over, and :func:`register_plugin` registers a plugin module on a fresh host (the
``liveseg_host`` fixture) and returns the host's load and registration errors.
:func:`run_liveseg` runs the ``liveseg`` command the way a user types it: its own
process, its real exit code, output and error text.
"""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from liveseg.plugins import PluginHost
from liveseg.types import LABEL_DTYPE, Frame, FrameResult, FrameStatus, input_image

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Mapping
    from pathlib import Path

    from liveseg.config import LivesegConfig
    from liveseg.pipeline import StepContext

__all__ = [
    "FakeBackend",
    "classical_config",
    "contract_frames",
    "disk_image",
    "register_fake_backend",
    "register_plugin",
    "run_liveseg",
]


def disk_image(
    shape: tuple[int, int] = (128, 128),
    centers: list[tuple[int, int]] | None = None,
    radius: int = 6,
    *,
    background: float = 100.0,
    amplitude: float = 800.0,
    noise: float = 5.0,
    seed: int = 0,
    dtype: Any = np.uint16,
) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like frame of disks and its ground-truth labels (1..N)."""
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = [(shape[0] // 4, shape[1] // 4), (shape[0] // 2, 3 * shape[1] // 4)]
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, dtype=LABEL_DTYPE)
    for i, (r, c) in enumerate(centers, start=1):
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = i
    image = background + amplitude * (labels > 0) + rng.normal(0, noise, shape)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    if info is not None:
        image = np.clip(image, info.min, info.max)
    return image.astype(dtype), labels


class FakeBackend:
    """A backend that returns fixed labels (or thresholds), can be slow, can fail.

    Parameters are plain attributes so tests can build it directly or register it
    with :func:`register_fake_backend`.
    """

    def __init__(
        self,
        labels: np.ndarray | None = None,
        *,
        delay_s: float = 0.0,
        fail_on: Collection[int] = (),
        error: type[Exception] = RuntimeError,
    ) -> None:
        self.labels = labels
        self.delay_s = delay_s
        self.fail_on = set(fail_on)
        self.error = error
        self.calls: list[int] = []
        self.closed = False

    def segment(self, frame: Frame, upstream: FrameResult | None) -> FrameResult:
        """Return the configured labels (or a simple threshold of the input)."""
        self.calls.append(frame.index)
        if self.delay_s:
            time.sleep(self.delay_s)
        if frame.index in self.fail_on:
            raise self.error(f"fake failure on frame {frame.index}")
        if self.labels is not None:
            return FrameResult(labels=np.asarray(self.labels, dtype=LABEL_DTYPE))
        from scipy import ndimage as ndi

        img = np.asarray(input_image(frame, upstream), dtype=np.float32)
        mask = img > (img.min() + img.max()) / 2 if img.max() > img.min() else img < 0
        lab, _ = ndi.label(mask)
        return FrameResult(labels=lab.astype(LABEL_DTYPE))

    def close(self) -> None:
        """Mark closed (tests assert sessions close their backends)."""
        self.closed = True


def register_fake_backend(host: PluginHost, name: str = "fake", **kwargs: Any) -> FakeBackend:
    """Register one shared FakeBackend instance under ``name``; returns it."""
    from liveseg.hookspecs import hookimpl

    backend = FakeBackend(**kwargs)

    @hookimpl
    def register_backends(register: Callable[..., None]) -> None:
        def factory(params: Any, context: StepContext) -> FakeBackend:
            return backend

        register(name, factory)

    host.register(SimpleNamespace(register_backends=register_backends), name=f"fake-{name}")
    return backend


def register_plugin(host: PluginHost, plugin: object, name: str | None = None) -> list[str]:
    """Register ``plugin`` (a module or object) on ``host`` and collect its registrations.

    Returns the host's failure lines (a plugin raising in a ``register_*`` hook, a name
    registered twice); a plugin that registers cleanly returns ``[]``, so a test can
    ``assert register_plugin(liveseg_host, my_plugin) == []``.
    """
    host.register(plugin, name=name)
    host.plugins()  # runs every register_* hook once, guarded
    return [f.line() for f in host.errors]


def contract_frames(
    shape: tuple[int, int] = (64, 64), *, start: int = 0, seed: int = 0
) -> list[tuple[Frame, FrameResult, dict[str, np.ndarray]]]:
    """One ``ok``, one ``skipped`` and one ``failed`` frame, as a sink receives them.

    The ``ok`` frame has two disks, their true labels as the result and the columns
    ``label`` and ``area_px`` (one value per object); skipped and failed frames carry
    empty labels, the status (and for ``failed`` an error message) and an empty mapping
    of objects.
    """
    image, labels = disk_image(
        shape, [(shape[0] // 4, shape[1] // 4), (shape[0] // 2, 3 * shape[1] // 4)], seed=seed
    )
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    empty = np.zeros(shape, dtype=LABEL_DTYPE)
    return [
        (
            Frame(index=start, image=image),
            FrameResult(labels=labels),
            {"label": ids.astype(np.int64), "area_px": areas.astype(np.int64)},
        ),
        (
            Frame(index=start + 1, image=image),
            FrameResult(labels=empty, status=FrameStatus.SKIPPED),
            {},
        ),
        (
            Frame(index=start + 2, image=image),
            FrameResult(labels=empty, status=FrameStatus.FAILED, error="RuntimeError: test"),
            {},
        ),
    ]


def run_liveseg(
    *args: object,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """``liveseg ARGS...`` in a child process (``python -m liveseg``), as from a shell.

    Arguments are turned into strings, so paths can be passed as they are. The result is
    not checked: tests assert on ``returncode``, ``stdout`` and ``stderr`` themselves,
    failures included. ``env`` replaces the child's environment, as in
    :func:`subprocess.run`.
    """
    return subprocess.run(
        [sys.executable, "-m", "liveseg", *map(str, args)],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def classical_config(**sections: Any) -> LivesegConfig:
    """A config for tests on the demo hardware: classical chain, 3 quick frames.

    Keyword arguments replace whole top-level sections (``hardware=…``, ``sequence=…``).
    """
    from liveseg.config import parse_config
    from liveseg.defaults import CLASSICAL_STEPS

    data: dict[str, Any] = {
        "name": "test",
        "hardware": {"mm_config": "demo", "exposure_ms": 5},
        "sequence": {"time_plan": {"interval": 0, "loops": 3}},
        "pipeline": {"steps": [s.model_dump() for s in CLASSICAL_STEPS]},
    }
    data.update(sections)
    return parse_config(data)


@pytest.fixture
def liveseg_host() -> PluginHost:
    """A fresh plugin host: builtins only, no entry-point discovery, no plugins dir.

    Register the plugin under test with :func:`register_plugin` (or ``host.register``).
    """
    return PluginHost(entry_points=False)


@pytest.fixture
def liveseg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private liveseg data directory for one test."""
    home = tmp_path / "liveseg-home"
    home.mkdir()
    monkeypatch.setenv("LIVESEG_HOME", str(home))
    yield home


@pytest.fixture
def disk_frame() -> Callable[..., tuple[Frame, np.ndarray]]:
    """``disk_frame(index=0, **disk_image_kwargs) -> (Frame, true_labels)``."""

    def make(index: int = 0, **kwargs: Any) -> tuple[Frame, np.ndarray]:
        image, labels = disk_image(**kwargs)
        return Frame(index=index, image=image), labels

    return make
