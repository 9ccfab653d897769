"""Reading the config files users pass with ``--config``: whole configs or chain files.

The README tells users to write chains in their own files (``configs/pipelines/*.yaml``,
a mapping with top-level ``steps:``), and to pass such a file to ``segment`` and
``batch`` with ``--config``. A whole run config (``hardware:``, ``sequence:``,
``pipeline:`` …) works there too. :func:`load_config_file` accepts both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from liveseg.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from liveseg.config import LivesegConfig

__all__ = ["is_pipeline_file", "load_config_file"]


def is_pipeline_file(data: object) -> bool:
    """True for a chain-only mapping: top-level ``steps:`` and no run-config section."""
    return isinstance(data, dict) and "steps" in data and "pipeline" not in data


def load_config_file(path: str | Path, overrides: Sequence[str] = ()) -> LivesegConfig:
    """A :class:`~liveseg.config.LivesegConfig` from a run config or a pipeline-only file.

    A pipeline-only file (``steps: [...]``, as in ``configs/pipelines/classical.yaml``)
    becomes the ``pipeline`` of an otherwise default config; ``--set`` overrides then
    address it as ``pipeline.steps.0.params.x`` like in a whole config.

    Raises
    ------
    ConfigError
        For malformed YAML (file and line), unknown fields (their path), and a file that
        mixes top-level ``steps:`` with other run-config sections.
    """
    from liveseg.config import apply_overrides, load_config, load_yaml, parse_config

    p = Path(path)
    data = load_yaml(p)
    if not is_pipeline_file(data):
        return load_config(p, list(overrides))
    assert isinstance(data, dict)
    others = sorted(set(data) - {"steps"})
    if others:
        raise ConfigError(
            f"{p}: a pipeline file holds only 'steps:'; found also {', '.join(others)}. "
            f"Put a whole run config under 'pipeline:' instead"
        )
    wrapped = {"pipeline": {"steps": data["steps"]}}
    if overrides:
        wrapped = apply_overrides(wrapped, list(overrides))
    return parse_config(wrapped, str(p), p.parent)
