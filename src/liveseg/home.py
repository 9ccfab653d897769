"""The liveseg data directory (retraining queue, model registry), and writable folders.

Chosen by ``--home``, else ``$LIVESEG_HOME``, else the platform's user data directory, so
separate projects and tests never share state. A home or output folder that cannot be
created or written is one :class:`~liveseg.errors.StorageError` line naming the folder,
not a raw ``OSError`` traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from liveseg.errors import StorageError

__all__ = ["ensure_parent_writable", "ensure_writable_dir", "resolve_home"]


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The data directory to use (created if missing).

    Raises
    ------
    StorageError
        When the folder cannot be created or written (read-only disk, a file in the way,
        no permission); the message names the folder and how to choose another.
    """
    if home is None:
        home = os.environ.get("LIVESEG_HOME") or None
    if home is None:
        import platformdirs

        home = platformdirs.user_data_dir("liveseg", appauthor=False)
    path = Path(home).expanduser()
    return ensure_writable_dir(
        path, "liveseg home", hint="choose another with --home DIR or $LIVESEG_HOME"
    )


def ensure_writable_dir(path: str | os.PathLike[str], what: str, *, hint: str = "") -> Path:
    """Create ``path`` if needed and check a file can be written in it; return it.

    The check writes and removes a small temporary file, because permission bits do not
    tell (read-only mounts, Windows ACLs, running as root).

    Raises
    ------
    StorageError
        Naming ``what`` and the folder, when it cannot be created or written.
    """
    p = Path(path).expanduser()
    tail = f"; {hint}" if hint else ""
    if p.exists() and not p.is_dir():
        raise StorageError(f"{what} {p} is a file, not a folder{tail}")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {what} {p}: {exc.strerror or exc}{tail}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=p, prefix=".liveseg-write-test-"):
            pass
    except OSError as exc:
        raise StorageError(f"{what} {p} is not writable: {exc.strerror or exc}{tail}") from None
    return p


def ensure_parent_writable(path: str | os.PathLike[str], what: str, *, hint: str = "") -> Path:
    """Check that ``path`` (not created here) can be created: its parent is writable.

    For folders created later by someone else (a run directory), so an unwritable
    location is one line before any work starts.
    """
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise StorageError(f"{what} {p} is a file, not a folder")
        ensure_writable_dir(p, what, hint=hint)
        return p
    ensure_writable_dir(p.parent, f"the folder of the {what}", hint=hint)
    return p
