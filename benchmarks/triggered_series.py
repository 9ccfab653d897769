"""What does a new triggered series cost the acquisition thread? Prints JSON.

``TriggeredStore.write`` of a series' first plane creates its image group (OME-NGFF
metadata through yaozarrs), registers it in the bioformats2raw collection and asks the
background OME-XML writer to describe it. This runs on the acquisition thread, so its
cost must stay flat as a run triggers hundreds of series.

Usage: python benchmarks/triggered_series.py [--series 300] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from liveseg.store import TriggeredStore


def main() -> None:
    """Write ``--series`` one-plane series and print per-series timings (ms)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=300)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    image = np.zeros((args.size, args.size), np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        store = TriggeredStore(Path(tmp))
        times = []
        for i in range(args.series):
            name = f"bench-{i:04d}"
            store.declare(name, {"c": 1, "z": 1}, {"trigger": "bench"})
            t0 = time.perf_counter()
            store.write(name, {"c": 0, "z": 0}, image=image, pixel_size_um=0.5)
            times.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        store.close()
        close_ms = (time.perf_counter() - t0) * 1e3
    rest = times[1:] or times
    print(
        json.dumps(
            {
                "series": args.series,
                "first_ms": round(times[0], 2),  # includes first imports
                "median_ms": round(statistics.median(rest), 2),
                "last_10_mean_ms": round(statistics.fmean(times[-10:]), 2),
                "close_ms": round(close_ms, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
