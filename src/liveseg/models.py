"""The model registry: versioned model directories, aliases, lineage, promotion.

Layout under the data directory (:func:`liveseg.home.resolve_home`)::

    <home>/models/<name>/<N>/            one immutable version: weights file + model.json
    <home>/models/<name>/aliases.json    {"prod": 3, ...}
    <home>/models/<name>/history.jsonl   promotions and validations, append-only

A version is written into a hidden staging directory and renamed into place in one step,
so readers never see half a version; after that its files are made read-only and never
written again (clones and fine-tunes copy). Specs address versions as ``name@N``,
``name@alias`` or plain ``name`` (its ``prod`` alias, else its newest version).

Models that plugins ship (their ``register_models`` hook; the default model is the one
a plugin registers as ``default``) are seeded automatically as ``NAME@1`` with alias
``prod`` the first time a spec names them; ``liveseg models import-default --name
nuclei`` imports the default under another name. Weights are only copied
here, never loaded: backends load them (without running pickled code).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveseg.errors import ModelError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "DEFAULT_ALIAS",
    "ModelRegistry",
    "ModelVersion",
    "builtin_models",
    "check_name",
    "file_sha256",
    "parse_spec",
    "resolve_model",
    "verify_weights",
]

log = logging.getLogger("liveseg.models")

DEFAULT_ALIAS = "prod"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (used for weights and training items)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``name@ref`` into ``(name, ref)``; ``ref`` is ``None`` when absent.

    Raises
    ------
    ModelError
        When the name or reference is malformed.
    """
    name, _, ref = str(spec).strip().partition("@")
    if not _NAME_RE.match(name):
        raise ModelError(
            f"invalid model spec {spec!r}: expected name@version or name@alias "
            f"(e.g. nuclei@3, nuclei@prod); names use letters, digits, '_', '-', '.'"
        )
    if ref == "":
        return name, None
    if not (ref.isdigit() or _ALIAS_RE.match(ref)):
        raise ModelError(f"invalid model spec {spec!r}: {ref!r} is neither a version nor alias")
    return name, ref


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version (read-only view of its directory)."""

    name: str
    version: int
    path: Path
    card: Mapping[str, Any]

    @property
    def spec(self) -> str:
        """``name@N``: the address that always means exactly this version."""
        return f"{self.name}@{self.version}"

    @property
    def backend(self) -> str:
        """The backend (and trainer) name that loads these weights, e.g. ``unet``."""
        return str(self.card.get("backend", ""))

    @property
    def weights_path(self) -> Path:
        """The weights file inside the version directory."""
        return self.path / str(self.card.get("weights", "weights.pt"))

    @property
    def source(self) -> dict[str, Any] | None:
        """Where an imported version came from, or ``None`` for one made here.

        ``{"kind": "bioimageio", "source": path, "id", "name", "rdf_sha256", ...}`` for a
        BioImage Model Zoo package (:mod:`liveseg.models_bioimageio`), ``{"kind":
        "folder", "source": path}`` for a model folder (``import_dir``).
        """
        zoo = self.card.get("bioimageio")
        if isinstance(zoo, dict):
            return {"kind": "bioimageio", **zoo}
        where = self.card.get("imported_from")
        return {"kind": "folder", "source": str(where)} if where else None

    @property
    def parent(self) -> str | None:
        """``name@N`` of the version this one was cloned or fine-tuned from."""
        parent = self.card.get("parent")
        return str(parent) if parent else None


@contextlib.contextmanager
def _locked(path: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` held while the block runs.

    ``filelock`` works on Windows (the PCs that drive most microscopes) as well as on
    POSIX systems; ``fcntl`` exists only on the latter.

    Raises
    ------
    ModelError
        When another process holds the lock for longer than ``timeout_s``.
    """
    import filelock

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(str(path), timeout=timeout_s):
            yield
    except filelock.Timeout:
        raise ModelError(
            f"the model registry is locked by another process ({path}); waited {timeout_s:g} s"
        ) from None


def check_name(name: str) -> str:
    """``name`` if it can name a model (``[A-Za-z0-9._-]``, no ``@``), else :class:`ModelError`.

    A name with ``@`` (``prod@2``) could never be addressed: ``prod@2`` means version 2
    of ``prod``.
    """
    if not _NAME_RE.match(str(name)):
        raise ModelError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_', '-', '.' starting "
            f"with a letter or digit (no '@': name@N addresses version N, name@alias an alias)"
        )
    return str(name)


def verify_weights(mv: ModelVersion) -> ModelVersion:
    """Check ``mv``'s weights file against the ``weights_sha256`` its model.json records.

    A version whose card records no hash (a model directory made by hand) passes as it
    is: there is nothing to compare with.

    Raises
    ------
    ModelError
        When the file is missing or its bytes changed; names the file and both hashes.
    """
    expected = mv.card.get("weights_sha256")
    path = _inside(mv.path, str(mv.card.get("weights", "weights.pt")), "weights file")
    if not path.is_file():
        raise ModelError(f"model {mv.spec}: weights file {path} is missing")
    if not expected:
        return mv
    actual = file_sha256(path)
    if actual != expected:
        raise ModelError(
            f"model {mv.spec}: weights file {path} was changed after it was registered "
            f"(sha256 {actual}, model.json records {expected}); refusing to load it. "
            f"Restore the file, or import the new weights as a new version "
            f"(liveseg models import DIR)"
        )
    return mv


def _inside(directory: Path, relative: str, what: str) -> Path:
    """``directory / relative`` if it lies inside ``directory`` (links resolved), else error."""
    if not relative or Path(relative).is_absolute() or Path(relative).drive:
        raise ModelError(
            f"{directory}: {what} {relative!r} must be a file name inside the model folder, "
            f"not an absolute path; nothing was imported"
        )
    root = directory.resolve()
    target = (directory / relative).resolve()
    if target != root and root not in target.parents:
        raise ModelError(
            f"{directory}: {what} {relative!r} points outside the model folder (to {target}); "
            f"only files inside the folder are imported; nothing was imported"
        )
    return target


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_READ_ONLY_FILE = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
_READ_ONLY_DIR = _READ_ONLY_FILE | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def _read_only(directory: Path) -> None:
    """Make a version's files read-only (on Windows: the read-only attribute)."""
    for p in directory.iterdir():
        if p.is_file():
            p.chmod(_READ_ONLY_FILE)


def _seal(directory: Path) -> None:
    """Make a version directory itself read-only, so no file can be added or removed.

    On Windows ``os.chmod`` only sets the read-only attribute (which Explorer ignores
    for folders); the files inside stay read-only there either way.
    """
    with contextlib.suppress(OSError):
        directory.chmod(_READ_ONLY_DIR)


def builtin_models() -> Mapping[str, Path]:
    """Models the installed plugins ship (``register_models``): name → model directory.

    A plugin's loader runs only when its model's directory is looked up.
    """
    from liveseg.plugins import shipped_models

    return shipped_models()


class ModelRegistry:
    """All model versions under one data directory.

    Safe for several processes at once: version numbers and aliases change under a file
    lock, versions appear by an atomic rename, and nothing inside a version directory is
    ever rewritten.
    """

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.home = Path(home)
        self.root = self.home / "models"
        self.root.mkdir(parents=True, exist_ok=True)

    # -- reading --------------------------------------------------------------------
    def names(self) -> list[str]:
        """Model names that have at least one version."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        """Version numbers of ``name``, ascending."""
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(
            int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / "model.json").is_file()
        )

    def aliases(self, name: str) -> dict[str, int]:
        """Alias → version for ``name``."""
        f = self.root / name / "aliases.json"
        if not f.is_file():
            return {}
        data = json.loads(f.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in data.items()}

    def get(self, name: str, version: int) -> ModelVersion:
        """One version by number."""
        d = self.root / name / str(version)
        card_path = d / "model.json"
        if not card_path.is_file():
            known = ", ".join(f"{name}@{v}" for v in self.versions(name)) or "none"
            raise ModelError(f"model {name}@{version} does not exist (versions: {known})")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelError(f"{card_path} is not valid JSON: {exc}") from None
        return ModelVersion(name=name, version=version, path=d, card=card)

    def resolve(self, spec: str, *, verify: bool = True) -> ModelVersion:
        """The version a spec means, seeding a shipped model on first use.

        ``verify`` checks the weights' sha256 against model.json (:func:`verify_weights`);
        pass ``False`` only where the weights are not loaded (listing, naming).

        Raises
        ------
        ModelError
            When the model, version or alias does not exist, or the weights changed.
        """
        mv = self._resolve(spec)
        return verify_weights(mv) if verify else mv

    def _resolve(self, spec: str) -> ModelVersion:
        path = Path(spec)
        if "@" not in spec and (path / "model.json").is_file():
            return self._from_directory(path)
        name, ref = parse_spec(spec)
        if not self.versions(name):
            shipped = builtin_models()
            if name in shipped:
                with _locked(self.root / ".seed.lock"):
                    if not self.versions(name):  # another process may have seeded it
                        self.import_dir(
                            shipped[name], name=name, note="shipped model", promote=True
                        )
            else:
                known = ", ".join(self.names()) or "none yet"
                hint = ""
                if name == "default":
                    hint = " (no installed plugin ships a model named 'default')"
                raise ModelError(
                    f"no model named {name!r} in {self.root} (models: {known}){hint}; "
                    f"see `liveseg models list`"
                )
        if ref is None:
            aliases = self.aliases(name)
            version = aliases.get(DEFAULT_ALIAS, self.versions(name)[-1])
        elif ref.isdigit():
            version = int(ref)
        else:
            aliases = self.aliases(name)
            if ref not in aliases:
                known = ", ".join(f"{a}→{v}" for a, v in sorted(aliases.items())) or "none"
                raise ModelError(f"model {name!r} has no alias {ref!r} (aliases: {known})")
            version = aliases[ref]
        return self.get(name, version)

    def _from_directory(self, path: Path) -> ModelVersion:
        try:
            card = json.loads((path / "model.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelError(f"{path / 'model.json'} is not valid JSON: {exc}") from None
        _inside(path, str(card.get("weights", "weights.pt")), "weights file")
        return ModelVersion(
            name=str(card.get("name", path.name)),
            version=int(card.get("version", 0)),
            path=path,
            card=card,
        )

    def history(self, name: str) -> list[dict[str, Any]]:
        """Promotions and validations of ``name``, oldest first."""
        f = self.root / name / "history.jsonl"
        if not f.is_file():
            return []
        out = []
        for line in f.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # -- writing --------------------------------------------------------------------
    def add_version(
        self,
        name: str,
        weights: str | os.PathLike[str],
        *,
        backend: str,
        parent: ModelVersion | None = None,
        card: Mapping[str, Any] | None = None,
        extra_files: Mapping[str, str | os.PathLike[str]] | None = None,
    ) -> ModelVersion:
        """Create ``name@N+1`` from a weights file (copied) and card fields.

        ``card`` adds fields (training items, hyper-parameters, metrics…); fields the
        parent's card has that the registry does not manage (e.g. architecture) carry
        over so the backend can rebuild the network.
        """
        check_name(name)
        src = Path(weights)
        if not src.is_file():
            raise ModelError(f"weights file not found: {src}")
        mdir = self.root / name
        mdir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=mdir))
        try:
            weights_name = src.name
            shutil.copyfile(src, staging / weights_name)
            for fname, fpath in (extra_files or {}).items():
                if Path(fname).name != fname or fname in ("", ".", ".."):
                    raise ModelError(f"extra model file {fname!r} must be a plain file name")
                shutil.copyfile(fpath, staging / fname)
            base: dict[str, Any] = {}
            if parent is not None:
                base = {k: v for k, v in parent.card.items() if k not in _MANAGED}
            base.update(card or {})
            base.update(
                {
                    "name": name,
                    "backend": backend,
                    "weights": weights_name,
                    "weights_sha256": file_sha256(staging / weights_name),
                    "parent": parent.spec if parent is not None else base.get("parent"),
                    "parent_weights_sha256": (
                        parent.card.get("weights_sha256") if parent is not None else None
                    ),
                    "created": _now(),
                }
            )
            base.setdefault("metrics", [])
            _write_json_atomic(staging / "model.json", base)
            if _prepare_for_backend(staging, backend):  # e.g. an ONNX export beside the weights
                base = json.loads((staging / "model.json").read_text(encoding="utf-8"))
            with _locked(mdir / ".lock"):
                version = max(self.versions(name), default=0) + 1
                base["version"] = version
                _write_json_atomic(staging / "model.json", base)
                _read_only(staging)
                os.rename(staging, mdir / str(version))
                _seal(mdir / str(version))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("registered %s@%d (backend %s)", name, version, backend)
        return self.get(name, version)

    def clone(self, spec: str, *, name: str | None = None, note: str = "") -> ModelVersion:
        """Copy a version to a new one (same name by default); the parent stays untouched."""
        parent = self.resolve(spec)
        extra: dict[str, Path] = {}
        if isinstance(parent.card.get("bioimageio"), dict):  # a Zoo package: all its files
            skip = {parent.weights_path.name, "model.json"}
            files = [p for p in parent.path.iterdir() if p.is_file()]
            extra = {p.name: p for p in files if p.name not in skip}
        return self.add_version(
            name or parent.name,
            parent.weights_path,
            backend=parent.backend,
            parent=parent,
            card={"note": note or f"clone of {parent.spec}", "metrics": []},
            extra_files=extra,
        )

    def import_dir(
        self,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        backend: str | None = None,
        note: str = "",
        promote: bool = False,
    ) -> ModelVersion:
        """Register a model directory (weights + model.json, e.g. an export or shipped)."""
        d = Path(directory)
        card_path = d / "model.json"
        if not card_path.is_file():
            raise ModelError(f"{d} has no model.json; import needs a model directory")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelError(f"{card_path} is not valid JSON: {exc}") from None
        if not isinstance(card, dict):
            raise ModelError(f"{card_path}: expected a JSON object")
        named = str(card.get("weights") or _guess_weights(d))
        weights = _inside(d, named, "weights file")
        if not weights.is_file():
            raise ModelError(f"{d}: weights file {named!r} named by model.json is missing")
        expected = card.get("weights_sha256")
        actual = file_sha256(weights) if expected else None
        if expected and actual != expected:
            raise ModelError(
                f"{d}: weights file {weights} does not match model.json (sha256 "
                f"{actual}, model.json records {expected}); nothing was imported"
            )
        card_backend = backend or card.get("backend")
        if not card_backend:
            raise ModelError(f"{card_path} does not say its backend; pass --backend")
        fields = {k: v for k, v in card.items() if k not in _MANAGED}
        fields["imported_from"] = str(d)
        if note:
            fields["note"] = note
        fields["parent"] = None
        mv = self.add_version(
            check_name(name or str(card.get("name") or d.name)),
            weights,
            backend=str(card_backend),
            card=fields,
        )
        if promote:
            self.promote(mv.spec, reason=note or "imported", record_only_if_unset=True)
        return mv

    def promote(
        self,
        spec: str,
        *,
        alias: str = DEFAULT_ALIAS,
        reason: str = "",
        forced: bool = False,
        record_only_if_unset: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Point ``name@alias`` at a version and record who/why in history.jsonl."""
        if not _ALIAS_RE.match(alias) or alias.isdigit():
            raise ModelError(f"invalid alias {alias!r}")
        mv = self.resolve(spec)
        mdir = self.root / mv.name
        with _locked(mdir / ".lock"):
            aliases = self.aliases(mv.name)
            if record_only_if_unset and alias in aliases:
                return mv
            previous = aliases.get(alias)
            aliases[alias] = mv.version
            _write_json_atomic(mdir / "aliases.json", aliases)
            self._append_history(
                mv.name,
                {
                    "event": "promote",
                    "alias": alias,
                    "version": mv.version,
                    "previous": previous,
                    "reason": reason,
                    "forced": forced,
                    "user": _user(),
                    **dict(extra or {}),
                },
            )
        return mv

    def record(self, mv: ModelVersion, event: str, data: Mapping[str, Any]) -> None:
        """Append an event (e.g. a validation) about ``mv`` to its history."""
        self._append_history(mv.name, {"event": event, "version": mv.version, **dict(data)})

    def _append_history(self, name: str, entry: Mapping[str, Any]) -> None:
        line = json.dumps({"time": _now(), **dict(entry)}, sort_keys=True, default=str)
        with open(self.root / name / "history.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def export(self, spec: str, out: str | os.PathLike[str]) -> Path:
        """Copy a version directory to ``out`` (importable again with ``import_dir``)."""
        mv = self.resolve(spec)
        dest = Path(out)
        if dest.exists() and any(dest.iterdir()):
            raise ModelError(f"export target {dest} exists and is not empty")
        dest.mkdir(parents=True, exist_ok=True)
        for p in mv.path.iterdir():
            if p.is_file():
                shutil.copyfile(p, dest / p.name)
        return dest

    def export_bioimageio(
        self, spec: str, out: str | os.PathLike[str], *, make_zip: bool = False
    ) -> Path:
        """Write a version as a BioImage Model Zoo package into ``out``; the rdf's path.

        The backend that loads the version writes the package (its factory's
        ``export_bioimageio(model_dir, out, spec=..., make_zip=...)``; ``unet`` has one).

        Raises
        ------
        ModelError
            When the backend cannot export to the Zoo format.
        """
        from liveseg.assembly import build_host
        from liveseg.config import LivesegConfig

        mv = self.resolve(spec)
        factory = build_host(LivesegConfig()).backends().get(mv.backend)
        export = getattr(factory, "export_bioimageio", None)
        if export is None:
            raise ModelError(
                f"model {mv.spec} (backend {mv.backend!r}) cannot be exported as a BioImage "
                f"Model Zoo package: its backend has no Zoo export (unet and bioimageio have one)"
            )
        return Path(export(mv.path, Path(out), spec=mv.spec, make_zip=make_zip))


def _prepare_for_backend(staging: Path, backend: str) -> bool:
    """Let the backend add its derived files (an ONNX export) to a version being written.

    The backend's factory may offer ``prepare_model_dir(dir)``; the core names no plugin,
    so it is found through the plugin host. A failure is logged, never fatal: backends
    also derive these files at first use. True when the backend wrote something.
    """
    from liveseg.assembly import build_host
    from liveseg.config import LivesegConfig

    factory = build_host(LivesegConfig()).backends().get(backend)
    prepare = getattr(factory, "prepare_model_dir", None)
    if prepare is None:
        return False
    try:
        return prepare(staging) is not None
    except Exception as exc:
        log.warning("backend %r could not prepare %s: %r", backend, staging, exc)
        return False


_MANAGED = frozenset(
    {
        "name",
        "onnx",
        "version",
        "backend",
        "weights",
        "weights_sha256",
        "parent",
        "parent_weights_sha256",
        "created",
        "metrics",
        "training",
        "note",
        "imported_from",
    }
)


def _guess_weights(directory: Path) -> str:
    """The weights file of a model directory whose model.json does not name it."""
    for name in ("weights.pt", "default.pt", "weights.safetensors"):
        if (directory / name).is_file():
            return name
    others = [p.name for p in directory.iterdir() if p.is_file() and p.suffix != ".json"]
    return others[0] if len(others) == 1 else "weights.pt"


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return "unknown"


def resolve_model(
    spec: str, home: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> ModelVersion:
    """The :class:`ModelVersion` for ``spec`` (``name@N``, ``name@alias``, ``name``).

    ``home`` is the data directory (``None``: ``--home``/``LIVESEG_HOME``/platform
    default via :func:`liveseg.home.resolve_home`). A spec may also be the path of a model
    directory (weights + model.json) outside the registry. Backends call this when they
    load weights, so every load checks the weights' sha256 against model.json (once);
    ``verify=False`` skips that where nothing is loaded.
    """
    from liveseg.home import resolve_home

    return ModelRegistry(resolve_home(home)).resolve(spec, verify=verify)
