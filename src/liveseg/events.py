"""The live run's contract with a GUI: :class:`SessionEvents`, and the store that feeds it.

The GUI (and the ``control`` layer over it) connect to these signals and never read the
run's files while it is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psygnal import Signal

from liveseg.store import RunStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["SessionEvents", "SignallingStore"]


class SessionEvents:
    """Signals a GUI or notebook can connect to (emitted from worker threads).

    Connect with ``thread="main"`` (psygnal) or a Qt queued connection: handlers must
    not do heavy work, and they only ever need the newest result.

    * ``frame_acquired(Frame)``: a frame left the acquisition queue for a worker;
    * ``frame_segmented(Frame, FrameResult, objects)``: every frame, also skipped and
      failed ones (see ``result.status``; ``objects`` is then empty);
    * ``frame_flagged(Flag)``; ``event_recorded(dict)``: every record written to
      events.jsonl (``kind``, ``frame``, …), so a GUI never tails the file;
    * ``run_started(str run_dir)``, ``run_finished(dict summary)``.
    """

    frame_acquired = Signal(object)  # Frame
    frame_segmented = Signal(object, object, object)  # Frame, FrameResult, objects columns
    frame_flagged = Signal(object)  # Flag
    event_recorded = Signal(object)  # dict: one events.jsonl record
    run_started = Signal(str)  # run directory
    run_finished = Signal(object)  # summary dict


class SignallingStore(RunStore):
    """The run's store, also telling ``emit`` of every events.jsonl record it writes.

    The image writer, the trigger controller and the frame processor all record
    through the one store, so ``SessionEvents.event_recorded`` misses none of them.
    """

    def __init__(
        self, path: Path, emit: Callable[[dict[str, Any]], Any], flush_interval_s: float = 0.0
    ) -> None:
        super().__init__(path, flush_interval_s=flush_interval_s)
        self._emit = emit

    def event(self, kind: str, **fields: Any) -> None:
        """Append the record, then emit it (``kind`` and its fields)."""
        super().event(kind, **fields)
        self._emit({"kind": kind, **fields})
