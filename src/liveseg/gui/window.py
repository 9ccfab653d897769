"""The liveseg main window: live image + masks, counts, objects, flagging, control.

The window drives its Session only through :class:`~liveseg.control.RunControl`
(start / pause / resume / stop / flag / stats and one signal group). Threads: the
control runs ``Session.run`` in a worker thread; its signals land in a
:class:`~liveseg.gui.feed.LiveFeed` (O(1) each), and a ``QTimer`` on the Qt thread takes
the newest image and result from it at most :data:`DISPLAY_HZ` times a second. A slow
display therefore only drops frames from the *display* (counted in the status line) and
never slows acquisition or segmentation.

The canvas never draws one frame's masks over another position's image: by default it
shows each segmented frame's own image under its masks; with *newest image* it shows
the newest acquired image and the masks of that position's latest segmented frame.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import (  # type: ignore[attr-defined]
    QAbstractTableModel,
    Qt,
    QTimer,
    Signal,
)
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from liveseg.control import ControlError, FlagOutcome, RunControl, RunState
from liveseg.gui.canvas import ImageCanvas
from liveseg.gui.feed import LiveFeed, LogEntry
from liveseg.gui.plot import CountPlot
from liveseg.gui.run_buttons import RunButtons

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    from qtpy.QtGui import QCloseEvent

    from liveseg.session import Session
    from liveseg.types import Flag, Frame, FrameResult

    Segmented = tuple[Frame, FrameResult, Mapping[str, np.ndarray]]

__all__ = ["DISPLAY_HZ", "LiveWindow", "ObjectsModel"]

log = logging.getLogger("liveseg.gui")

DISPLAY_HZ = 30
"""Upper bound on display refreshes per second."""

TABLE_COLUMNS = (
    "label",
    "area_px",
    "area_um2",
    "centroid_row",
    "centroid_col",
    "centroid_x_um",
    "centroid_y_um",
    "mean_intensity",
    "eccentricity",
    "score",
)


class ObjectsModel(QAbstractTableModel):
    """The current frame's objects: a table model over measurement columns (no copy)."""

    def __init__(self) -> None:
        super().__init__()
        self._columns: Mapping[str, np.ndarray] = {}
        self._names: list[str] = []
        self._rows = 0
        self.frame_index: int | None = None

    def set_columns(self, frame_index: int | None, columns: Mapping[str, np.ndarray]) -> None:
        """Show the objects of ``frame_index`` (O(1): the view reads lazily)."""
        self.beginResetModel()
        self.frame_index = frame_index
        self._columns = columns
        self._names = [c for c in TABLE_COLUMNS if c in columns]
        self._rows = len(columns.get("label", ()))
        self.endResetModel()

    def rowCount(self, parent: Any = None) -> int:  # noqa: D102
        return self._rows

    def columnCount(self, parent: Any = None) -> int:  # noqa: D102
        return len(self._names)

    def data(self, index: Any, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: D102
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        value = self._columns[self._names[index.column()]][index.row()]
        if self._names[index.column()] == "label":
            return str(int(value))
        return f"{float(value):.4g}"

    def headerData(  # noqa: D102
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._names[section] if section < len(self._names) else None
        return str(section + 1)


class LiveWindow(QMainWindow):
    """Main window around one :class:`~liveseg.session.Session`.

    Parameters
    ----------
    session
        The session to drive. With ``owns_session`` (the ``liveseg gui`` command), the
        window closes it — and so releases the core — when it closes.
    output
        Run directory for the next run (``None``: a timestamped one under the config's
        ``output``); cleared after each run.
    mda_widget
        Include pymmcore-widgets' MDA widget and device controls (``False`` runs the
        config's sequence or one loaded from YAML).
    """

    run_done = Signal(object)  # summary dict, on the Qt thread
    state_seen = Signal(object)  # RunState, on the Qt thread

    def __init__(
        self,
        session: Session,
        *,
        owns_session: bool = False,
        output: str | Path | None = None,
        mda_widget: bool = True,
    ) -> None:
        super().__init__()
        self.session = session
        self.owns_session = owns_session
        self.output = output
        self.setWindowTitle(f"liveseg — {session.config.name}")
        self.control = RunControl(session)
        self.feed = LiveFeed(self.control)
        self.feed.attach()
        self._sequence: Any = None  # loaded from YAML; else the MDA widget / config
        self.last_summary: dict[str, Any] | None = None
        self.last_run_dir: Path | None = None
        self.flags: list[Flag] = []
        self.last_flag: FlagOutcome | None = None
        self._newest: Segmented | None = None  # newest segmented frame
        self._by_position: dict[int, Segmented] = {}  # newest segmented frame per position
        self._closed = False

        self.canvas = ImageCanvas()
        self.plot = CountPlot()
        self.objects = ObjectsModel()
        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setMaximumBlockCount(5000)
        self.status = QLabel()
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.mda: Any = None
        self._build(mda_widget)
        self.run_done.connect(self._on_run_done)
        self.state_seen.connect(self._on_state)
        # psygnal → Qt signal: queued to the Qt thread when emitted from the run thread.
        self.control.signals.finished.connect(self._finished_from_control)
        self.control.signals.state_changed.connect(self._state_from_control)

        self.display_timer = QTimer(self)
        self.display_timer.setInterval(int(1000 / DISPLAY_HZ))
        self.display_timer.timeout.connect(self._tick)
        self.display_timer.start()
        self._slow_timer = QTimer(self)
        self._slow_timer.setInterval(500)
        self._slow_timer.timeout.connect(self._slow_tick)
        self._slow_timer.start()
        self._update_buttons()
        self._slow_tick()

    # -- layout -----------------------------------------------------------------------
    def _build(self, mda_widget: bool) -> None:
        # toolbar row: run control, flag, display options
        self.buttons = RunButtons(
            self,
            start=self.start,
            toggle_pause=self.toggle_pause,
            stop=self.stop,
            flag=self.flag_shown,
        )
        b = self.buttons
        self.start_btn, self.pause_btn, self.stop_btn, self.flag_btn = b.widgets()
        self.flag_shortcut = b.flag_shortcut
        self.reason = QLineEdit(placeholderText="flag reason (optional)")
        self.reason.setMaximumWidth(220)

        self.auto_contrast = QCheckBox("auto")
        self.auto_contrast.setChecked(True)
        self.auto_contrast.setToolTip("Auto contrast (0.5–99.8 percentiles of each frame)")
        self.lo = QDoubleSpinBox(minimum=0, maximum=65535, decimals=0, value=0)
        self.hi = QDoubleSpinBox(minimum=0, maximum=65535, decimals=0, value=4095)
        self.auto_contrast.toggled.connect(self._contrast_changed)
        self.lo.editingFinished.connect(lambda: self._contrast_changed(False))
        self.hi.editingFinished.connect(lambda: self._contrast_changed(False))
        self.mode = QComboBox()
        self.mode.addItems(["filled", "outline"])
        self.mode.currentTextChanged.connect(lambda m: self.canvas.set_mode(m))
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setMaximumWidth(100)
        self.opacity.valueChanged.connect(lambda v: self.canvas.set_opacity(v / 100))
        self.show_masks = QCheckBox("masks")
        self.show_masks.setChecked(True)
        self.show_masks.toggled.connect(self.canvas.set_overlay_visible)
        fit = QPushButton("Fit")
        fit.clicked.connect(self.canvas.fit)
        self.newest_image = QCheckBox("newest image")
        self.newest_image.setToolTip(
            "Show the newest acquired image instead of the segmented frame's own image;"
            " the masks are then those of the same position's latest segmented frame"
            " (possibly older, said on the image)"
        )
        self.newest_image.toggled.connect(lambda *_: self._redisplay())

        bar = QHBoxLayout()
        for w in (self.start_btn, self.pause_btn, self.stop_btn, self.flag_btn, self.reason):
            bar.addWidget(w)
        bar.addStretch(1)
        view_bar = QHBoxLayout()
        view_bar.addWidget(QLabel("contrast"))
        for opt in (self.auto_contrast, self.lo, self.hi, self.show_masks, self.mode):
            view_bar.addWidget(opt)
        view_bar.addWidget(QLabel("opacity"))
        view_bar.addWidget(self.opacity)
        view_bar.addWidget(self.newest_image)
        view_bar.addStretch(1)
        view_bar.addWidget(fit)

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addLayout(bar)
        lv.addLayout(view_bar)
        vsplit = QSplitter(Qt.Orientation.Vertical)
        vsplit.addWidget(self.canvas)
        vsplit.addWidget(self.plot)
        vsplit.setStretchFactor(0, 4)
        vsplit.setStretchFactor(1, 1)
        lv.addWidget(vsplit, 1)
        self.hover = QLabel(" ")
        lv.addWidget(self.hover)
        self.canvas.hovered.connect(self.hover.setText)

        # right side: chain + status, tabs (acquisition, objects, log)
        chain = QGroupBox("Chain")
        cl = QVBoxLayout(chain)
        self.chain_label = QLabel("\n".join(self.control.chain_description()))
        self.chain_label.setWordWrap(True)
        cl.addWidget(self.chain_label)
        status_box = QGroupBox("Status")
        sl = QVBoxLayout(status_box)
        sl.addWidget(self.status)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._acquisition_tab(mda_widget), "Acquisition")
        table = QTableView()
        table.setModel(self.objects)
        table.setAlternatingRowColors(True)
        self.table = table
        self.tabs.addTab(table, "Objects")
        self.tabs.addTab(self.log_view, "Log")

        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(chain)
        rv.addWidget(status_box)
        rv.addWidget(self.tabs, 1)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.setCentralWidget(split)
        self.resize(1400, 850)

    def _acquisition_tab(self, mda_widget: bool) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        load = QPushButton("Load sequence YAML…")
        load.clicked.connect(self._load_sequence_dialog)
        self.sequence_label = QLabel("sequence: from the MDA widget" if mda_widget else "")
        self.sequence_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(load)
        row.addWidget(self.sequence_label, 1)
        layout.addLayout(row)
        if not mda_widget:
            self.sequence_label.setText("sequence: from the config")
            layout.addStretch(1)
            return tab
        from pymmcore_widgets import ExposureWidget, MDAWidget

        from liveseg.gui.icons import skip_icon_downloads_when_offline

        skip_icon_downloads_when_offline()
        core = self.session.core
        devices = QGroupBox("Devices")
        form = QFormLayout(devices)
        # (ChannelWidget is left out: it raises when the session unloads the devices
        # while the window still exists; the MDA widget's channel table covers it.)
        form.addRow("exposure (ms)", ExposureWidget(mmcore=core))
        layout.addWidget(devices)
        self.mda = MDAWidget(mmcore=core)
        # liveseg runs the sequence itself (into its run directory): hide the widget's
        # own run buttons and save box so there is one Start and one output.
        self.mda.control_btns.hide()
        self.mda.save_info.hide()
        try:
            self.mda.setValue(self.session.config.useq_sequence())
        except Exception:
            log.debug("config sequence not shown in the MDA widget", exc_info=True)
        layout.addWidget(self.mda, 1)
        return tab

    # -- sequence ---------------------------------------------------------------------
    def load_sequence(self, path: str | Path) -> None:
        """Use a useq sequence YAML for the next runs (and show it in the MDA widget)."""
        import useq

        from liveseg.config import load_yaml

        seq = useq.MDASequence.model_validate(load_yaml(path))
        self._sequence = seq
        if self.mda is not None:
            self.mda.setValue(seq)
            self._sequence = None  # the widget now holds it (and may be edited)
        self.sequence_label.setText(f"sequence: {path}")
        self._log(LogEntry("sequence", f"loaded sequence {path}"))

    def _load_sequence_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load useq sequence", "", "YAML (*.yaml *.yml)"
        )
        if path:
            try:
                self.load_sequence(path)
            except Exception as exc:
                self._log(LogEntry("error", f"could not load {path}: {exc}", logging.ERROR))

    def sequence(self) -> Any:
        """What Start will acquire: a loaded YAML, the MDA widget's value, or the config's."""
        if self._sequence is not None:
            return self._sequence
        if self.mda is not None:
            return self.mda.value()
        return self.session.config.useq_sequence()

    # -- run control ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether an acquisition is in progress (running, paused or stopping)."""
        return self.control.running

    def start(self, events: Any = None) -> None:
        """Start acquiring ``events`` (default: :meth:`sequence`) without blocking."""
        if self.control.running:
            self._log(LogEntry("run", f"already {self.control.state.value}: not started"))
            return
        try:
            seq = events if events is not None else self.sequence()
        except Exception as exc:
            self._log(LogEntry("error", f"invalid sequence: {exc}", logging.ERROR))
            return
        self.last_summary = None
        output, self.output = self.output, None
        try:
            self.control.start(seq, output=output)
        except ControlError as exc:
            self._log(LogEntry("run", str(exc), logging.WARNING))

    def toggle_pause(self) -> None:
        """Pause a running acquisition, or resume a paused one."""
        self.control.toggle_pause()
        self._update_buttons()

    def stop(self) -> None:
        """Stop acquiring; frames already acquired are still segmented and saved."""
        if self.control.state in (RunState.RUNNING, RunState.PAUSED):
            self.control.stop()
            self._log(LogEntry("run", "stop requested: draining the frames acquired so far"))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run thread ends (tests, shutdown); True if it has."""
        self.control.wait(timeout)
        return not self.control.running

    def _state_from_control(self, state: RunState) -> None:
        self.state_seen.emit(state)  # any thread → the Qt thread

    def _finished_from_control(self, summary: dict[str, Any]) -> None:
        self.run_done.emit(summary)  # any thread → the Qt thread

    def _on_state(self, state: RunState) -> None:
        self._update_buttons()
        self.status.setText(self.status_text())

    def _update_buttons(self) -> None:
        state = self.control.state
        self.buttons.sync(state, can_flag=self.canvas.overlay_index is not None)
        if self.mda is not None:
            self.mda.setEnabled(not state.active)

    # -- flagging ---------------------------------------------------------------------
    def shown_frame(self) -> int | None:
        """The frame a flag refers to: the segmented frame whose masks are shown."""
        return self.canvas.overlay_index

    def flag_shown(self, reason: str | None = None) -> FlagOutcome | None:
        """Put the shown frame (image + masks) into the retraining queue, once."""
        index = self.shown_frame()
        if index is None:
            self._log(LogEntry("flag", "nothing to flag yet (no segmented frame shown)"))
            return None
        text = reason if reason is not None else self.reason.text().strip()
        try:
            outcome = self.control.flag(index, text, source="operator")
        except Exception as exc:
            self._log(LogEntry("error", f"flag of frame {index} failed: {exc}", logging.ERROR))
            return None
        self.last_flag = outcome
        if outcome.flag is not None:
            self.flags.append(outcome.flag)
            self.reason.clear()
        else:
            self._log(LogEntry("flag", outcome.message))
        self.statusBar().showMessage(outcome.message, 4000)
        self.status.setText(self.status_text())
        return outcome

    # -- display ----------------------------------------------------------------------
    def _tick(self) -> None:
        """≤ DISPLAY_HZ per second on the Qt thread: show the newest of everything."""
        snap = self.feed.take()
        if snap.run_started is not None:
            self.plot.clear()
            self._newest = None
            self._by_position.clear()
            self.canvas.clear_overlay()  # masks of the last run are not this run's
            self.objects.set_columns(None, {})
        if snap.result is not None:
            self._newest = snap.result
            self._by_position[snap.result[0].position] = snap.result
        changed = False
        if not self.newest_image.isChecked():
            if snap.result is not None:
                self._show_segmented(snap.result)
                changed = True
            elif snap.image is not None and self.canvas.overlay_index is None:
                # nothing segmented yet: the newest image, no masks
                self._show_acquired(snap.image)
                changed = True
        elif snap.image is not None:
            self._show_acquired(snap.image)
            changed = True
        elif snap.result is not None and snap.result[0].position == self.canvas.image_position:
            self._show_overlay_for_image()
            changed = True
        if changed:
            self._update_buttons()
            self.status.setText(self.status_text())  # names what is on screen now
            if self.auto_contrast.isChecked():
                lo, hi = self.canvas.limits
                self.lo.setValue(lo)
                self.hi.setValue(hi)
        if snap.points:
            self.plot.add_points(snap.points)
        for entry in snap.log:
            self._log(entry)

    def _show_segmented(self, item: Segmented) -> None:
        """A segmented frame's own image under its own masks."""
        frame, result, columns = item
        self.canvas.set_image(frame.index, frame.image, frame.position)
        self.canvas.set_overlay(
            frame.index, result.labels, columns, frame.position, result.classes, result.class_names
        )
        self.objects.set_columns(frame.index, columns)

    def _show_acquired(self, frame: Frame) -> None:
        """The newest acquired image, with the masks of its own position if any."""
        self.canvas.set_image(frame.index, frame.image, frame.position)
        self._show_overlay_for_image()

    def _show_overlay_for_image(self) -> None:
        canvas = self.canvas
        item = self._by_position.get(canvas.image_position or 0)
        if (
            item is None
            or canvas.image is None
            or item[1].labels.shape != canvas.image.shape[:2]
            or (canvas.image_index is not None and item[0].index > canvas.image_index)
        ):
            canvas.clear_overlay()
            self.objects.set_columns(None, {})
            return
        frame, result, columns = item
        canvas.set_overlay(
            frame.index, result.labels, columns, frame.position, result.classes, result.class_names
        )
        self.objects.set_columns(frame.index, columns)

    def _redisplay(self) -> None:
        """Re-show after the display mode changed."""
        if not self.newest_image.isChecked():
            if self._newest is not None:
                self._show_segmented(self._newest)
        elif self.canvas.image is not None:
            self._show_overlay_for_image()
        self._update_buttons()

    def _slow_tick(self) -> None:
        """Twice a second: the status text."""
        self.status.setText(self.status_text())

    def status_text(self) -> str:
        """State, what is on screen, counts, backlog, rates and display drops."""
        st = self.control.stats()
        canvas = self.canvas
        if canvas.image_index is None:
            screen = "nothing on screen yet"
        else:
            screen = f"on screen: frame {canvas.image_index}"
            if canvas.image_position is not None:
                screen += f", position {canvas.image_position}"
            if canvas.overlay_index is None:
                screen += ", no masks"
            elif canvas.overlay_index == canvas.image_index:
                screen += ", its own masks"
            else:
                screen += f", masks of frame {canvas.overlay_index}"
        fps = f"{1e3 / st.segment_ms_mean:.1f}" if st.segment_ms_mean else "–"
        lat = f"{st.latency_ms_p50:.0f} ms" if st.latency_ms_p50 is not None else "–"
        lines = [
            f"{st.state.value} · {screen}",
            f"acquired {st.acquired} · segmented {st.segmented} · skipped {st.skipped}"
            f" · failed {st.failed} · backlog {st.backlog} · flagged {st.flagged}",
            f"segmentation {fps} frames/s (chain), {st.rate_fps:.1f} frames/s (last 5 s)"
            f" · latency p50 {lat}",
            f"dropped for display: {self.feed.dropped_images} images,"
            f" {self.feed.dropped_results} results",
        ]
        if st.error:
            lines.append(f"error: {st.error}")
        return "\n".join(lines)

    def _log(self, entry: LogEntry) -> None:
        stamp = time.strftime("%H:%M:%S")
        mark = "!" if entry.level >= logging.WARNING else " "
        self.log_view.appendPlainText(f"{stamp}{mark} [{entry.kind}] {entry.text}")

    def _on_run_done(self, summary: dict[str, Any]) -> None:
        self._tick()  # show the last frames before reporting
        self.last_summary = summary
        run_dir = summary.get("run_dir")
        self.last_run_dir = Path(run_dir) if run_dir else None
        if "error" in summary:
            self._log(LogEntry("error", f"run failed: {summary['error']}", logging.ERROR))
        else:
            self._log(
                LogEntry(
                    "run",
                    f"run finished: {summary.get('frames_acquired')} acquired,"
                    f" {summary.get('frames_segmented')} segmented → {run_dir}",
                )
            )
        self._update_buttons()
        self._slow_tick()

    def _contrast_changed(self, auto: bool) -> None:
        if auto:
            self.canvas.set_auto_contrast(True)
        else:
            self.auto_contrast.setChecked(False)
            self.canvas.set_limits(self.lo.value(), self.hi.value())

    # -- shutdown ---------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent | None) -> None:  # noqa: D102
        self.shutdown()
        if event is not None:
            super().closeEvent(event)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop any run, wait for it, disconnect, and close an owned session."""
        if self._closed:
            return
        self._closed = True
        self.display_timer.stop()
        self._slow_timer.stop()
        self.control.close(timeout)  # stops any run and waits for it
        self.control.signals.finished.disconnect(self._finished_from_control)
        self.control.signals.state_changed.disconnect(self._state_from_control)
        self.feed.detach()
        if self.owns_session:
            self.session.close()
