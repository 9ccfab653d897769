"""Weights resolution and the offline behaviour: missing files fail fast and clearly."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from liveseg.errors import ModelError
from liveseg_cellpose import weights
from liveseg_cellpose.weights import cache_dir, network_available, resolve_weights


def _no_download(*args: object, **kwargs: object) -> None:
    raise AssertionError("a download was attempted")


@pytest.mark.timeout(20)
def test_missing_cpsam_offline_error_says_what_where_and_how(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(weights, "download_weights", _no_download)
    with pytest.raises(ModelError) as info:
        resolve_weights("cpsam", download=True)
    msg = str(info.value)
    assert str(empty_cache / "cpsam") in msg  # which file
    assert "CELLPOSE_LOCAL_MODELS_PATH" in msg and str(empty_cache) in msg  # where
    assert "huggingface.co/mouseland/cellpose-sam/resolve/main/cpsam" in msg  # how
    assert list(empty_cache.iterdir()) == []  # nothing half-written


@pytest.mark.timeout(30)
def test_real_network_probe_never_hangs(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without patching the network: offline → ModelError; online → a download is tried."""
    attempted = []
    monkeypatch.setattr(weights, "download_weights", lambda *a, **k: attempted.append(a))
    try:
        resolve_weights("cpsam", download=True, probe_timeout_s=3.0)
    except ModelError as exc:
        assert "does not exist" in str(exc)
        assert not attempted
    else:
        assert attempted


@pytest.mark.timeout(10)
def test_probe_gives_up_on_a_hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args: object, **kwargs: object) -> socket.socket:
        time.sleep(30)
        raise OSError

    monkeypatch.setattr(socket, "create_connection", hang)
    assert network_available(timeout_s=0.3) is False


def test_download_false_never_probes(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "network_available", _no_download)
    with pytest.raises(ModelError, match="cpsam"):
        resolve_weights("cpsam", download=False)


def test_cache_dir_follows_cellpose_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELLPOSE_LOCAL_MODELS_PATH", raising=False)
    assert cache_dir() == Path.home() / ".cellpose" / "models"
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    assert cache_dir() == tmp_path
    assert cache_dir(tmp_path / "x") == tmp_path / "x"


def test_named_model_found_in_cache_and_model_dir(empty_cache: Path, tmp_path: Path) -> None:
    (empty_cache / "cpsam").write_bytes(b"w")
    assert resolve_weights("cpsam") == empty_cache / "cpsam"
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "cpsam").write_bytes(b"w")
    assert resolve_weights("cpsam", model_dir=other) == other / "cpsam"


def test_gui_user_model_listed_but_missing(empty_cache: Path) -> None:
    (empty_cache / "gui_models.txt").write_text("my_cells\n")
    with pytest.raises(ModelError, match="my_cells"):
        resolve_weights("my_cells", download=True)


def test_unknown_name_is_an_error_not_a_silent_cpsam_download(empty_cache: Path) -> None:
    with pytest.raises(ModelError, match=r"unknown cellpose model 'cyto9'.*cpsam"):
        resolve_weights("cyto9", download=True)


def test_paths_and_model_directories(tmp_path: Path) -> None:
    f = tmp_path / "fine.pt"
    f.write_bytes(b"w")
    assert resolve_weights(str(f)) == f
    with pytest.raises(ModelError, match="does not exist"):
        resolve_weights(str(tmp_path / "missing.pt"))
    mdir = tmp_path / "exported"
    mdir.mkdir()
    (mdir / "model.json").write_text('{"weights": "w.pt", "backend": "cellpose"}')
    with pytest.raises(ModelError, match="missing"):
        resolve_weights(str(mdir))
    (mdir / "w.pt").write_bytes(b"w")
    assert resolve_weights(str(mdir)) == mdir / "w.pt"


def test_registry_spec_resolves_through_liveseg_models(tmp_path: Path) -> None:
    from liveseg.models import ModelRegistry

    src = tmp_path / "weights.pt"
    src.write_bytes(b"w")
    mv = ModelRegistry(tmp_path / "home").add_version("cells", src, backend="cellpose")
    assert resolve_weights("cells@1", home=tmp_path / "home") == mv.weights_path
    with pytest.raises(ModelError):
        resolve_weights("cells@7", home=tmp_path / "home")
