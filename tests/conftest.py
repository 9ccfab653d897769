from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from liveseg.config import LivesegConfig, parse_config
from liveseg.defaults import CLASSICAL_STEPS

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def classical_config(**overrides: Any) -> LivesegConfig:
    """A config with the classical chain, a small simulated sample and a short sequence."""
    data: dict[str, Any] = {
        "name": "test",
        "hardware": {"mm_config": "demo", "exposure_ms": 5},
        "sequence": {"time_plan": {"interval": 0, "loops": 3}},
        "pipeline": {"steps": [s.model_dump() for s in CLASSICAL_STEPS]},
    }
    for key, value in overrides.items():
        data[key] = value
    return parse_config(data)


@pytest.fixture
def make_session(tmp_path, liveseg_home) -> Iterator[Callable[..., Any]]:
    """Build Sessions on the demo hardware; every one is closed after the test."""
    from liveseg.session import Session

    sessions: list[Session] = []

    def make(config: LivesegConfig, **kwargs: Any) -> Session:
        s = Session(config, home=liveseg_home, **kwargs)
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()
