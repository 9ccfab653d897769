"""Start the Qt application with a :class:`~liveseg.gui.window.LiveWindow`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from liveseg.config import LivesegConfig

__all__ = ["run_app"]


def run_app(
    config: LivesegConfig,
    *,
    home: str | Path | None = None,
    output: str | Path | None = None,
    mda_widget: bool = True,
) -> int:
    """Open the window on a new Session and run the Qt event loop; returns its status.

    The QApplication is created *before* the Session so that pymmcore-plus picks Qt
    signals for the core; the window closes the Session (releasing the core) when it
    closes, so the process exits cleanly.
    """
    from qtpy.QtWidgets import QApplication

    from liveseg.gui.window import LiveWindow
    from liveseg.session import Session

    app = QApplication.instance() or QApplication([])
    session = Session(config, home=home)
    try:
        window = LiveWindow(session, owns_session=True, output=output, mda_widget=mda_widget)
    except BaseException:
        session.close()
        raise
    window.show()
    try:
        return int(app.exec())
    finally:
        window.shutdown()
