"""The live window on the real demo hardware (offscreen Qt)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from qtpy.QtCore import Qt

from liveseg.gui.canvas import ImageCanvas, outline_mask
from liveseg.store import RunReader

pytestmark = pytest.mark.hardware

N_FRAMES = 4  # 2 positions x 2 time points (tests/gui/conftest.py)


def _run(qtbot, window, events=None, timeout=120_000) -> dict:
    window.start(events)
    qtbot.waitUntil(lambda: window.last_summary is not None, timeout=timeout)
    assert window.wait(30)
    return window.last_summary


def test_overlay_counts_flag_and_run_dir(qtbot, live_window, liveseg_home) -> None:
    window = live_window
    summary = _run(qtbot, window)
    assert summary["frames_acquired"] == N_FRAMES
    assert summary["frames_segmented"] == N_FRAMES
    reader = RunReader(window.last_run_dir)

    # -- overlay: drawn exactly where the shown frame's labels are --------------------
    canvas = window.canvas
    shown = canvas.overlay_index
    assert shown == N_FRAMES - 1 and canvas.image_index == shown and canvas.lag == 0
    labels = canvas.labels
    assert labels is not None and labels.max() > 0
    assert np.array_equal(labels > 0, reader.labels(shown) > 0)  # the stored labels
    for mode, expected in (("filled", labels > 0), ("outline", outline_mask(labels))):
        canvas.set_mode(mode)
        on = canvas.render_native(overlay=True).astype(int)
        off = canvas.render_native(overlay=False).astype(int)
        drawn = np.abs(on - off).sum(axis=-1) > 0
        assert np.array_equal(drawn, expected), mode

    # -- count plot: one point per segmented frame, with frames.csv's counts ----------
    rows = {r["index"]: r for r in reader.frames() if r["status"] == "ok"}
    series = window.plot.series()
    points = [(pos, idx, c) for pos, s in series.items() for (_, c, idx) in s]
    assert len(points) == N_FRAMES == len(rows)
    for pos, idx, count in points:
        assert rows[idx]["count"] == count and rows[idx]["position"] == pos
    assert sorted(series) == [0, 1]
    assert window.objects.rowCount() == rows[shown]["count"]

    # -- F flags the shown frame into the retraining queue ----------------------------
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    window.reason.setText("missed a dim cell")
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_F)
    assert len(window.flags) == 1 and window.flags[0].frame_index == shown
    from liveseg.retrain.queue import RetrainQueue

    items = RetrainQueue(liveseg_home).items()
    assert [(i.frame_index, i.reason, i.source) for i in items] == [
        (shown, "missed a dim cell", "operator")
    ]
    assert items[0].run == str(window.last_run_dir)
    assert np.array_equal(items[0].image(), reader.image(shown))
    predicted = items[0].predicted()
    assert predicted is not None and np.array_equal(predicted > 0, labels > 0)
    flags = reader.events("flag")
    assert [e["frame"] for e in flags] == [shown]
    qtbot.waitUntil(lambda: "frame 3 flagged" in window.log_view.toPlainText(), timeout=5000)

    # -- status shows the chain and the numbers --------------------------------------
    assert "normalize" in window.chain_label.text()
    assert f"segmented {N_FRAMES}" in window.status_text()


def test_stop_ends_the_run_cleanly(qtbot, live_window) -> None:
    import useq

    window = live_window
    # Two positions: a one-position OME-Zarr is laid out differently (see report).
    long_seq = useq.MDASequence(
        stage_positions=[(0, 0, 0), (150, -100, 0)],
        time_plan={"interval": 0.3, "loops": 100},
        axis_order="tpcz",
    )
    window.start(long_seq)
    qtbot.waitUntil(lambda: window.feed.frames_segmented >= 2, timeout=120_000)
    assert window.running and window.stop_btn.isEnabled()
    qtbot.mouseClick(window.stop_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.last_summary is not None, timeout=60_000)
    summary = window.last_summary
    assert "error" not in summary
    acquired = summary["frames_acquired"]
    assert 2 <= acquired < 200
    assert summary["frames_segmented"] == acquired  # the backlog was drained
    run = window.last_run_dir
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["summary"]["frames_acquired"] == acquired
    reader = RunReader(run)
    assert [r["index"] for r in reader.frames()] == list(range(acquired))
    assert (run / "images.ome.zarr").is_dir() and (run / "objects.parquet").is_file()
    assert reader.image(acquired - 1).shape == (256, 256)
    assert window.start_btn.isEnabled() and not window.stop_btn.isEnabled()


def test_slow_display_does_not_slow_acquisition_or_segmentation(
    qtbot, live_window, monkeypatch
) -> None:
    import useq

    calls = []
    paint = ImageCanvas.paint_scene
    set_overlay = ImageCanvas.set_overlay

    def slow_paint(self, painter, transform):
        time.sleep(0.25)
        calls.append("paint")
        paint(self, painter, transform)

    def slow_overlay(self, *args, **kwargs):
        time.sleep(0.25)
        calls.append("overlay")
        set_overlay(self, *args, **kwargs)

    monkeypatch.setattr(ImageCanvas, "paint_scene", slow_paint)
    monkeypatch.setattr(ImageCanvas, "set_overlay", slow_overlay)
    window = live_window
    n = 12
    summary = _run(qtbot, window, useq.MDASequence(time_plan={"interval": 0, "loops": n}))
    assert "overlay" in calls and "paint" in calls
    assert summary["frames_acquired"] == n, summary
    assert summary["frames_segmented"] == n, (summary, RunReader(window.last_run_dir).events())
    assert window.feed.frames_segmented == n
    assert window.plot.n_points() == n  # every frame plotted even if not every one shown
    assert window.feed.dropped_images + window.feed.dropped_results > 0


def _offline_icons(monkeypatch) -> list[str]:
    """Simulate a lab without internet for the icon host; return its DNS lookups."""
    import socket

    from pyconify.api import _session

    from liveseg.gui.icons import ICON_HOST

    _session.cache_clear()  # a fresh pyconify session: no adapter from an earlier test
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == ICON_HOST:
            lookups.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "offline (test)")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_icon_downloads_skipped_only_when_offline(monkeypatch) -> None:
    import socket

    from pyconify.api import _session

    from liveseg.gui.icons import ICON_HOST, skip_icon_downloads_when_offline

    _session.cache_clear()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [("reachable",)])
    assert skip_icon_downloads_when_offline() is False
    assert not hasattr(_session().get_adapter(f"https://{ICON_HOST}"), "liveseg_offline")
    lookups = _offline_icons(monkeypatch)
    assert skip_icon_downloads_when_offline() is True
    assert skip_icon_downloads_when_offline() is True  # decided once per session
    assert lookups == [ICON_HOST]


@pytest.mark.slow
def test_mda_widget_and_sequence_yaml(qtbot, make_gui_session, monkeypatch, tmp_path) -> None:
    from liveseg.gui.window import LiveWindow

    # pymmcore-widgets fetches dozens of icons; offline, one DNS lookup must decide.
    lookups = _offline_icons(monkeypatch)
    with pytest.warns(UserWarning, match="Error fetching icon"):
        window = LiveWindow(make_gui_session(), output=tmp_path / "run", mda_widget=True)
    assert len(lookups) == 1
    qtbot.addWidget(window)
    try:
        seq = window.sequence()
        assert len(list(seq)) == N_FRAMES  # the config's sequence, shown in the widget
        (tmp_path / "seq.yaml").write_text("time_plan: {interval: 0, loops: 3}\n")
        window.load_sequence(tmp_path / "seq.yaml")
        assert len(list(window.sequence())) == 3
        with pytest.warns(UserWarning, match="Error fetching icon"):
            summary = _run(qtbot, window)
        assert summary["frames_segmented"] == 3
    finally:
        window.shutdown()
