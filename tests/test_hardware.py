"""Hardware problems are one line before acquisition: preflight in a child process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from liveseg.cli import main
from liveseg.testing import run_liveseg

pytestmark = pytest.mark.hardware

SEQUENCE = (
    "sequence: {time_plan: {interval: 0, loops: 2}}\npipeline: {steps: [{backend: threshold}]}\n"
)


def _config(tmp_path: Path, hardware: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(f"hardware:\n{hardware}\n{SEQUENCE}")
    return p


def _liveseg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command, in its own process, with a private home under ``cwd``."""
    return run_liveseg(*args, cwd=cwd, env={**os.environ, "LIVESEG_HOME": str(cwd / "home")})


def test_validate_config_names_device_and_property(tmp_path):
    bad = _config(tmp_path, "  mm_config: demo\n  properties: [[Camera, Mode, NoSuchMode]]")
    res = CliRunner().invoke(main, ["validate-config", str(bad)])
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert "Camera.Mode" in line and "'NoSuchMode'" in line and "Fluorescent Beads" in line
    res = CliRunner().invoke(main, ["validate-config", str(bad), "--no-hardware"])
    assert res.exit_code == 0, res.output
    unknown = _config(tmp_path, "  mm_config: demo\n  properties: [[Camera, Nope, 1]]", "u.yaml")
    res = CliRunner().invoke(main, ["validate-config", str(unknown)])
    assert res.exit_code == 2 and "device 'Camera' has no property 'Nope'" in res.output
    nodev = _config(tmp_path, "  mm_config: demo\n  properties: [[Cam, Mode, Noise]]", "d.yaml")
    res = CliRunner().invoke(main, ["validate-config", str(nodev)])
    assert res.exit_code == 2 and "no device 'Cam'" in res.output


@pytest.mark.slow
@pytest.mark.parametrize("case", ["property", "garbage", "adapter"])
def test_bad_hardware_is_one_line_before_the_run(tmp_path, case):
    if case == "property":
        cfg = _config(tmp_path, "  mm_config: demo\n  properties: [[Camera, Mode, NoSuchMode]]")
        expect = ("Camera.Mode", "NoSuchMode")
    else:
        mm = tmp_path / "rig.cfg"
        if case == "garbage":
            mm.write_bytes(b"\x00\x01 not a config\nrandom words\n")
            expect = (str(mm), "no devices")
        else:  # a .cfg naming an adapter this PC does not have
            mm.write_text("Device,Cam,NoSuchAdapter,FakeCamera\n")
            expect = (str(mm), "NoSuchAdapter")
        cfg = _config(tmp_path, f"  mm_config: {mm}")
    for args in (["validate-config", str(cfg)], ["run", str(cfg), "-o", str(tmp_path / "out")]):
        res = _liveseg(*args, cwd=tmp_path)
        assert res.returncode == 2, (args, res.returncode, res.stderr)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert all(e in lines[0] for e in expect), lines[0]
        assert "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "out").exists()  # no run directory for a run that never began


def test_home_and_output_folders_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = CliRunner()
    for cmd in (["queue", "list"], ["models", "list"]):
        res = r.invoke(main, [*cmd, "--home", str(blocker / "sub")])
        assert res.exit_code == 2, res.output
        assert f"cannot create liveseg home {blocker / 'sub'}" in res.output
        assert "--home DIR or $LIVESEG_HOME" in res.output
    cfg = _config(tmp_path, "  mm_config: demo")
    res = r.invoke(main, ["run", str(cfg), "-o", str(blocker / "run1"), "--home", str(tmp_path)])
    assert res.exit_code == 2 and str(blocker) in res.output and "Traceback" not in res.output


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write read-only folders"
)
def test_read_only_home_is_one_line(tmp_path):
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    try:
        res = CliRunner().invoke(main, ["queue", "list", "--home", str(home)])
        assert res.exit_code == 2 and f"liveseg home {home} is not writable" in res.output
    finally:
        home.chmod(0o700)
