"""Start / Pause (Resume) / Stop / Flag (F): the run buttons of the window and the dock.

One definition, so that the live window and the napari dock enable, label and wire them
the same way. The buttons call plain callables; ``clicked(bool)`` never passes its
``checked`` argument on (that bool once reached ``start()`` as the sequence).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt  # type: ignore[attr-defined]
from qtpy.QtGui import (  # type: ignore[attr-defined]
    QKeySequence,
    QShortcut,
)
from qtpy.QtWidgets import QPushButton, QWidget

from liveseg.control import RunState

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RunButtons"]


class RunButtons:
    """The four run buttons and the F shortcut, created on ``parent``.

    Parameters
    ----------
    parent
        The widget that owns the buttons and the F shortcut.
    start, toggle_pause, stop, flag
        What each button (and F, for ``flag``) does; called without arguments.
    shortcut_context
        Where F works: the whole window (default) or the parent and its children
        (a dock inside another application's window).
    """

    def __init__(
        self,
        parent: QWidget,
        *,
        start: Callable[[], object],
        toggle_pause: Callable[[], object],
        stop: Callable[[], object],
        flag: Callable[[], object],
        shortcut_context: Qt.ShortcutContext = Qt.ShortcutContext.WindowShortcut,
    ) -> None:
        self.start = QPushButton("Start", parent)
        self.start.setToolTip("Acquire the sequence, segmenting every frame live")
        self.pause = QPushButton("Pause", parent)
        self.pause.setCheckable(True)
        self.pause.setToolTip("Pause / resume acquiring (segmentation catches up)")
        self.stop = QPushButton("Stop", parent)
        self.stop.setToolTip("Stop acquiring; acquired frames are still segmented and saved")
        self.flag = QPushButton("Flag (F)", parent)
        self.flag.setToolTip("Put the shown frame and its masks into the retraining queue")
        self.start.clicked.connect(lambda *_: start())
        self.pause.clicked.connect(lambda *_: toggle_pause())
        self.stop.clicked.connect(lambda *_: stop())
        self.flag.clicked.connect(lambda *_: flag())
        self.flag_shortcut = QShortcut(QKeySequence("F"), parent)
        self.flag_shortcut.setContext(shortcut_context)
        self.flag_shortcut.activated.connect(lambda: flag())

    def widgets(self) -> tuple[QPushButton, ...]:
        """The buttons in toolbar order."""
        return (self.start, self.pause, self.stop, self.flag)

    def sync(self, state: RunState, *, can_flag: bool) -> None:
        """Enable only what can act in ``state``; Pause reads Resume while paused."""
        acting = state in (RunState.RUNNING, RunState.PAUSED)
        self.start.setEnabled(not state.active)
        self.pause.setEnabled(acting)
        self.pause.setChecked(state is RunState.PAUSED)
        self.pause.setText("Resume" if state is RunState.PAUSED else "Pause")
        self.stop.setEnabled(acting)
        self.flag.setEnabled(can_flag)
