"""The README is executable: every documented ``liveseg`` command parses, and runs.

Every line of a ``bash`` block of README.md that starts with ``liveseg`` or
``.venv/bin/liveseg`` is a command a user will type. The fast test checks that each one
still matches the CLI (commands, options, arguments, files it names); the slow test runs
them all, in README order, in a fresh folder holding the inputs the README names
(``img1.tif``, ``a.tif``, ``ref/`` …) and a private ``LIVESEG_HOME``. Interactive
windows (``gui``, ``annotate``) are only parsed: their tests click the real windows.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from liveseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

INTERACTIVE = {
    "gui": "opens the live window (tests/gui click it)",
    "annotate": "opens a napari window and waits for it to close",
}
"""Commands the slow test parses but does not run, and why."""

FAST = {"--epochs 30": "--epochs 1", "--guard-images": "--guard-images"}
"""Substitutions that keep the documented command but bound its run time."""


def readme_commands(text: str | None = None) -> list[tuple[int, str]]:
    """(line number, command) of every liveseg line in the README's shell blocks."""
    lines = (text if text is not None else README.read_text(encoding="utf-8")).splitlines()
    found = []
    in_block = False
    shell = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_block = not in_block
            shell = in_block and stripped[3:].strip() in ("bash", "sh", "shell", "console")
            continue
        if not (in_block and shell):
            continue
        command = re.sub(r"\s+#.*$", "", stripped)
        if command.startswith("$ "):
            command = command[2:]
        if re.match(r"^(\.venv/bin/)?liveseg(\s|$)", command):
            found.append((number, command))
    return found


def _args(command: str) -> list[str]:
    args = shlex.split(command)[1:]
    return args


def _resolve(args: list[str]) -> click.Command:
    """Parse ``args`` the way ``liveseg`` does, down to the leaf command (no execution)."""
    ctx = click.Context(main, info_name="liveseg")
    cmd: click.Command = main
    rest = list(args)
    name = "liveseg"
    while isinstance(cmd, click.Group):
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None and name is not None, f"unknown command in {args}"
        cmd = sub
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd, info_name=name, parent=ctx)
    cmd.make_context(name, list(rest), parent=ctx)
    return cmd


# -- the inputs the README names ------------------------------------------------------------
def _nuclei(seed: int, shape=(128, 128)) -> tuple[np.ndarray, np.ndarray]:
    from liveseg.synthetic import generate

    img, lab = generate(seed, shape, "sparse")
    return np.asarray(img), np.asarray(lab, dtype=np.uint32)


def _ome_zarr_plate(path: Path) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    for k, well in enumerate(("A1", "A2")):
        img, _ = _nuclei(300 + k)
        group = root.create_group(well)
        group.create_array("0", data=img[None])
        axes = [{"name": "c", "type": "channel"}] + [
            {"name": n, "type": "space", "unit": "micrometer"} for n in ("y", "x")
        ]
        scale = {"type": "scale", "scale": [1.0, 0.65, 0.65]}
        group.attrs["ome"] = {
            "version": "0.5",
            "multiscales": [
                {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [scale]}]}
            ],
        }


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A folder with what the README's commands expect, as the current directory."""
    from skimage.io import imsave

    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copytree(ROOT / "configs", ws / "configs")
    shutil.copyfile(ROOT / "configs" / "demo.yaml", ws / "my.yaml")
    (ws / "my.yaml").write_text(
        (ws / "my.yaml").read_text().replace("sequences/demo.yaml", "configs/sequences/demo.yaml")
    )
    img1, _ = _nuclei(1)
    tifffile.imwrite(ws / "img1.tif", img1)
    img2, _ = _nuclei(2)
    scaled = (img2.astype(np.float64) - img2.min()) / max(float(np.ptp(img2)), 1e-9)
    imsave(ws / "img2.png", (scaled * 255).astype(np.uint8), check_contrast=False)
    for name, seed in (("a", 11), ("b", 12)):
        img, lab = _nuclei(seed)
        tifffile.imwrite(ws / f"{name}.tif", img)
        tifffile.imwrite(ws / f"{name}_labels.tif", lab)
    for folder, seeds in (("ref", (21, 22)), ("images", (31, 32))):
        (ws / folder).mkdir()
        for seed in seeds:
            img, lab = _nuclei(seed)
            tifffile.imwrite(ws / folder / f"n{seed}.tif", img)
            if folder == "ref":
                tifffile.imwrite(ws / folder / f"n{seed}_labels.tif", lab)
    _ome_zarr_plate(ws / "plate.ome.zarr")
    from liveseg.synthetic.mosaic import write_nuclei_mosaic

    write_nuclei_mosaic(ws / "slide.ome.zarr", (512, 768), chunk=256)
    movie = np.stack([np.stack([_nuclei(40 + t)[0]] * 2) for t in range(3)])  # (t, c, y, x)
    meta = {"axes": "TCYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65}
    tifffile.imwrite(
        ws / "movie.ome.tif",
        movie,
        ome=True,
        metadata=meta | {"Channel": {"Name": ["DAPI", "GFP"]}},
    )
    monkeypatch.chdir(ws)
    monkeypatch.setenv("LIVESEG_HOME", str(ws / "home"))
    return ws


def test_readme_commands_are_found():
    commands = readme_commands()
    names = {_args(c)[0] for _, c in commands}
    assert {"run", "segment", "queue", "retrain", "validate", "batch"} <= names
    sample = "```bash\nliveseg queue list   # c\n```\n```yaml\nliveseg: no\n```\n"
    assert readme_commands(sample) == [(2, "liveseg queue list")]
    with pytest.raises(click.UsageError):  # what a README example with a stale option hits
        _resolve(["queue", "list", "--no-such-option"])


def test_every_readme_command_matches_the_cli(workspace):
    """Commands, options, arity and the files they name, without running anything."""
    (workspace / "runs" / "exp1").mkdir(parents=True)  # made by the `run --output` line
    (workspace / "fix").mkdir()  # made by `queue export -o fix/`
    (workspace / "nuclei-zoo.zip").write_bytes(b"")  # made by `models export ... --zip`
    for number, command in readme_commands():
        try:
            _resolve(_args(command))
        except (click.UsageError, click.BadParameter, AssertionError) as exc:
            pytest.fail(f"README.md:{number}: `{command}` no longer matches the CLI: {exc}")


@pytest.mark.slow
@pytest.mark.hardware
def test_every_readme_command_runs(workspace):
    """Run the README top to bottom, as a new user would (interactive windows excepted)."""
    runner = CliRunner()

    def liveseg(args: list[str], where: str) -> str:
        res = runner.invoke(main, args, catch_exceptions=False)
        assert res.exit_code == 0, f"{where}: `liveseg {shlex.join(args)}`:\n{res.output}"
        return res.output

    # What the README says in prose before these blocks: the model the examples name.
    liveseg(["models", "import-default", "--name", "nuclei"], "retraining step 3")
    ran = []
    for number, command in readme_commands():
        args = _args(command)
        if args[0] in INTERACTIVE:
            _resolve(args)
            continue
        for long, short in FAST.items():
            command = command.replace(long, short)
        args = _args(command)
        if args[0] == "retrain":
            args += ["--guard-images", "2", "--base-items", "1"]
        if args[:2] == ["queue", "export"]:
            # Something to export and correct: flag a frame of the first demo run.
            run_dir = sorted(p for p in (workspace / "runs").iterdir() if p.is_dir())[0]
            liveseg(["flag", str(run_dir), "--frame", "1", "--reason", "README"], "setup")
        out = liveseg(args, f"README.md:{number}")
        ran.append((args[0], out))
    done = {name for name, _ in ran}
    assert {"run", "segment", "resegment", "queue", "retrain", "validate", "batch"} <= done
    assert (workspace / "out" / "img1_labels.tif").is_file()
    assert (workspace / "runs" / "exp1" / "frames.csv").is_file()
    validate_out = next(out for name, out in ran if name == "validate")
    assert "nuclei@1:" in validate_out and "nuclei@prod (" in validate_out
