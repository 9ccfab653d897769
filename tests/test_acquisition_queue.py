import threading

import numpy as np

from liveseg.acquisition import FrameQueue
from liveseg.types import Frame


def _frame(i):
    return Frame(i, np.full((16, 16), i, np.uint16))


def test_all_policy_spools_beyond_maxsize_and_loses_nothing(tmp_path):
    q = FrameQueue("all", maxsize=4, spool_dir=tmp_path / "spool")
    for i in range(40):
        q.put(_frame(i))
    q.close()
    got = []
    while (item := q.get()) is not None:
        assert not item.skipped
        got.append(item)
    assert [it.frame.index for it in got] == list(range(40))
    assert all(int(it.frame.image[0, 0]) == it.frame.index for it in got)
    assert q.spooled > 0
    assert not list((tmp_path / "spool").glob("*.npy"))


def test_latest_policy_keeps_newest_and_reports_skipped():
    q = FrameQueue("latest", maxsize=4)
    for i in range(10):
        q.put(_frame(i))
    q.close()
    items = []
    while (item := q.get()) is not None:
        items.append(item)
    skipped = [it.frame.index for it in items if it.skipped]
    done = [it.frame.index for it in items if not it.skipped]
    assert done == [9]
    assert skipped == list(range(9))


def test_put_never_blocks_with_slow_consumer(tmp_path):
    q = FrameQueue("all", maxsize=2, spool_dir=tmp_path)
    seen = []

    def consume():
        while (item := q.get()) is not None:
            seen.append(item.frame.index)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(200):
        q.put(_frame(i))
    q.close()
    t.join(timeout=30)
    assert sorted(seen) == list(range(200))


def test_abandon_drops_the_backlog_and_leaves_spool_files_for_resegment(tmp_path):
    """A second Ctrl-C: the waiting frames are dropped (their images are already on
    disk); what was spooled stays for ``liveseg resegment``, which removes it."""
    import time

    q = FrameQueue("all", maxsize=2, spool_dir=tmp_path / "spool")
    for i in range(12):
        q.put(_frame(i))
    deadline = time.monotonic() + 10
    while q.spooled == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert q.spooled > 0
    first = q.get()
    assert first is not None and first.frame.index == 0
    assert q.abandon() == 11
    q.close()
    assert q.get() is None and q.backlog() == 0
    assert list((tmp_path / "spool").glob("*.npy"))


def test_frozen_heap_skips_old_objects_collects_new_ones_and_unfreezes():
    import gc
    import weakref

    from liveseg.acquisition import frozen_heap

    class Node:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the collector frees it

    before = gc.get_freeze_count()
    with frozen_heap():
        assert gc.get_freeze_count() > before  # what existed is out of the collections
        probe = weakref.ref(Node())  # made during the run: collected as usual
        gc.collect()
        assert probe() is None
    assert gc.get_freeze_count() == 0  # handed back at the end


def test_latest_rate_limit_hands_out_the_newest_frame_at_most_that_often():
    import time

    q = FrameQueue("latest", maxsize=4, max_rate_hz=20)
    got: list[tuple[int, bool]] = []

    def consume() -> None:
        while (item := q.get()) is not None:
            got.append((item.frame.index, item.skipped))

    worker = threading.Thread(target=consume)
    t0 = time.monotonic()
    worker.start()
    for i in range(400):  # a fast camera: ~1 kHz for about 0.4 s
        q.put(_frame(i))
        time.sleep(0.001)
    q.close()
    worker.join(timeout=10)
    elapsed = time.monotonic() - t0
    fresh = [i for i, skipped in got if not skipped]
    # Every frame comes out exactly once, fresh or skipped; the last one at once on close.
    assert sorted(i for i, _ in got) == list(range(400))
    assert fresh[-1] == 399
    assert 2 <= len(fresh) <= elapsed * 20 + 2


def test_latest_without_a_rate_limit_hands_out_every_frame_a_free_worker_can_take():
    q = FrameQueue("latest", maxsize=4, max_rate_hz=None)
    for i in range(5):
        q.put(_frame(i))
        item = q.get(timeout=1)
        assert item is not None and item.frame.index == i and not item.skipped
