"""Trigger latency and timelapse drift on the demo hardware with a simulated sample.

Prints JSON:

* ``latency_ms``: time from a base frame's arrival (frameReady) to the start
  (eventStarted) of the event it triggered, p50/p95 (``visit_objects``, one object per
  frame, dedupe off so every time point triggers);
* ``drift_ms``: base time point start minus its scheduled time (``t * interval``), for
  a plain run (pymmcore-plus runs the MDASequence itself), a run through the
  TriggerQueue with a trigger that never fires, and a run whose triggers fire every
  time point.

Usage: ``python benchmarks/trigger_latency.py [--loops 12] [--interval 0.5]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from liveseg.plugins import PluginHost
from liveseg.session import Session
from liveseg.testing import classical_config

SIZE = 256
OBJECTS = [(40.0, -30.0), (-55.0, 25.0), (20.0, 60.0)]


def _config(triggers, loops, interval):
    return classical_config(
        hardware={
            "mm_config": "demo",
            "exposure_ms": 5,
            "properties": [
                ["Camera", "OnCameraCCDXSize", SIZE],
                ["Camera", "OnCameraCCDYSize", SIZE],
            ],
            "simulate": {
                "objects": [{"x": x, "y": y, "radius": 6.0} for x, y in OBJECTS],
                "seed": 2,
            },
        },
        sequence={
            "stage_positions": [{"x": 0, "y": 0, "z": 0}],
            "time_plan": {"interval": interval, "loops": loops},
        },
        triggers=triggers,
        selection={"dedupe_radius_um": 0, "max_per_minute": 10_000},
    )


def _run(triggers, loops, interval, out: Path):
    starts: dict[int, float] = {}
    with Session(_config(triggers, loops, interval), host=PluginHost(entry_points=False)) as s:

        def on_start(event):
            md = event.metadata or {}
            t = int(event.index.get("t", 0))
            if "liveseg" not in md and t not in starts:
                starts[t] = time.perf_counter()

        s.core.mda.events.eventStarted.connect(on_start)
        summary = s.run(output=out)
        s.core.mda.events.eventStarted.disconnect(on_start)
        lat = list(s.triggers.queue.trigger_latency_ms) if s.triggers is not None else []
    t0 = starts[0]
    drift = [(starts[t] - t0 - t * interval) * 1e3 for t in sorted(starts)]
    return summary, drift, lat


def _stats(values):
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=float)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p95": round(float(np.percentile(a, 95)), 2),
        "max": round(float(a.max()), 2),
        "mean": round(float(a.mean()), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loops", type=int, default=12)
    ap.add_argument("--interval", type=float, default=0.5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="liveseg-bench-"))
    visit = [
        {
            "trigger": "visit_objects",
            "params": {"filter": "area_um2 > 50", "max_objects": 1, "z_range_um": 2},
        }
    ]
    never = [{"trigger": "stop_when", "params": {"condition": "count > 1e9"}}]
    _, plain, _ = _run([], args.loops, args.interval, tmp / "plain")
    _, queued, _ = _run(never, args.loops, args.interval, tmp / "queue")
    summary, triggered, lat = _run(visit, args.loops, args.interval, tmp / "triggers")
    print(
        json.dumps(
            {
                "camera": f"demo {SIZE}x{SIZE}, 5 ms exposure, classical chain",
                "loops": args.loops,
                "interval_s": args.interval,
                "triggered_series": summary.get("triggered_series"),
                "triggered_events_per_series": 3,
                "latency_ms": _stats(lat),
                "drift_ms": {
                    "plain_mdasequence": _stats(plain),
                    "trigger_queue_no_triggers": _stats(queued),
                    "with_triggers": _stats(triggered),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
