"""Shared fixtures of the liveseg-torch tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_ckpt_path():
    from liveseg_torch.weights import default_weights_path

    path = default_weights_path()
    if not path.is_file():
        pytest.fail(f"shipped weights missing at {path}; run python -m liveseg_torch.pretrain")
    return path


@pytest.fixture(scope="session")
def predictor(default_ckpt_path):
    import torch

    from liveseg_torch.inference import Predictor
    from liveseg_torch.weights import load_checkpoint

    torch.set_num_threads(1)
    return Predictor(load_checkpoint(default_ckpt_path), device="cpu")
