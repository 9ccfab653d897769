from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from liveseg.config import LivesegConfig

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


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
