"""Fixtures for liveseg-cellpose: a tiny real Cellpose-SAM network, GPU skipping."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests when torch sees no CUDA device."""
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def torch_threads() -> None:
    """Keep torch to one thread: the CPU is shared and the networks are tiny."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory, torch_threads: None) -> Path:
    """A randomly initialised CPSAM with a tiny SAM encoder, built by cellpose's own class."""
    from liveseg_cellpose.net import save_random_weights

    return save_random_weights(tmp_path_factory.mktemp("weights") / "tiny.pt", arch="tiny")


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cellpose model cache, selected the way operators do (the env var)."""
    cache = tmp_path / "cellpose-models"
    cache.mkdir()
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(cache))
    return cache
