"""Model registry: versions, aliases, clones that never touch the parent."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from liveseg.errors import ModelError
from liveseg.models import ModelRegistry, file_sha256, parse_spec, resolve_model


def _weights(tmp_path: Path, payload: bytes = b"weights-v1") -> Path:
    p = tmp_path / "src" / "weights.pt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(payload)
    return p


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(d.iterdir())}


def test_parse_spec():
    assert parse_spec("nuclei@3") == ("nuclei", "3")
    assert parse_spec("nuclei@prod") == ("nuclei", "prod")
    assert parse_spec("nuclei") == ("nuclei", None)
    with pytest.raises(ModelError, match="invalid model spec"):
        parse_spec("bad name@1")
    with pytest.raises(ModelError, match="neither"):
        parse_spec("nuclei@!x")


def test_add_resolve_promote(tmp_path):
    reg = ModelRegistry(tmp_path / "home")
    v1 = reg.add_version("nuclei", _weights(tmp_path), backend="unet", card={"arch": {"c": 8}})
    assert v1.spec == "nuclei@1"
    assert v1.weights_path.read_bytes() == b"weights-v1"
    assert v1.card["weights_sha256"] == file_sha256(v1.weights_path)
    assert v1.backend == "unet"
    # No alias yet: plain name and @prod behave as documented.
    assert reg.resolve("nuclei").version == 1
    with pytest.raises(ModelError, match="no alias 'prod'"):
        reg.resolve("nuclei@prod")
    reg.promote("nuclei@1", reason="first")
    assert resolve_model("nuclei@prod", tmp_path / "home").version == 1
    with pytest.raises(ModelError, match=r"nuclei@7 does not exist"):
        reg.resolve("nuclei@7")
    with pytest.raises(ModelError, match="no model named 'other'"):
        reg.resolve("other@1")
    hist = reg.history("nuclei")
    assert hist[-1]["event"] == "promote" and hist[-1]["reason"] == "first"


def test_clone_copies_and_parent_is_never_written(tmp_path):
    reg = ModelRegistry(tmp_path / "home")
    parent = reg.add_version("nuclei", _weights(tmp_path), backend="unet", card={"arch": {"c": 8}})
    reg.promote(parent.spec)
    before = _hashes(parent.path)
    child = reg.clone("nuclei@prod")
    assert child.spec == "nuclei@2"
    assert child.parent == "nuclei@1"
    assert child.card["arch"] == {"c": 8}  # unmanaged fields carry over
    assert child.card["parent_weights_sha256"] == parent.card["weights_sha256"]
    assert child.weights_path != parent.weights_path
    # Files are read-only; writing through the registry API never touches the parent.
    reg.promote(child.spec)
    reg.record(child, "validate", {"ap50": 0.5})
    assert _hashes(parent.path) == before
    assert all(not (p.stat().st_mode & 0o222) for p in parent.path.iterdir())  # read-only
    other = reg.clone("nuclei@1", name="mine")
    assert other.spec == "mine@1" and other.parent == "nuclei@1"


def test_export_import_roundtrip(tmp_path):
    reg = ModelRegistry(tmp_path / "home")
    v = reg.add_version("cp", _weights(tmp_path, b"cellpose"), backend="cellpose")
    out = reg.export(v.spec, tmp_path / "export")
    assert json.loads((out / "model.json").read_text())["backend"] == "cellpose"
    reg2 = ModelRegistry(tmp_path / "home2")
    imported = reg2.import_dir(out, name="cp2", promote=True)
    assert imported.weights_path.read_bytes() == b"cellpose"
    assert reg2.resolve("cp2@prod").spec == "cp2@1"
    with pytest.raises(ModelError, match=r"no model\.json"):
        reg2.import_dir(tmp_path / "src")


def test_directory_spec(tmp_path):
    reg = ModelRegistry(tmp_path / "home")
    v = reg.add_version("nuclei", _weights(tmp_path), backend="unet")
    mv = reg.resolve(str(v.path))
    assert mv.weights_path == v.weights_path


def _add_many(home: str, payload: bytes, n: int) -> None:
    reg = ModelRegistry(home)
    src = Path(home).parent / f"w-{payload.decode()}.pt"
    src.write_bytes(payload)
    for _ in range(n):
        reg.add_version("race", src, backend="unet")


def test_concurrent_versions_are_unique(tmp_path):
    home = str(tmp_path / "home")
    ModelRegistry(home)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(home, p, 5)) for p in (b"a", b"b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    reg = ModelRegistry(home)
    assert reg.versions("race") == list(range(1, 11))
    payloads = sorted(reg.get("race", v).weights_path.read_bytes() for v in range(1, 11))
    assert payloads == [b"a"] * 5 + [b"b"] * 5
    leftovers = (tmp_path / "home" / "models" / "race").iterdir()
    assert not [p for p in leftovers if "staging" in p.name]


def test_models_cli(tmp_path):
    from click.testing import CliRunner

    from liveseg.cli import main

    home = str(tmp_path / "home")
    src = tmp_path / "m"
    src.mkdir()
    (src / "weights.pt").write_bytes(b"w")
    (src / "model.json").write_text(json.dumps({"backend": "unet", "arch": "x"}))
    r = CliRunner()
    res = r.invoke(
        main, ["models", "import", str(src), "--name", "nuclei", "--promote", "--home", home]
    )
    assert res.exit_code == 0, res.output
    assert "nuclei@1" in res.output
    res = r.invoke(main, ["models", "clone", "nuclei@prod", "--home", home])
    assert res.exit_code == 0 and "nuclei@2" in res.output
    res = r.invoke(main, ["models", "promote", "nuclei@2", "--home", home])
    assert res.exit_code == 0 and "nuclei@prod → nuclei@2" in res.output
    res = r.invoke(main, ["models", "list", "--json", "--home", home])
    rows = [x for x in json.loads(res.output) if not x["shipped"]]
    assert [(x["spec"], x["aliases"], x["parent"]) for x in rows] == [
        ("nuclei@1", [], None),
        ("nuclei@2", ["prod"], "nuclei@1"),
    ]
    res = r.invoke(main, ["models", "show", "nuclei@prod", "--home", home])
    assert json.loads(res.output)["arch"] == "x"
    res = r.invoke(
        main, ["models", "export", "nuclei@1", "-o", str(tmp_path / "ex"), "--home", home]
    )
    assert res.exit_code == 0 and (tmp_path / "ex" / "weights.pt").read_bytes() == b"w"
    res = r.invoke(main, ["models", "show", "nope@1", "--home", home])
    assert res.exit_code == 2 and "no model named 'nope'" in res.output


# -- model files you can trust -----------------------------------------------------------
def _model_dir(tmp_path: Path, card: dict, name: str = "incoming") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "weights.pt").write_bytes(b"real weights")
    (d / "model.json").write_text(json.dumps({"backend": "unet", **card}))
    return d


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_import_copies_nothing_from_outside_the_folder(tmp_path, where):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"private key")
    d = _model_dir(tmp_path, {})
    if where == "parent":
        named = "../secret.txt"
    elif where == "absolute":
        named = str(secret)
    else:
        (d / "link.pt").symlink_to(secret)
        named = "link.pt"
    card = json.loads((d / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**card, "weights": named}))
    home = tmp_path / "home"
    reg = ModelRegistry(home)
    with pytest.raises(ModelError, match=r"outside the model folder|not an absolute path") as err:
        reg.import_dir(d, name="stolen")
    assert named in str(err.value)
    assert reg.versions("stolen") == []
    copied = [p for p in home.rglob("*") if p.is_file() and p.read_bytes() == b"private key"]
    assert copied == []


def test_tampered_weights_are_refused_on_load(tmp_path):
    home = tmp_path / "home"
    reg = ModelRegistry(home)
    mv = reg.add_version("nuclei", _weights(tmp_path), backend="unet")
    reg.promote(mv.spec)
    good = mv.card["weights_sha256"]
    # Someone overwrites the weights in place (a sync tool, a script, a person).
    mv.weights_path.chmod(0o644)
    mv.weights_path.write_bytes(b"weights-v2")
    bad = file_sha256(mv.weights_path)
    for load in (lambda: reg.resolve("nuclei@prod"), lambda: resolve_model("nuclei@1", home)):
        with pytest.raises(ModelError, match="changed after it was registered") as err:
            load()
        assert str(mv.weights_path) in str(err.value)
        assert good in str(err.value) and bad in str(err.value)
    # Listing does not load weights, so it still works and shows the version.
    assert reg.resolve("nuclei@1", verify=False).spec == "nuclei@1"
    from click.testing import CliRunner

    from liveseg.cli import main

    res = CliRunner().invoke(main, ["models", "show", "nuclei@1", "--home", str(home)])
    assert res.exit_code == 2 and good in res.output and bad in res.output


def test_import_refuses_weights_that_do_not_match_their_card(tmp_path):
    d = _model_dir(tmp_path, {"weights_sha256": "0" * 64})
    reg = ModelRegistry(tmp_path / "home")
    with pytest.raises(ModelError, match=r"does not match model\.json"):
        reg.import_dir(d, name="x")
    assert reg.versions("x") == []


def test_names_are_validated(tmp_path):
    from click.testing import CliRunner

    from liveseg.cli import main

    home = tmp_path / "home"
    reg = ModelRegistry(home)
    reg.add_version("nuclei", _weights(tmp_path), backend="unet")
    for bad in ("prod@2", "a/b", "../up", "", "sp ace"):
        with pytest.raises(ModelError, match="invalid model name"):
            reg.add_version(bad, _weights(tmp_path), backend="unet")
    res = CliRunner().invoke(
        main, ["models", "clone", "nuclei@1", "--name", "prod@2", "--home", str(home)]
    )
    assert res.exit_code == 2 and "invalid model name 'prod@2'" in res.output
    assert reg.names() == ["nuclei"]


def test_version_directories_are_read_only(tmp_path):
    import stat

    reg = ModelRegistry(tmp_path / "home")
    mv = reg.add_version("nuclei", _weights(tmp_path), backend="unet")
    for p in (mv.path, *mv.path.iterdir()):
        mode = p.stat().st_mode
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), p
    clone = reg.clone("nuclei@1")  # reading a sealed version still works
    assert clone.weights_path.read_bytes() == b"weights-v1"


def test_no_posix_only_modules_on_user_paths():
    """Micro-Manager rigs run Windows: nothing liveseg ships may need fcntl, fork, …"""
    import re

    root = Path(__file__).resolve().parents[1]
    sources = [*(root / "src").rglob("*.py"), *(root / "plugins").glob("*/src/**/*.py")]
    assert len(sources) > 20
    posix_only = re.compile(
        r"^\s*(import|from)\s+(fcntl|termios|pwd|grp|resource)\b|os\.fork\(|os\.getuid\(|"
        r"[\"']/tmp/",
        re.M,
    )
    hits = [f"{p.relative_to(root)}" for p in sources if posix_only.search(p.read_text())]
    assert hits == []


@pytest.mark.slow
def test_unet_refuses_a_rewritten_checkpoint(tmp_path):
    """The observed case: a still-valid checkpoint with other bytes used to run (empty masks)."""
    pytest.importorskip("liveseg_torch")
    import torch

    from liveseg.config import StepConfig
    from liveseg.pipeline import Pipeline, StepContext
    from liveseg.plugins import PluginHost
    from liveseg_torch.weights import load_checkpoint, save_checkpoint

    home = tmp_path / "home"
    reg = ModelRegistry(home)
    mv = reg.resolve("default@prod")  # seeds the shipped model
    ckpt = load_checkpoint(mv.weights_path)
    with torch.no_grad():
        for p in ckpt.model.parameters():
            p.zero_()
    mv.weights_path.chmod(0o644)
    save_checkpoint(ckpt, mv.weights_path)
    load_checkpoint(mv.weights_path)  # still a valid archive
    factories = PluginHost().backends()
    steps = [StepConfig(backend="unet", params={"model": mv.spec})]
    with pytest.raises(ModelError, match=r"default@1: weights file .* was changed"):
        Pipeline.build(steps, factories, StepContext(home=home))
