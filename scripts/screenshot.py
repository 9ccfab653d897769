"""Produce docs/screenshot.png: the live window during a demo acquisition.

Runs configs/demo.yaml (Micro-Manager demo devices imaging the simulated sample, default
chain) in the real window, offscreen, and grabs the window while frames are still being
acquired. Usage::

    .venv/bin/python scripts/screenshot.py [--config configs/demo.yaml] [--out docs/screenshot.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    """Run the demo in the window, grab it mid-acquisition, save a small PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--out", default="docs/screenshot.png")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--after", type=int, default=5, help="grab after N segmented frames")
    parser.add_argument("--width", type=int, default=1100, help="PNG width in pixels")
    args = parser.parse_args()

    from qtpy.QtCore import Qt
    from qtpy.QtGui import QImage
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    try:  # pymmcore-widgets fetches icons online: fail fast when offline
        import superqt.iconify

        def offline(*_a: object, **_k: object) -> None:
            raise OSError("offline")

        superqt.iconify.svg_path = offline  # type: ignore[assignment]
        warnings.filterwarnings("ignore", "Error fetching icon")
    except ImportError:
        pass

    from liveseg.config import load_config
    from liveseg.gui.window import LiveWindow
    from liveseg.session import Session

    config = load_config(args.config, args.overrides)
    tmp = Path(tempfile.mkdtemp(prefix="liveseg-screenshot-"))
    with Session(config, home=tmp / "home") as session:
        window = LiveWindow(session, output=tmp / "run")
        window.resize(1400, 860)
        window.show()
        window.opacity.setValue(45)
        window.start()  # default display: each segmented frame under its own masks
        deadline = time.monotonic() + 600
        grabbed = None
        while time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.01)
            if window.feed.frames_segmented >= args.after or not window.running:
                for _ in range(10):  # let the 30 Hz display catch up and repaint
                    app.processEvents()
                    time.sleep(0.035)
                window.tabs.setCurrentIndex(1)  # the objects table
                app.processEvents()
                grabbed = window.grab()
                during = window.running
                break
        window.shutdown()
    if grabbed is None:
        print("no frame segmented in time", file=sys.stderr)
        return 1
    image = grabbed.toImage().scaledToWidth(args.width, Qt.TransformationMode.SmoothTransformation)
    # 256 colours are plenty for a UI screenshot and keep the PNG small in git.
    image = image.convertToFormat(
        QImage.Format.Format_Indexed8, Qt.ImageConversionFlag.ThresholdDither
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(str(out))
    print(
        f"{out}: {image.width()}x{image.height()}, grabbed {'during' if during else 'after'}"
        f" the acquisition; run in {tmp / 'run'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
