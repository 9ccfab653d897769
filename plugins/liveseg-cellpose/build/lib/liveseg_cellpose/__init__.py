"""liveseg-cellpose: the Cellpose-SAM (cellpose 4) backend and trainer for liveseg.

Importing this package is cheap; torch and cellpose are imported when a session builds
the ``cellpose`` step or when :func:`liveseg_cellpose.finetune.finetune` runs.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("liveseg-cellpose")
except PackageNotFoundError:  # pragma: no cover - source checkout without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
