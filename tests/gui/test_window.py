"""The live window on the real demo hardware (offscreen Qt), driven by mouse and keyboard."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from gui_helpers import click, qimage_rgb, wait_finished
from qtpy.QtCore import Qt

from liveseg.control import RunState
from liveseg.gui.canvas import ImageCanvas, outline_mask, to_gray8
from liveseg.retrain.queue import RetrainQueue
from liveseg.store import RunReader

pytestmark = pytest.mark.hardware

N_FRAMES = 4  # 2 positions x 2 time points (tests/gui/conftest.py)
#: run.json status of a run ended by the operator's Stop (a signal says "interrupted").
STOPPED = {"stopped"}


def _run(qtbot, window, events=None, timeout=120_000) -> dict:
    window.start(events)
    qtbot.waitUntil(lambda: window.last_summary is not None, timeout=timeout)
    assert window.wait(30)
    return window.last_summary


def test_start_button_acquires_the_sequence_and_writes_the_run(qtbot, live_window) -> None:
    window = live_window
    assert window.start_btn.isEnabled()
    assert not window.pause_btn.isEnabled() and not window.stop_btn.isEnabled()
    assert not window.flag_btn.isEnabled()  # nothing on screen to flag yet
    assert window.status_text().startswith("idle")

    click(qtbot, window.start_btn)
    assert window.control.state is RunState.RUNNING
    assert not window.start_btn.isEnabled()  # Start cannot act while running
    assert window.pause_btn.isEnabled() and window.stop_btn.isEnabled()
    assert window.status_text().startswith("running")
    summary = wait_finished(qtbot, window)
    assert "error" not in summary, summary
    assert summary["frames_acquired"] == summary["frames_segmented"] == N_FRAMES

    # -- the run directory is complete ------------------------------------------------
    run = window.last_run_dir
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["summary"]["frames_segmented"] == N_FRAMES
    reader = RunReader(run)
    rows = reader.frames()
    assert [r["index"] for r in rows] == list(range(N_FRAMES))
    assert [r["position"] for r in rows] == [0, 1, 0, 1]
    assert {r["status"] for r in rows} == {"ok"}
    for row in rows:
        image, labels = reader.image(row["index"]), reader.labels(row["index"])
        assert image.shape == (256, 256) and image.max() > 0
        assert labels is not None and labels.shape == (256, 256)
        assert len(np.unique(labels[labels > 0])) == row["count"] > 0
    objects = reader.objects()
    assert len(objects) == sum(r["count"] for r in rows)
    assert (run / "objects.parquet").is_file()

    # -- the window after the run -----------------------------------------------------
    assert window.start_btn.isEnabled() and window.flag_btn.isEnabled()
    assert not window.pause_btn.isEnabled() and not window.stop_btn.isEnabled()
    status = window.status_text()
    assert status.startswith("finished · on screen: frame 3, position 1, its own masks")
    assert f"acquired {N_FRAMES} · segmented {N_FRAMES} · skipped 0 · failed 0" in status
    assert "backlog 0" in status
    canvas = window.canvas
    shown = canvas.overlay_index
    assert shown == N_FRAMES - 1 and canvas.image_index == shown and canvas.lag == 0
    assert "frame 3 · position 1 · masks of this frame" == canvas.banner_text()
    labels = canvas.labels
    assert labels is not None and np.array_equal(labels > 0, reader.labels(shown) > 0)
    for mode, expected in (("filled", labels > 0), ("outline", outline_mask(labels))):
        window.mode.setCurrentText(mode)
        on = canvas.render_native(overlay=True).astype(int)
        off = canvas.render_native(overlay=False).astype(int)
        drawn = np.abs(on - off).sum(axis=-1) > 0
        assert np.array_equal(drawn, expected), mode

    # -- count plot: one point per segmented frame, with frames.csv's counts ----------
    by_index = {r["index"]: r for r in rows}
    series = window.plot.series()
    points = [(pos, idx, c) for pos, s in series.items() for (_, c, idx) in s]
    assert len(points) == N_FRAMES
    for pos, idx, count in points:
        assert by_index[idx]["count"] == count and by_index[idx]["position"] == pos
    assert window.objects.rowCount() == by_index[shown]["count"]
    assert "normalize" in window.chain_label.text()


def _screen_to_image(rgb: np.ndarray, banner, zoom: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Image-pixel samples of a canvas grab at ``zoom`` px per pixel, and a validity mask.

    Pixels under the frame read-out (the banner) are not valid.
    """
    img = rgb[::zoom, ::zoom].astype(int)
    valid = np.ones(img.shape[:2], bool)
    rows = int(np.ceil((banner.y() + banner.height()) / zoom)) + 1
    cols = int(np.ceil((banner.x() + banner.width()) / zoom)) + 1
    valid[:rows, :cols] = False
    return img, valid


@pytest.mark.parametrize("newest", [False, True], ids=["own-image", "newest-image"])
def test_two_positions_never_show_another_positions_masks(qtbot, live_window, newest) -> None:
    """Every painted state: overlay pixels == the masks of the shown position's frame."""
    window = live_window
    canvas = window.canvas
    canvas.setFixedSize(512, 512)  # fit: exactly 2 screen pixels per image pixel
    qtbot.waitUntil(lambda: canvas.width() == 512 and canvas.height() == 512)
    if newest:
        click(qtbot, window.newest_image)
    assert window.newest_image.isChecked() is newest
    shots: list[dict] = []

    def capture() -> None:  # runs right after the window's own display update
        key = (canvas.image_index, canvas.overlay_index)
        if canvas.image_index is None or (shots and shots[-1]["key"] == key):
            return
        shots.append(
            {
                "key": key,
                "positions": (canvas.image_position, canvas.overlay_position),
                "limits": canvas.limits,
                "rgb": qimage_rgb(canvas.grab().toImage()),
                "banner": canvas.banner_rect,
                "text": canvas.banner_text(),
                "status": window.status.text(),  # the label as painted with this frame
            }
        )

    window.display_timer.timeout.connect(capture)
    click(qtbot, window.start_btn)
    summary = wait_finished(qtbot, window)
    capture()  # the last update came with the end of the run, not from the timer
    assert summary["frames_segmented"] == N_FRAMES
    reader = RunReader(window.last_run_dir)
    pos_of = {r["index"]: r["position"] for r in reader.frames()}
    assert sorted(set(pos_of.values())) == [0, 1]
    masked = [s for s in shots if s["key"][1] is not None]
    # (a display tick may skip a result when two arrive together: never the last one)
    assert len(masked) >= 2 and masked[-1]["key"][1] == N_FRAMES - 1, [s["key"] for s in shots]
    for shot in shots:
        image_index, overlay_index = shot["key"]
        position = pos_of[image_index]
        assert shot["positions"][0] == position
        assert f"frame {image_index} · position {position}" in shot["text"]
        assert f"on screen: frame {image_index}, position {position}" in shot["status"]
        img, valid = _screen_to_image(shot["rgb"], shot["banner"])
        assert img.shape[:2] == (256, 256)
        chroma = img.max(axis=-1) - img.min(axis=-1)
        drawn = chroma > 40  # the overlay's saturated colours; the image itself is grey
        if overlay_index is None:
            expected = np.zeros((256, 256), bool)
        else:
            assert pos_of[overlay_index] == position  # never another position's masks
            assert shot["positions"][1] == position
            if not newest:
                assert overlay_index == image_index  # by default: the frame's own masks
            expected = reader.labels(overlay_index) > 0
        assert np.array_equal(drawn[valid], expected[valid]), shot["key"]
        # …over the shown frame's own stored image
        grey = to_gray8(reader.image(image_index), shot["limits"])
        plain = valid & ~expected
        assert np.abs(img[..., 0][plain] - grey[plain].astype(int)).max() <= 1


def test_pause_resume_and_stop_from_mouse_and_keyboard(qtbot, live_window, tmp_path) -> None:
    window = live_window
    control = window.control
    # A long two-position time-lapse, loaded as a person does (Load sequence YAML…).
    (tmp_path / "long.yaml").write_text(
        "stage_positions: [{x: 0, y: 0, z: 0}, {x: 150, y: -100, z: 0}]\n"
        "time_plan: {interval: 0.3, loops: 100}\n"
        "axis_order: tpcz\n"
    )
    window.load_sequence(tmp_path / "long.yaml")
    click(qtbot, window.start_btn)
    qtbot.waitUntil(lambda: control.stats().segmented >= 2, timeout=120_000)

    # -- Pause (mouse): the acquisition stands still, the status says so --------------
    click(qtbot, window.pause_btn)
    assert control.state is RunState.PAUSED
    assert window.pause_btn.isChecked() and window.pause_btn.text() == "Resume"
    assert window.status_text().startswith("paused")
    assert window.status.text().startswith("paused")  # the label on screen, not only the API
    assert not window.start_btn.isEnabled() and window.stop_btn.isEnabled()
    # The event in flight (and at most one more, see RunControl._reassert) ends.
    qtbot.waitUntil(window.session.core.mda.is_paused, timeout=10_000)
    qtbot.wait(700)
    qtbot.waitUntil(window.session.core.mda.is_paused, timeout=10_000)
    held = control.stats().acquired
    qtbot.wait(1200)  # four intervals of the time plan
    assert control.stats().acquired == held
    assert control.state is RunState.PAUSED

    # -- Resume (keyboard: space on the focused button) -------------------------------
    window.pause_btn.setFocus()
    qtbot.keyClick(window.pause_btn, Qt.Key.Key_Space)
    assert control.state is RunState.RUNNING
    assert window.pause_btn.text() == "Pause" and not window.pause_btn.isChecked()
    assert window.status_text().startswith("running")
    qtbot.waitUntil(lambda: control.stats().acquired >= held + 2, timeout=60_000)

    # -- Stop (mouse): acquiring ends, the backlog is drained, the run is complete ----
    click(qtbot, window.stop_btn)
    assert control.state in (RunState.STOPPING, RunState.FINISHED)
    qtbot.waitUntil(lambda: window.status.text().startswith(("stopping", "finished")))
    assert not window.stop_btn.isEnabled() and not window.pause_btn.isEnabled()
    summary = wait_finished(qtbot, window, timeout=60_000)
    assert "error" not in summary
    acquired = summary["frames_acquired"]
    assert held + 2 <= acquired < 200
    assert summary["frames_segmented"] == acquired  # the backlog was drained
    run = window.last_run_dir
    info = json.loads((run / "run.json").read_text())
    assert info["status"] in STOPPED and info["summary"]["frames_acquired"] == acquired
    reader = RunReader(run)
    assert [r["index"] for r in reader.frames()] == list(range(acquired))
    assert {r["status"] for r in reader.frames()} == {"ok"}
    assert reader.image(acquired - 1).shape == (256, 256)
    assert window.status_text().startswith("finished")
    assert window.start_btn.isEnabled() and not window.stop_btn.isEnabled()


def test_closing_the_window_mid_run_stops_and_completes_the_run(qtbot, live_window) -> None:
    import useq

    window = live_window
    seq = useq.MDASequence(time_plan={"interval": 0.2, "loops": 200})
    window.start(seq)
    qtbot.waitUntil(lambda: window.control.stats().segmented >= 2, timeout=120_000)
    window.close()  # the operator closes the window: the run stops, nothing is lost
    assert not window.control.running
    run = window.control.run_dir
    info = json.loads((run / "run.json").read_text())
    assert info["status"] in STOPPED
    acquired = info["summary"]["frames_acquired"]
    assert 2 <= acquired < 200 and info["summary"]["frames_segmented"] == acquired
    assert [r["index"] for r in RunReader(run).frames()] == list(range(acquired))


def test_flag_then_f_flags_the_shown_frame_once(qtbot, live_window, liveseg_home, tmp_path):
    window = live_window
    click(qtbot, window.start_btn)
    wait_finished(qtbot, window)
    reader = RunReader(window.last_run_dir)
    shown = window.canvas.overlay_index
    assert shown == N_FRAMES - 1

    # -- the Flag button puts the shown frame (image + its masks) into the queue ------
    window.reason.setText("missed a dim cell")
    click(qtbot, window.flag_btn)
    queue = RetrainQueue(liveseg_home)
    items = queue.items()
    assert [(i.frame_index, i.reason, i.source) for i in items] == [
        (shown, "missed a dim cell", "operator")
    ]
    assert items[0].run == str(window.last_run_dir)
    assert np.array_equal(items[0].image(), reader.image(shown))
    predicted = items[0].predicted()
    assert predicted is not None and np.array_equal(predicted > 0, reader.labels(shown) > 0)
    assert window.reason.text() == ""

    # -- F on the same frame: "already flagged", nothing added ------------------------
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_F)
    assert window.last_flag is not None and window.last_flag.added is False
    assert "already flagged" in window.last_flag.message
    assert "already flagged" in window.statusBar().currentMessage()
    assert len(queue.items()) == 1
    assert [e["frame"] for e in reader.events("flag")] == [shown]
    assert "flagged 1" in window.status_text()

    # -- typing an f into the reason box types it; it flags nothing -------------------
    window.reason.setFocus()
    qtbot.keyClicks(window.reason, "fix")
    assert window.reason.text() == "fix"
    assert len(queue.items()) == 1
    window.reason.clear()

    # -- a second run: F flags its shown frame ----------------------------------------
    window.output = tmp_path / "run2"
    click(qtbot, window.start_btn)
    assert not window.flag_btn.isEnabled() or window.canvas.overlay_index is not None
    wait_finished(qtbot, window)
    assert window.last_run_dir == tmp_path / "run2"
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_F)
    assert window.last_flag is not None and window.last_flag.added
    items = queue.items()
    assert [(i.run, i.frame_index) for i in items] == [
        (str(reader.path), shown),
        (str(tmp_path / "run2"), window.canvas.overlay_index),
    ]


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
