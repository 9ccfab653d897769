"""The ``jsonl`` sink: one JSON line per frame in the run directory.

A sink sees every frame exactly once whatever its status (``ok``, ``skipped``,
``failed``), in live runs and in ``segment``, ``batch`` and ``resegment``, on a worker
thread. Lines are flushed as they are written, so a killed run keeps what it had.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from liveseg.plugin_api import Frame, FrameResult, StepContext

__all__ = ["JsonlParams", "JsonlSink"]


class JsonlParams(BaseModel):
    """Parameters of the ``jsonl`` sink."""

    model_config = ConfigDict(extra="forbid")
    filename: str = Field(
        default="example_frames.jsonl", pattern=r"^[A-Za-z0-9._-]+$", description="in the run dir"
    )


class JsonlSink:
    """Appends ``{"frame", "status", "count", ...}`` per frame and a summary line."""

    Params = JsonlParams

    def __init__(self, params: JsonlParams, context: StepContext) -> None:
        self.params = params
        self._fh: IO[str] | None = None
        self._entry_point = ""
        self.frames = 0

    def setup(self, run: Mapping[str, Any]) -> None:
        """Open ``<run_dir>/<filename>`` for appending (resegment adds to a run)."""
        path = Path(str(run["run_dir"])) / self.params.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self._entry_point = str(run.get("entry_point", ""))
        self._write({"setup": {"entry_point": self._entry_point, "chain": list(run["chain"])}})

    def frame(self, frame: Frame, result: FrameResult, objects: Mapping[str, np.ndarray]) -> None:
        """One line per frame; skipped and failed frames too (with the error)."""
        line: dict[str, Any] = {
            "frame": frame.index,
            "status": str(result.status),
            "count": len(objects.get("label", ())),
        }
        if "example_peak" in objects and len(objects["example_peak"]):
            line["brightest"] = float(max(objects["example_peak"]))
        if result.error:
            line["error"] = result.error
        self._write(line)
        self.frames += 1

    def finish(self, summary: Mapping[str, Any]) -> None:
        """A last line with the run's summary, then close the file."""
        self._write({"finish": {"frames": self.frames, **_plain(summary)}})
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._fh is None:
            raise RuntimeError("jsonl sink used before setup()")
        self._fh.write(json.dumps(record, default=str) + "\n")
        self._fh.flush()


def _plain(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary's numbers and strings (what JSON can hold without surprises)."""
    return {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool)}
