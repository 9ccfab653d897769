"""napari dock widget: a liveseg Session's live masks and counts in napari's viewer.

The widget shows each segmented frame as a ``Labels`` layer over that same frame's raw
image (an ``Image`` layer), so masks are never drawn over another position's image, and
plots objects per frame. Start / Pause (Resume) / Stop / Flag (and the F key) drive the
run through :class:`~liveseg.control.RunControl`, like the main window.
napari-micromanager users tick *use napari-micromanager's core* so that liveseg acquires
with the core they already configured; otherwise the widget loads the config's hardware.

Like the main window, it polls a :class:`~liveseg.gui.feed.LiveFeed` from a ``QTimer``
(≤ 30 Hz, newest only), so napari's drawing never slows the acquisition.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import (  # type: ignore[attr-defined]
    Qt,
    QTimer,
    Signal,
)
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from liveseg.control import ControlError, FlagOutcome, RunControl, RunState
from liveseg.gui.feed import LiveFeed
from liveseg.gui.plot import CountPlot
from liveseg.gui.run_buttons import RunButtons

if TYPE_CHECKING:
    from pathlib import Path

    from liveseg.session import Session

__all__ = ["CLASSES_LAYER", "IMAGE_LAYER", "LABELS_LAYER", "LivesegWidget"]

log = logging.getLogger("liveseg.gui.napari")

LABELS_LAYER = "liveseg labels"
IMAGE_LAYER = "liveseg image"
CLASSES_LAYER = "liveseg classes"


class LivesegWidget(QWidget):
    """Attach a liveseg Session to a napari viewer.

    Parameters
    ----------
    napari_viewer
        The viewer (npe2 injects it; tests may pass a ``napari.components.ViewerModel``).
    session
        An existing session to follow (not closed by the widget). Without one, *Start*
        builds a session from the config path field and the widget owns it.
    """

    run_done = Signal(object)
    state_seen = Signal(object)

    def __init__(self, napari_viewer: Any, session: Session | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: Session | None = None
        self.control: RunControl | None = None
        self.feed: LiveFeed | None = None
        self._owns = False
        self.last_summary: dict[str, Any] | None = None
        self.last_flag: FlagOutcome | None = None
        self.shown: tuple[int, int] | None = None
        """``(frame index, position)`` of the frame in the layers."""
        self.legend: list[str] = []
        """The classes layer's legend: ``"<class> <area %>"`` per visible class."""

        self.config_path = QLineEdit(placeholderText="config YAML (empty: demo hardware)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.use_mm_core = QCheckBox("use napari-micromanager's core")
        self.use_mm_core.setToolTip(
            "Acquire with the global CMMCorePlus instance that napari-micromanager configured"
        )
        self.show_image = QCheckBox("raw image layer")
        self.show_image.setChecked(True)
        self.buttons = RunButtons(
            self,
            start=self.start,
            toggle_pause=self.toggle_pause,
            stop=self.stop,
            flag=self.flag_shown,
            shortcut_context=Qt.ShortcutContext.WidgetWithChildrenShortcut,
        )
        self.start_btn, self.pause_btn, self.stop_btn, self.flag_btn = self.buttons.widgets()
        self.flag_shortcut = self.buttons.flag_shortcut
        self.reason = QLineEdit(placeholderText="flag reason (optional)")
        self.plot = CountPlot()
        self.status = QLabel("idle")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.config_path, 1)
        row.addWidget(browse)
        layout.addLayout(row)
        layout.addWidget(self.use_mm_core)
        layout.addWidget(self.show_image)
        buttons = QHBoxLayout()
        for w in (self.start_btn, self.pause_btn, self.stop_btn, self.flag_btn):
            buttons.addWidget(w)
        layout.addLayout(buttons)
        layout.addWidget(self.reason)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.status)

        self.run_done.connect(self._on_run_done)
        self.state_seen.connect(lambda *_: self._update())
        self._timer = QTimer(self)
        self._timer.setInterval(33)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.destroyed.connect(self._timer.stop)
        if session is not None:
            self.attach(session, owns=False)
        self._update()

    # -- session ----------------------------------------------------------------------
    def attach(self, session: Session, *, owns: bool = False) -> None:
        """Follow ``session``'s results (detaching from any previous one)."""
        self.detach()
        self.session = session
        self._owns = owns
        self.control = RunControl(session)
        self.control.signals.finished.connect(self._finished_from_control)
        self.control.signals.state_changed.connect(self._state_from_control)
        self.feed = LiveFeed(self.control)
        self.feed.attach()
        self.status.setText("attached · chain: " + "; ".join(self.control.chain_description()))

    def detach(self, timeout: float = 60.0) -> None:
        """Stop any run, stop following the session (closing it when the widget built it)."""
        if self.control is not None:
            self.control.close(timeout)
            self.control.signals.finished.disconnect(self._finished_from_control)
            self.control.signals.state_changed.disconnect(self._state_from_control)
            self.control = None
        if self.feed is not None:
            self.feed.detach()
            self.feed = None
        if self.session is not None and self._owns:
            self.session.close()
        self.session = None

    def _finished_from_control(self, summary: dict[str, Any]) -> None:
        self.run_done.emit(summary)  # any thread → the Qt thread

    def _state_from_control(self, state: RunState) -> None:
        self.state_seen.emit(state)

    def _build_session(self) -> Session:
        from liveseg.config import load_config, parse_config
        from liveseg.session import Session

        path = self.config_path.text().strip()
        config = load_config(path) if path else parse_config({})
        core = None
        if self.use_mm_core.isChecked():
            from pymmcore_plus import CMMCorePlus

            core = CMMCorePlus.instance()
        return Session(config, core=core)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "liveseg config", "", "YAML (*.yaml *.yml)")
        if path:
            self.config_path.setText(path)

    # -- run control ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a run started here is in progress."""
        return self.control is not None and self.control.running

    def start(self, events: Any = None, output: str | Path | None = None) -> None:
        """Acquire (``events`` or the config's sequence) without blocking."""
        if self.running:
            return
        if self.control is None:
            try:
                self.attach(self._build_session(), owns=True)
            except Exception as exc:
                self.status.setText(f"error: {exc}")
                return
        assert self.control is not None
        self.plot.clear()
        self.last_summary = None
        try:
            self.control.start(events, output=output)
        except ControlError as exc:
            self.status.setText(str(exc))

    def toggle_pause(self) -> None:
        """Pause a running acquisition, or resume a paused one."""
        if self.control is not None:
            self.control.toggle_pause()
        self._update()

    def stop(self) -> None:
        """Stop acquiring; acquired frames are still segmented and saved."""
        if self.control is not None:
            self.control.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run thread ends; True if it has."""
        if self.control is not None:
            self.control.wait(timeout)
        return not self.running

    def flag_shown(self) -> FlagOutcome | None:
        """Put the frame in the layers into the retraining queue (once)."""
        if self.control is None or self.shown is None:
            self.status.setText("nothing to flag yet (no segmented frame shown)")
            return None
        try:
            outcome = self.control.flag(self.shown[0], self.reason.text().strip())
        except Exception as exc:
            self.status.setText(f"flag failed: {exc}")
            return None
        self.last_flag = outcome
        if outcome.added:
            self.reason.clear()
        self._update(outcome.message)
        return outcome

    def _on_run_done(self, summary: dict[str, Any]) -> None:
        self.refresh()
        self.last_summary = summary
        self._update(
            summary.get("error")
            or f"finished: {summary.get('frames_segmented')} segmented → {summary.get('run_dir')}"
        )

    # -- display ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the newest segmented frame: its image and its labels, together."""
        if self.feed is None:
            return
        snap = self.feed.take()
        if snap.run_started is not None:
            self.plot.clear()
            self.shown = None
        if snap.points:  # before the layers: a failing layer update must not lose points
            self.plot.add_points(snap.points)
        if snap.result is not None:
            frame, result, _ = snap.result
            meta = {"liveseg_frame": frame.index, "liveseg_position": frame.position}
            if self.show_image.isChecked():
                self._set_layer(IMAGE_LAYER, frame.image, "image").metadata.update(meta)
            self._set_layer(LABELS_LAYER, result.labels, "labels").metadata.update(meta)
            if result.classes is not None:
                self._set_classes(result.classes, result.class_names).metadata.update(meta)
            self.shown = (frame.index, frame.position)
        if snap.result is not None or snap.points:
            self._update()

    def _update(self, message: str | None = None) -> None:
        """Buttons and status text from the control's state."""
        control = self.control
        state = control.state if control is not None else RunState.IDLE
        self.buttons.sync(state, can_flag=self.shown is not None)
        if control is None:
            return
        st = control.stats()
        shown = (
            f"frame {self.shown[0]}, position {self.shown[1]} in the layers"
            if self.shown is not None
            else "no frame shown yet"
        )
        text = (
            f"{st.state.value} · {shown}\n"
            f"acquired {st.acquired} · segmented {st.segmented} · skipped {st.skipped}"
            f" · failed {st.failed} · backlog {st.backlog} · flagged {st.flagged}"
        )
        if self.legend:
            text += "\nclasses: " + " · ".join(self.legend)
        if message:
            text += f"\n{message}"
        self.status.setText(text)

    def _set_classes(self, classes: Any, names: tuple[str, ...]) -> Any:
        """The class map as a Labels layer in its ClassTable colours, names as features.

        napari shows a hovered pixel's class name from the features; the dock's status
        line is the legend (class, colour swatch name, area fraction).
        """
        import numpy as np
        from napari.utils.colormaps import DirectLabelColormap

        from liveseg.builtins.classes import ClassTable

        table = ClassTable.default(names)
        colors: dict[int | None, Any] = {
            i: np.asarray(rgba, float) / 255 for i, rgba in enumerate(table.colors)
        }
        colors[None] = np.zeros(4)
        layers = self.viewer.layers
        if CLASSES_LAYER in layers:
            layer = layers[CLASSES_LAYER]
            layer.data = classes
        else:
            layer = self.viewer.add_labels(classes, name=CLASSES_LAYER, opacity=0.5)
        layer.colormap = DirectLabelColormap(color_dict=colors)
        layer.features = {"class": list(names), "index": list(range(len(names)))}
        counts = np.bincount(np.asarray(classes).ravel(), minlength=len(names))
        total = max(int(np.asarray(classes).size), 1)
        self.legend = [
            f"{n} {100 * counts[i] / total:.1f}%"
            for i, n in enumerate(names)
            if table.colors[i][3] > 0
        ]
        return layer

    def _set_layer(self, name: str, data: Any, kind: str) -> Any:
        layers = self.viewer.layers
        if name in layers:
            layer = layers[name]
            layer.data = data
            if kind == "image":
                layer.reset_contrast_limits()
            return layer
        if kind == "labels":
            return self.viewer.add_labels(data, name=name, opacity=0.5)
        layer = self.viewer.add_image(data, name=name, colormap="gray")
        if LABELS_LAYER in layers:  # keep the masks on top of the image
            layers.move(layers.index(layer), layers.index(layers[LABELS_LAYER]))
        return layer

    def closeEvent(self, event: Any) -> None:  # noqa: D102
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop any run, wait for it, and detach (closing an owned session)."""
        self._timer.stop()
        self.detach()
