"""napari dock widget: a liveseg Session's live masks and counts in napari's viewer.

The widget shows the newest segmented frame as a ``Labels`` layer (and, optionally, the
newest raw frame as an ``Image`` layer) and plots objects per frame. napari-micromanager
users tick *use napari-micromanager's core* so that liveseg acquires with the core they
already configured; otherwise the widget loads the config's hardware itself.

Like the main window, it polls a :class:`~liveseg.gui.feed.LiveFeed` from a ``QTimer``
(≤ 30 Hz, newest only), so napari's drawing never slows the acquisition.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import (  # type: ignore[attr-defined]
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

from liveseg.gui.feed import LiveFeed
from liveseg.gui.plot import CountPlot

if TYPE_CHECKING:
    from pathlib import Path

    from liveseg.session import Session

__all__ = ["IMAGE_LAYER", "LABELS_LAYER", "LivesegWidget"]

log = logging.getLogger("liveseg.gui.napari")

LABELS_LAYER = "liveseg labels"
IMAGE_LAYER = "liveseg image"


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

    def __init__(self, napari_viewer: Any, session: Session | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: Session | None = None
        self.feed: LiveFeed | None = None
        self._owns = False
        self._thread: threading.Thread | None = None
        self.last_summary: dict[str, Any] | None = None

        self.config_path = QLineEdit(placeholderText="config YAML (empty: demo hardware)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.use_mm_core = QCheckBox("use napari-micromanager's core")
        self.use_mm_core.setToolTip(
            "Acquire with the global CMMCorePlus instance that napari-micromanager configured"
        )
        self.show_image = QCheckBox("raw image layer")
        self.show_image.setChecked(True)
        self.start_btn = QPushButton("Start")
        self.stop_btn = QPushButton("Stop")
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
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
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.stop_btn)
        layout.addLayout(buttons)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.status)

        self.run_done.connect(self._on_run_done)
        self._timer = QTimer(self)
        self._timer.setInterval(33)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.destroyed.connect(self._timer.stop)
        if session is not None:
            self.attach(session, owns=False)

    # -- session ----------------------------------------------------------------------
    def attach(self, session: Session, *, owns: bool = False) -> None:
        """Follow ``session``'s results (detaching from any previous one)."""
        self.detach()
        self.session = session
        self._owns = owns
        self.feed = LiveFeed(session)
        self.feed.attach()
        self.status.setText(f"attached: {', '.join(session.pipeline.step_names)}")

    def detach(self) -> None:
        """Stop following the session (and close it when the widget built it)."""
        if self.feed is not None:
            self.feed.detach()
            self.feed = None
        if self.session is not None and self._owns:
            self.session.close()
        self.session = None

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
        return self._thread is not None and self._thread.is_alive()

    def start(self, events: Any = None, output: str | Path | None = None) -> None:
        """Acquire (``events`` or the config's sequence) in a worker thread."""
        if self.running:
            return
        if self.session is None:
            try:
                self.attach(self._build_session(), owns=True)
            except Exception as exc:
                self.status.setText(f"error: {exc}")
                return
        assert self.session is not None
        session = self.session
        self.plot.clear()

        def work() -> None:
            try:
                summary = session.run(events, output=output)
            except Exception as exc:
                log.exception("run failed")
                summary = {"error": repr(exc)}
            self.run_done.emit(summary)

        self._thread = threading.Thread(target=work, name="liveseg-napari-run", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel the acquisition; acquired frames are still segmented and saved."""
        if self.running and self.session is not None:
            self.session.core.mda.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run thread ends; True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _on_run_done(self, summary: dict[str, Any]) -> None:
        self.refresh()
        self.last_summary = summary
        self.status.setText(
            summary.get("error")
            or f"finished: {summary.get('frames_segmented')} segmented → {summary.get('run_dir')}"
        )

    # -- display ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Take the newest image/result from the feed and update the layers and plot."""
        if self.feed is None:
            return
        snap = self.feed.take()
        if snap.run_started is not None:
            self.plot.clear()
        if snap.image is not None and self.show_image.isChecked():
            self._set_layer(IMAGE_LAYER, snap.image[1], "image")
        if snap.result is not None:
            frame, result, _ = snap.result
            layer = self._set_layer(LABELS_LAYER, result.labels, "labels")
            layer.metadata["liveseg_frame"] = frame.index
        if snap.points:
            self.plot.add_points(snap.points)
            last = snap.points[-1]
            self.status.setText(
                f"frame {last.frame_index}: {last.count} objects · "
                f"dropped for display {self.feed.dropped_results}"
            )

    def _set_layer(self, name: str, data: Any, kind: str) -> Any:
        layers = self.viewer.layers
        if name in layers:
            layer = layers[name]
            layer.data = data
            return layer
        if kind == "labels":
            return self.viewer.add_labels(data, name=name, opacity=0.5)
        return self.viewer.add_image(data, name=name, colormap="gray")

    def closeEvent(self, event: Any) -> None:  # noqa: D102
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop any run, wait for it, and detach (closing an owned session)."""
        self._timer.stop()
        if self.running and self.session is not None:
            self.session.core.mda.cancel()
            self.wait(60)
        self.detach()
