"""liveseg: live segmentation for Micro-Manager acquisitions.

``import liveseg`` stays light: torch, cellpose and Qt load only inside plugins or the
GUI extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from liveseg.errors import ConfigError, LivesegError, ModelError, PluginError
from liveseg.hookspecs import hookimpl
from liveseg.types import Flag, Frame, FrameResult, FrameStatus, Proposal

if TYPE_CHECKING:
    from liveseg.session import Session
    from liveseg.store import RunReader

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Flag",
    "Frame",
    "FrameResult",
    "FrameStatus",
    "LivesegError",
    "ModelError",
    "PluginError",
    "Proposal",
    "RunReader",
    "Session",
    "__version__",
    "hookimpl",
    "open_run",
]


def open_run(path: Any) -> RunReader:
    """Open a run directory (finished or killed mid-run) for reading."""
    from liveseg.store import RunReader

    return RunReader(path)


def __getattr__(name: str) -> Any:
    if name == "Session":
        from liveseg.session import Session

        return Session
    if name == "RunReader":
        from liveseg.store import RunReader

        return RunReader
    raise AttributeError(f"module 'liveseg' has no attribute {name!r}")
