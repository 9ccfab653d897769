import pytest

from liveseg.config import apply_overrides, load_config, parse_config
from liveseg.errors import ConfigError


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nhardware:\n  mm_config: demo\n  exposure_ms: [1, 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert ":5:" in msg or ":4:" in msg
    assert "malformed YAML" in msg


def test_unknown_field_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nbacklog:\n  polcy: all\n")
    with pytest.raises(ConfigError, match=r"backlog\.polcy: unknown field"):
        load_config(p)


def test_invalid_backlog_policy_lists_allowed():
    with pytest.raises(ConfigError, match="'all' or 'latest'"):
        parse_config({"backlog": {"policy": "some"}})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_and_includes(tmp_path):
    (tmp_path / "seq.yaml").write_text("time_plan: {interval: 0, loops: 2}\n")
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nsequence: seq.yaml\n")
    cfg = load_config(p, ["backlog.policy=latest", "threads=2", "name=renamed"])
    assert cfg.backlog.policy == "latest"
    assert cfg.threads == 2
    assert cfg.name == "renamed"
    assert cfg.useq_sequence().time_plan.loops == 2


def test_override_requires_equals():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["threads"])


def test_demo_config_is_valid():
    cfg = load_config("configs/demo.yaml")
    assert cfg.hardware.simulate is not None
    assert len(list(cfg.useq_sequence())) > 0
