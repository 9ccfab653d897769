"""BioImage Model Zoo packages: export, bioimageio.core's own test offline, import, round trip.

Every step goes through the commands a person types (``liveseg models export SPEC
--format bioimageio``, ``liveseg models import``, ``liveseg segment --config``) and the
package is checked by ``bioimageio.core``'s model test in a separate Python process
whose sockets refuse to connect, so any attempt to reach the network is counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from click.testing import CliRunner

from liveseg.cli import main
from liveseg.metrics import average_precision
from liveseg.models import ModelRegistry, file_sha256
from liveseg.synthetic import generate

pytest.importorskip("liveseg_torch")

_OFFLINE_TEST = r"""
import json, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:1]))
    raise OSError("network disabled by the test")
socket.create_connection = refuse
socket.socket.connect = lambda self, address: refuse(address)
from bioimageio.core import test_model
for source in sys.argv[1:]:
    summary = test_model(source)
    print(json.dumps({
        "source": source,
        "status": summary.status,
        "attempts": attempts,
        "details": [[d.name, d.status, [e.msg for e in d.errors]] for d in summary.details],
    }))
"""


def _cli(home: Path, *args: str) -> tuple[int, str]:
    out = CliRunner().invoke(main, [*args, "--home", str(home)])
    return out.exit_code, out.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``liveseg models export nuclei --format bioimageio -o pkg --zip`` (once per module)."""
    root = tmp_path_factory.mktemp("bmz")
    code, output = _cli(
        root / "home", "models", "export", "nuclei", "--format", "bioimageio", "-o",
        str(root / "pkg"), "--zip",
    )  # fmt: skip
    assert code == 0, output
    return root / "pkg"


def _copy(pkg: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in pkg.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_export_writes_a_zoo_package(exported):
    rdf = yaml.safe_load((exported / "rdf.yaml").read_text(encoding="utf-8"))
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5.")
    assert set(rdf["weights"]) == {"onnx", "torchscript"}
    for entry in rdf["weights"].values():
        assert file_sha256(exported / entry["source"]) == entry["sha256"]
    pre = [step["id"] for step in rdf["inputs"][0]["preprocessing"]]
    assert pre == ["scale_range", "clip"]
    assert rdf["inputs"][0]["preprocessing"][0]["kwargs"]["max_percentile"] == 99.8
    channels = rdf["outputs"][0]["axes"][1]["channel_names"]
    assert channels == ["foreground", "distance"]
    assert rdf["config"]["liveseg"]["decoder"]["name"] == "watershed"
    assert rdf["license"] == "BSD-3-Clause" and "liveseg.synthetic" in rdf["cite"][0]["text"]
    readme = (exported / rdf["documentation"]).read_text(encoding="utf-8")
    assert "post-processing, outside the network" in readme
    assert (exported / "cover.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    x = np.load(exported / "test_input.npy")
    y = np.load(exported / "test_output.npy")
    assert x.shape[:2] == (1, 1) and y.shape == (1, 2, *x.shape[2:])
    with zipfile.ZipFile(exported.with_suffix(".zip")) as zf:
        assert sorted(zf.namelist()) == sorted(p.name for p in exported.iterdir())


@pytest.mark.slow
def test_bioimageio_core_test_passes_offline(exported, tmp_path):
    """bioimageio.core's own model test passes without a single network connection."""
    env = {
        "BIOIMAGEIO_CACHE_PATH": str(tmp_path / "cache"),
        "PATH": "",
        "PYTHONWARNINGS": "ignore",
    }
    sources = [str(exported / "rdf.yaml"), str(exported.with_suffix(".zip"))]
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_TEST, *sources],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "HOME": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["source"] for r in reports] == sources
    for report in reports:
        failed = [d for d in report["details"] if d[1] != "passed"]
        assert report["status"] == "passed", failed
        assert report["attempts"] == []
        names = " ".join(d[0] for d in report["details"])
        assert "Reproduce test outputs from test inputs (onnx)" in names
        assert "Reproduce test outputs from test inputs (torchscript)" in names


@pytest.mark.slow
def test_round_trip_segments_like_the_original(exported, tmp_path):
    """Import the zip, segment a generated frame with both models: AP@0.5 >= 0.99."""
    home = tmp_path / "home"
    code, output = _cli(home, "models", "import", str(exported.with_suffix(".zip")))
    assert code == 0, output
    assert "as zoo-nuclei@1 (decoder watershed)" in output
    mv = ModelRegistry(home).resolve("zoo-nuclei")
    source = mv.source
    assert source is not None and source["kind"] == "bioimageio"
    assert source["source"] == str(exported.with_suffix(".zip").resolve())
    assert source["rdf_sha256"] == file_sha256(exported / "rdf.yaml")
    assert source["name"] == "liveseg nuclei 1"

    image, truth = generate(31, (300, 260), "train")  # not a multiple of 8: padded
    tifffile.imwrite(tmp_path / "frame.tif", image)
    labels = {}
    for model, step in (("unet", "unet"), ("zoo", "bioimageio")):
        model_spec = "nuclei" if model == "unet" else "zoo-nuclei"
        config = tmp_path / f"{model}.yaml"
        config.write_text(f"steps:\n  - backend: {step}\n    params: {{model: {model_spec}}}\n")
        out = tmp_path / f"out-{model}"
        code, output = _cli(
            home, "segment", str(tmp_path / "frame.tif"), "-o", str(out), "--config", str(config)
        )
        assert code == 0, output
        labels[model] = tifffile.imread(out / "frame_labels.tif")
    assert labels["unet"].max() > 10
    agreement = average_precision(labels["unet"], labels["zoo"], thresholds=(0.5,))
    assert agreement.ap[0.5] >= 0.99, agreement
    # and it still segments the frame itself as well as the original does
    ap_unet = average_precision(truth, labels["unet"], thresholds=(0.5,)).ap[0.5]
    ap_zoo = average_precision(truth, labels["zoo"], thresholds=(0.5,)).ap[0.5]
    assert abs(ap_unet - ap_zoo) <= 0.01


def test_tampered_weights_are_refused(exported, tmp_path):
    pkg = _copy(exported, tmp_path / "pkg")
    onnx = bytearray((pkg / "model.onnx").read_bytes())
    onnx[-100] ^= 0xFF
    (pkg / "model.onnx").write_bytes(bytes(onnx))
    code, output = _cli(tmp_path / "home", "models", "import", str(pkg / "rdf.yaml"))
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "model.onnx: sha256" in lines[0] and "weights.onnx" in lines[0]
    assert "nothing was imported" in lines[0]
    assert ModelRegistry(tmp_path / "home").names() == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text + "\n  - [unclosed\n", "is not valid YAML"),
        (lambda text: text.replace("format_version: 0.5.4", "format_version: 0.4.10"),
         "format_version '0.4.10' is not 0.5.x"),
        (lambda text: text.replace("type: model", "type: dataset"), "expected 'model'"),
        (lambda text: text.replace("test_input.npy", "../outside.npy"),
         "must be a file in the package folder itself"),
        (lambda text: text.replace("source: model.onnx", "source: missing.onnx"),
         "names 'missing.onnx', which is missing"),
        (lambda text: "just a string\n", "expected a YAML mapping"),
    ],
    ids=["yaml", "old-format", "not-a-model", "outside", "missing-file", "not-a-mapping"],
)  # fmt: skip
def test_malformed_rdf_gives_one_line_error(exported, tmp_path, edit, message):
    pkg = _copy(exported, tmp_path / "pkg")
    rdf = pkg / "rdf.yaml"
    rdf.write_text(edit(rdf.read_text(encoding="utf-8")), encoding="utf-8")
    code, output = _cli(tmp_path / "home", "models", "import", str(pkg))
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], output
    assert "Traceback" not in output


def test_decoder_is_chosen_from_the_outputs(exported, tmp_path):
    """A Zoo model without liveseg's config: the decoder follows its output channels."""
    pkg = _copy(exported, tmp_path / "pkg")
    rdf = yaml.safe_load((pkg / "rdf.yaml").read_text(encoding="utf-8"))
    del rdf["config"]
    (pkg / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    home = tmp_path / "home"
    code, output = _cli(home, "models", "import", str(pkg), "--name", "plain")
    assert code == 0, output
    assert ModelRegistry(home).resolve("plain").card["decoder"]["name"] == "watershed"
    code, output = _cli(
        home, "models", "import", str(pkg), "--name", "fg", "--decoder", "threshold"
    )
    assert code == 0 and "(decoder threshold)" in output
    code, output = _cli(home, "models", "clone", "plain@1")
    assert code == 0 and "plain@2" in output
    clone = ModelRegistry(home).resolve("plain@2")
    assert clone.source == ModelRegistry(home).resolve("plain@1").source
    assert (clone.path / "rdf.yaml").read_bytes() == (pkg / "rdf.yaml").read_bytes()
    code, output = _cli(home, "models", "list", "--json")
    sources = {row["spec"]: row["source"] for row in json.loads(output)}
    assert sources["plain@1"]["kind"] == "bioimageio"
    assert sources["plain@1"]["source"] == str(pkg.resolve())

    rdf["outputs"][0]["axes"][1]["channel_names"] = ["flow_y", "flow_x", "cellprob"]
    (pkg / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    code, output = _cli(home, "models", "import", str(pkg), "--name", "flows")
    assert code == 2 and "outputs flows (a cellpose model)" in output
    code, output = _cli(home, "models", "import", str(pkg), "--decoder", "nope")
    assert code == 2 and "unknown decoder 'nope'" in output


def test_changed_rdf_in_the_registry_is_refused_at_load(exported, tmp_path):
    """The registry records the rdf's sha256; a version whose rdf changed does not load."""
    home = tmp_path / "home"
    code, output = _cli(home, "models", "import", str(exported), "--name", "zoo")
    assert code == 0, output
    mv = ModelRegistry(home).resolve("zoo")
    rdf = mv.path / "rdf.yaml"
    mv.path.chmod(0o755)
    rdf.chmod(0o644)
    rdf.write_text(rdf.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    config = tmp_path / "zoo.yaml"
    config.write_text("steps:\n  - backend: bioimageio\n    params: {model: zoo}\n")
    image, _ = generate(3, (64, 64), "train")
    tifffile.imwrite(tmp_path / "f.tif", image)
    code, output = _cli(
        home, "segment", str(tmp_path / "f.tif"), "-o", str(tmp_path / "out"), "--config",
        str(config),
    )  # fmt: skip
    assert code != 0
    assert "was changed after it was imported" in output


def test_export_needs_a_backend_that_can_write_the_zoo_format(tmp_path):
    home = tmp_path / "home"
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not a unet")
    ModelRegistry(home).add_version("thr", weights, backend="threshold")
    code, output = _cli(
        home, "models", "export", "thr@1", "--format", "bioimageio", "-o", str(tmp_path / "o")
    )
    assert code == 2
    assert output.count("\n") == 1 and "cannot be exported as a BioImage Model Zoo" in output
    assert not (tmp_path / "o").exists()


def _foreign_package(folder: Path, classes: bool) -> Path:
    """A Zoo package as another tool writes it: an ONNX graph, an rdf, no liveseg config.

    The network is ``sigmoid(20 * (x - 0.5))`` on the percentile-normalised image: one
    probability channel, or (``classes``) ``[1 - p, p]`` named background and nucleus.
    """
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Sub", ["image", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p" if classes else "output"]),
    ]
    if classes:
        nodes += [
            helper.make_node("Sub", ["one", "p"], ["q"]),
            helper.make_node("Concat", ["q", "p"], ["output"], axis=1),
        ]
    consts = [
        helper.make_tensor(n, TensorProto.FLOAT, [], [v])
        for n, v in (("half", 0.5), ("gain", 20.0), ("one", 1.0))
    ]
    dims = ["batch", 1, "y", "x"]
    graph = helper.make_graph(
        nodes,
        "foreign",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", None, "y", "x"])],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir()
    onnx.save(model, folder / "weights.onnx")
    channels = ["background", "nucleus"] if classes else ["probability"]
    rdf = {
        "type": "model",
        "format_version": "0.5.4",
        "name": "foreign blobs",
        "description": "a threshold network written by hand",
        "authors": [{"name": "someone else"}],
        "license": "MIT",
        "inputs": [
            {
                "id": "raw",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["raw"]},
                    {"type": "space", "id": "y", "size": {"min": 16, "step": 16}},
                    {"type": "space", "id": "x", "size": {"min": 16, "step": 16}},
                ],
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {"axes": ["y", "x"], "min_percentile": 0.5,
                                   "max_percentile": 99.5},
                    }
                ],
            }
        ],
        "outputs": [
            {
                "id": "out",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": channels},
                    {"type": "space", "id": "y", "size": {"tensor_id": "raw", "axis_id": "y"}},
                    {"type": "space", "id": "x", "size": {"tensor_id": "raw", "axis_id": "x"}},
                ],
            }
        ],
        "weights": {
            "onnx": {
                "source": "weights.onnx",
                "sha256": file_sha256(folder / "weights.onnx"),
                "opset_version": 17,
            }
        },
    }  # fmt: skip
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    return folder


@pytest.mark.parametrize("classes", [False, True], ids=["probability", "classes"])
def test_a_foreign_zoo_model_segments(tmp_path, classes):
    """Someone else's package: decoder from its channels, padded to its size step."""
    from liveseg.testing import disk_image

    home = tmp_path / "home"
    pkg = _foreign_package(tmp_path / "pkg", classes)
    code, output = _cli(home, "models", "import", str(pkg / "rdf.yaml"), "--name", "blobs")
    assert code == 0, output
    assert f"(decoder {'classes' if classes else 'threshold'})" in output
    centers = [(20, 20), (20, 70), (60, 45), (75, 90)]
    image, truth = disk_image((90, 110), centers, radius=7)  # not a multiple of 16
    tifffile.imwrite(tmp_path / "blobs.tif", image)
    config = tmp_path / "blobs.yaml"
    config.write_text("steps:\n  - backend: bioimageio\n    params: {model: blobs}\n")
    out = tmp_path / "out"
    code, output = _cli(
        home, "segment", str(tmp_path / "blobs.tif"), "-o", str(out), "--config", str(config)
    )
    assert code == 0, output
    labels = tifffile.imread(out / "blobs_labels.tif")
    assert average_precision(truth, labels, thresholds=(0.9,)).ap[0.9] == 1.0
    if classes:
        class_map = tifffile.imread(out / "blobs_classes.tif")
        assert set(np.unique(class_map)) == {0, 1}
        assert np.array_equal(class_map > 0, truth > 0)


def test_an_imported_package_exports_back_unchanged(exported, tmp_path):
    home = tmp_path / "home"
    code, output = _cli(home, "models", "import", str(exported), "--name", "zoo")
    assert code == 0, output
    again = tmp_path / "again"
    code, output = _cli(
        home, "models", "export", "zoo@1", "--format", "bioimageio", "-o", str(again), "--zip"
    )
    assert code == 0, output
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in exported.iterdir())
    for f in exported.iterdir():
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name
    assert again.with_suffix(".zip").is_file()
