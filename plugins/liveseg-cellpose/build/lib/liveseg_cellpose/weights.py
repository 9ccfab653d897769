"""Where Cellpose weights come from, checked before cellpose ever sees the name.

cellpose 4 resolves a model name itself (``cellpose.models.CellposeModel``): an existing
path is loaded, a known name (``cpsam``, ``cpsam_v2``, … or a name listed in the GUI's
``gui_models.txt``) is looked up in its cache directory and *downloaded* from Hugging Face
when absent, and an unknown name silently falls back to downloading ``cpsam_v2``. On an
offline microscope PC that download hangs or fails at an unpredictable moment. So this
module resolves every spec to an existing file first and only ever hands cellpose a path:
a missing file is a :class:`liveseg.errors.ModelError` at session start that says which
file, where it was looked for and how to get it.

Nothing here imports torch or cellpose; the cache directory follows cellpose's own rule
(``CELLPOSE_LOCAL_MODELS_PATH``, else ``~/.cellpose/models``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import urllib.request
from pathlib import Path

from liveseg.errors import ModelError

__all__ = [
    "CACHE_ENV",
    "KNOWN_MODELS",
    "MODEL_URL",
    "cache_dir",
    "download_weights",
    "network_available",
    "resolve_weights",
]

log = logging.getLogger("liveseg.cellpose")

CACHE_ENV = "CELLPOSE_LOCAL_MODELS_PATH"
"""Environment variable cellpose reads for its model cache directory."""
MODEL_URL = "https://huggingface.co/mouseland/cellpose-sam/resolve/main/"
"""Where cellpose downloads its built-in models from (``cellpose.models._MODEL_URL``)."""
KNOWN_MODELS: tuple[str, ...] = ("cpsam", "cpsam_v2", "cpdino", "cpdino-vitb")
"""Built-in model names of cellpose 4 (``cellpose.models.MODEL_NAMES``)."""

_PROBE_HOST = ("huggingface.co", 443)


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The directory cellpose caches named models in.

    Parameters
    ----------
    override
        An explicit directory (the step's ``model_dir``); wins over everything.

    Returns
    -------
    Path
        ``override``, else ``$CELLPOSE_LOCAL_MODELS_PATH``, else ``~/.cellpose/models``:
        the same rule cellpose applies when ``cellpose.models`` is imported, read *now* so
        a variable set after that import is still honoured.
    """
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cellpose" / "models"


def _user_models(directory: Path) -> list[str]:
    """Names the cellpose GUI registered in ``gui_models.txt`` (one per line)."""
    listing = directory / "gui_models.txt"
    try:
        lines = listing.read_text().splitlines()
    except OSError:
        return []
    return [line.strip() for line in lines if line.strip()]


def _looks_like_path(spec: str) -> bool:
    return (
        os.sep in spec
        or "/" in spec
        or spec.startswith(("~", "."))
        or Path(spec).suffix in {".pt", ".pth", ".bin", ".ckpt", ".safetensors"}
    )


def missing_weights_message(name: str, directory: Path) -> str:
    """The operator-facing explanation of a missing named model (see README)."""
    target = directory / name
    env = os.environ.get(CACHE_ENV)
    env_note = (
        f"{CACHE_ENV}={env}"
        if env
        else f"{CACHE_ENV} is not set, so cellpose uses ~/.cellpose/models"
    )
    return (
        f"Cellpose weights {name!r} are not available: the file {target} does not exist.\n"
        f"  cellpose looks for named models in its cache directory {directory} "
        f"({env_note}).\n"
        f"  This machine cannot download them now, and liveseg never waits on a download "
        f"during an acquisition.\n"
        f"  To fix: on a computer with internet access download {MODEL_URL}{name} "
        f'(or run `python -c "from cellpose import models; models.CellposeModel('
        f"pretrained_model='{name}')\"` there and take ~/.cellpose/models/{name}), copy the "
        f"file to {target} on this PC (or into any folder and point {CACHE_ENV} or the "
        f"step's `model_dir` at it), or give the step's `model` as the file's full path."
    )


def network_available(host: tuple[str, int] = _PROBE_HOST, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout_s`` seconds.

    The probe runs in a daemon thread and is abandoned after ``timeout_s``, so a resolver
    that hangs (common on machines with no route out) cannot stall session start.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(host, timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="liveseg-cellpose-netprobe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def download_weights(name: str, target: Path, timeout_s: float = 30.0) -> Path:
    """Download cellpose's built-in model ``name`` to ``target`` (atomically).

    Uses its own ``urlopen`` with a socket timeout (cellpose's downloader has none and
    switches off TLS verification process-wide), writes to a temporary file in the same
    directory and renames it, so an interrupted download never leaves a truncated model.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    url = MODEL_URL + name
    log.info("downloading cellpose weights %s to %s", url, target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ModelError(
                f"downloading {url} failed: {exc}\n" + missing_weights_message(name, target.parent)
            ) from exc
        raise
    return target


def resolve_weights(
    spec: str,
    *,
    home: str | os.PathLike[str] | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    probe_timeout_s: float = 3.0,
) -> Path:
    """Turn a model spec into an existing weights file, or fail fast with a clear error.

    Parameters
    ----------
    spec
        ``name@version`` (a liveseg registry model), a file path, or a cellpose model name
        (``cpsam``, a name from the GUI's ``gui_models.txt``, or any file in the cache).
    home
        liveseg home directory, for registry specs.
    model_dir
        Cache directory override (see :func:`cache_dir`).
    download
        When a *built-in* name is missing, try to download it — but only after a
        connectivity probe of at most ``probe_timeout_s`` seconds succeeds.
    probe_timeout_s
        Upper bound on the probe, so an offline machine fails within seconds.

    Returns
    -------
    Path
        An existing file; cellpose is then given this path and never downloads.

    Raises
    ------
    ModelError
        The file does not exist (with where it was looked for and how to get it), the
        name is unknown, or the registry module is unavailable.
    """
    spec = str(spec).strip()
    if not spec:
        raise ModelError("the cellpose step needs `model`: a name such as 'cpsam' or a path")
    if "@" in spec and not _looks_like_path(spec):
        return _resolve_registry(spec, home)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "model.json").is_file():  # an exported / fine-tuned model directory
            return _weights_of_directory(path)
        raise ModelError(
            f"cellpose model {spec!r} is a directory without model.json, not a weights file"
        )
    if _looks_like_path(spec):
        raise ModelError(
            f"cellpose weights file {str(path)!r} does not exist. Give the full path of a "
            f"model saved by cellpose (or by liveseg fine-tuning), or a built-in name such as "
            f"'cpsam'."
        )
    directory = cache_dir(model_dir)
    cached = directory / spec
    if cached.is_file():
        return cached
    user = _user_models(directory)
    if spec not in KNOWN_MODELS and spec not in user:
        present = (
            sorted(p.name for p in directory.glob("*") if p.is_file())
            if directory.is_dir()
            else []
        )
        raise ModelError(
            f"unknown cellpose model {spec!r} (cellpose itself would silently download "
            f"'cpsam_v2' instead). Known names: {', '.join(KNOWN_MODELS)}"
            + (f"; GUI models: {', '.join(user)}" if user else "")
            + f". Files in {directory}: {', '.join(present) or '(none)'}. "
            "A fine-tuned model is given by its path."
        )
    if download and spec in KNOWN_MODELS:
        if network_available(timeout_s=probe_timeout_s):
            return download_weights(spec, cached)
        log.warning("no network: cannot download cellpose weights %r", spec)
    raise ModelError(missing_weights_message(spec, directory))


def _weights_of_directory(directory: Path) -> Path:
    import json

    try:
        card = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {directory / 'model.json'}: {exc}") from exc
    weights = directory / str(card.get("weights", "weights.pt"))
    if not weights.is_file():
        raise ModelError(
            f"{directory}: weights file {weights.name!r} named by model.json is missing"
        )
    return weights


def _resolve_registry(spec: str, home: str | os.PathLike[str] | None) -> Path:
    try:
        from liveseg.models import resolve_model
    except ImportError as exc:
        raise ModelError(
            f"model {spec!r} names a liveseg registry model, but liveseg's model registry "
            f"(liveseg.models.resolve_model) is not available in this installation: {exc}. "
            "Give the weights file's path instead."
        ) from exc
    resolved = resolve_model(spec, home=home)
    path = Path(resolved.weights_path)
    if not path.is_file():
        raise ModelError(f"registry model {spec!r} has no weights file at {path}")
    return path
