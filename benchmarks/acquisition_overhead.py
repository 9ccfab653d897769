"""Does live segmentation slow the camera? Prints JSON.

For three camera rates — paced like live imaging (10 ms exposure, ~100 frames/s at 512²),
the demo camera's fastest (FastImage, 0 ms; its frames are blank) and unpaced frames
with beads in them (0 ms, drawn per frame) — it measures, in one process and
interleaved (each round: baseline and every worker layout, in a rotating order) so
machine noise hits all alike:

* ``baseline``: a plain pymmcore-plus MDA writing OME-Zarr, no liveseg;
* ``worker``: the same MDA through a liveseg Session (frameReady only enqueues) with the
  given backlog policy, for each worker layout of ``--workers``: ``thread`` (the chain on
  a worker thread of the run's process) and ``process`` (``backlog.workers: {kind:
  process}``: the chain in a worker process, pixels and labels through shared memory);
* ``in_handler`` (paced only, fewer frames): the chain run inside frameReady — what not
  to do, for scale.

Ratios are the median acquisition frames/s over the rounds relative to the median
baseline at the same rate (a median, because one round that the shared machine slows
down would move a mean by several per cent); ``best`` names the layout with the higher
ratio at each rate. The demo camera's fastest mode runs ``--fastest-frames`` frames per
run (default 3000, about 4 s): 300 frames at ~700 frames/s take under half a second,
which start-up jitter dominates.

Usage: python benchmarks/acquisition_overhead.py [--frames 300] [--fastest-frames 3000]
       [--rounds 5] [--chain default|classical] [--workers both|thread|process]
       [--modes paced_10ms,fastest,unpaced_beads]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import useq

from liveseg.config import parse_config
from liveseg.defaults import CLASSICAL_STEPS
from liveseg.session import Session
from liveseg.types import Frame

MODES = {
    "paced_10ms": {"exposure_ms": 10.0, "properties": [["Camera", "Mode", "Fluorescent Beads"]]},
    "fastest": {
        "exposure_ms": 0.0,
        "properties": [["Camera", "Mode", "Fluorescent Beads"], ["Camera", "FastImage", "1"]],
    },
    # FastImage frames are all zero: the default chain skips inference on a constant
    # frame, so "fastest" measures the acquisition path alone. Unpaced frames with beads
    # in them (the demo camera draws each one) load the chain at a high camera rate.
    "unpaced_beads": {
        "exposure_ms": 0.0,
        "properties": [["Camera", "Mode", "Fluorescent Beads"], ["Camera", "FastImage", "0"]],
    },
}


def _config(
    mode: dict[str, Any], chain: str, policy: str, frames: int, threads: int, kind: str
) -> Any:
    hw = {
        "mm_config": "demo",
        "properties": mode["properties"],
        "exposure_ms": mode["exposure_ms"],
    }
    data: dict[str, Any] = {
        "name": "bench",
        "hardware": hw,
        "sequence": {"time_plan": {"interval": 0, "loops": frames}},
        "backlog": {"policy": policy, "queue_size": 16, "workers": {"kind": kind}},
        "threads": threads,
    }
    if chain == "classical":
        data["pipeline"] = {"steps": [s.model_dump() for s in CLASSICAL_STEPS]}
    return parse_config(data)


def _baseline(session: Session, frames: int, out: Path) -> float:
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": frames})
    t0 = time.perf_counter()
    session.core.mda.run(seq, output=str(out))
    return frames / (time.perf_counter() - t0)


def _in_handler(session: Session, frames: int, out: Path) -> float:
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": frames})
    counter = [0]

    def handler(img: Any, event: Any, meta: Any = None) -> None:
        session.pipeline.run(Frame(counter[0], img))
        counter[0] += 1

    session.core.mda.events.frameReady.connect(handler)
    try:
        t0 = time.perf_counter()
        session.core.mda.run(seq, output=str(out))
        return frames / (time.perf_counter() - t0)
    finally:
        session.core.mda.events.frameReady.disconnect(handler)


def _measure(
    name: str, mode: dict[str, Any], kinds: list[str], args: Any, frames: int, tmp: Path
) -> Any:
    """Baseline and live rounds for one camera rate, every worker layout in each round.

    One demo core serves a Session per layout (the worker processes stay warm between
    runs), so a round is baseline, then each layout, in an order that rotates per round:
    drift and warm-up hit all alike.
    """
    with contextlib.ExitStack() as stack:
        sessions: dict[str, Session] = {}
        for kind in kinds:
            cfg = _config(mode, args.chain, args.policy, frames, args.threads, kind)
            core = next(iter(sessions.values())).core if sessions else None
            sessions[kind] = stack.enter_context(Session(cfg, home=tmp / "home", core=core))
        first = sessions[kinds[0]]
        _baseline(first, 20, tmp / f"{name}-warmup.ome.zarr")
        base: list[float] = []
        live: dict[str, list[float]] = {k: [] for k in kinds}
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            order = ["baseline", *kinds]
            order = order[r % len(order) :] + order[: r % len(order)]
            for what in order:
                if what == "baseline":
                    base.append(_baseline(first, frames, tmp / f"{name}-base{r}.ome.zarr"))
                    continue
                s = sessions[what].run(output=tmp / f"{name}-{what}-run{r}")
                live[what].append(s["acquisition_fps"])
                runs[what].append(s)
        out: dict[str, Any] = {"frames": frames, "baseline_fps": [round(v, 1) for v in base]}
        for kind in kinds:
            got = runs[kind]
            out[kind] = {
                "worker_fps": [round(v, 1) for v in live[kind]],
                "ratio_worker_vs_baseline": round(
                    statistics.median(live[kind]) / statistics.median(base), 3
                ),
                "segmentation_fps": round(statistics.mean(s["segmentation_fps"] for s in got), 2),
                "latency_ms_p50": round(statistics.mean(s["latency_ms_p50"] for s in got), 1),
                "latency_ms_p95": round(statistics.mean(s["latency_ms_p95"] for s in got), 1),
                "frames_segmented": [s["frames_segmented"] for s in got],
                "frames_skipped": [s["frames_skipped"] for s in got],
                "max_backlog": [s["max_backlog"] for s in got],
            }
        out["chain"] = first.pipeline.step_names
        if name == "paced_10ms" and args.handler_frames:
            b = _baseline(first, args.handler_frames, tmp / "h-base.ome.zarr")
            h = _in_handler(first, args.handler_frames, tmp / "h.ome.zarr")
            out["in_handler_fps"] = round(h, 1)
            out["ratio_in_handler_vs_baseline"] = round(h / b, 3)
    return out


def _load() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the platform has none)."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--fastest-frames", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chain", choices=["default", "classical"], default="default")
    ap.add_argument("--policy", choices=["all", "latest"], default="latest")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--handler-frames", type=int, default=30)
    ap.add_argument("--workers", choices=["both", "thread", "process"], default="both")
    ap.add_argument(
        "--modes", default=",".join(MODES), help=f"camera rates to run, of {','.join(MODES)}"
    )
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        ap.error(f"unknown mode(s) {sorted(unknown)}; choose from {list(MODES)}")
    kinds = ["thread", "process"] if args.workers == "both" else [args.workers]
    tmp = Path(tempfile.mkdtemp(prefix="liveseg-bench-"))
    report: dict[str, Any] = {
        "frames": args.frames,
        "chain_request": args.chain,
        "policy": args.policy,
        "threads": args.threads,
        "uptime_load": _load(),
        "modes": {},
    }
    try:
        for name in modes:
            frames = args.fastest_frames if name == "fastest" else args.frames
            entry = _measure(name, MODES[name], kinds, args, frames, tmp)
            report["chain"] = entry.pop("chain")
            ratios = {k: entry[k]["ratio_worker_vs_baseline"] for k in kinds}
            entry["best"] = max(ratios, key=lambda k: ratios[k])
            report["modes"][name] = entry
            print(f"{name}: {json.dumps(entry)}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
