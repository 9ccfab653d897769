"""The liveseg data directory (retraining queue, model registry).

Chosen by ``--home``, else ``$LIVESEG_HOME``, else the platform's user data directory, so
separate projects and tests never share state.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_home"]


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The data directory to use (created if missing)."""
    if home is None:
        home = os.environ.get("LIVESEG_HOME") or None
    if home is None:
        import platformdirs

        home = platformdirs.user_data_dir("liveseg", appauthor=False)
    path = Path(home).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
