"""Peak memory per Dask worker while ``liveseg mosaic`` segments one large generated slide.

Generates a ``--size`` x ``--size`` nuclei mosaic chunk-wise on a ``LocalCluster``
(127.0.0.1, ``--workers`` processes, one thread each;
:func:`liveseg.synthetic.mosaic.write_nuclei_mosaic`), restarts the workers (fresh
processes, so generating does not count), then segments it with
:func:`liveseg.mosaic.segment_mosaic` in ``--block`` tiles on the same cluster and
reads each worker's peak resident memory (``getrusage`` max RSS; ``psutil``'s peak
working set on Windows) and its memory after the chain was built.

The point is the bound: a worker's peak grows with ``block``² (one tile with its halo
and the chain's working copies), not with the slide. Compare a small and a large
``--size`` at one ``--block``: the peaks stay about the same.

Usage: ``python benchmarks/mosaic_memory.py [--size 20000] [--block 2048] [--workers 2]
[--chain classical|default] [--keep DIR]``. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (runs inside each worker)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 / (1024 if sys.platform == "darwin" else 1)
    except ImportError:  # Windows
        import psutil

        return float(psutil.Process().memory_info().peak_wset) / 2**20


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def main() -> None:
    """Generate, segment, report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chain", choices=("classical", "default"), default="classical")
    ap.add_argument("--keep", help="write the slide and labels here (else a temp folder)")
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from liveseg.config import StepConfig
    from liveseg.defaults import default_steps
    from liveseg.mosaic import read_provenance, segment_mosaic
    from liveseg.plugins import shipped_models
    from liveseg.synthetic.mosaic import write_nuclei_mosaic

    if args.chain == "classical":
        steps = [
            StepConfig(backend="normalize"),
            StepConfig(backend="threshold", params={"method": "local"}),
            StepConfig(backend="size_filter", params={"min_area": 15}),
        ]
    else:
        from liveseg.assembly import build_host
        from liveseg.config import LivesegConfig

        host = build_host(LivesegConfig())
        steps = default_steps(host.backends(), shipped_models().entries())
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mosaic-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    slide = root / f"slide{args.size}.ome.zarr"
    out = root / f"labels{args.size}.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    peaks: dict[str, Any] = {}
    after_setup: dict[str, Any] = {}

    def read_peaks(client: Any) -> None:
        peaks.update(client.run(_peak_rss_mb))
        after_setup.update(client.run(_rss_mb))

    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        t0 = time.perf_counter()
        if not slide.exists():
            write_nuclei_mosaic(slide, (args.size, args.size), chunk=1024)
        gen_s = time.perf_counter() - t0
        client.restart()
        t1 = time.perf_counter()
        summary = segment_mosaic(
            slide,
            out,
            steps=steps,
            home=root / "home",
            block=args.block,
            scheduler=cluster.scheduler_address,
            on_client=read_peaks,
        )
        seg_s = time.perf_counter() - t1
    info = read_provenance(out)
    result = {
        "benchmark": "mosaic_memory",
        "size": [args.size, args.size],
        "block": args.block,
        "overlap": info.get("overlap"),
        "tiles": summary["tiles"],
        "workers": args.workers,
        "chain": [s.backend for s in steps],
        "objects": summary["objects"],
        "joined_across_tiles": summary["joined_across_tiles"],
        "generate_s": round(gen_s, 1),
        "segment_s": round(seg_s, 1),
        "tile_s_mean": round(summary["tile_seconds_mean"], 2),
        "worker_peak_rss_mb": {k: round(v, 1) for k, v in peaks.items()},
        "worker_rss_at_end_mb": {k: round(v, 1) for k, v in after_setup.items()},
        "max_worker_peak_rss_mb": round(max(peaks.values()), 1) if peaks else None,
        "image_mb": round(args.size * args.size * 2 / 2**20, 1),
        "labels_mb": round(args.size * args.size * 4 / 2**20, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "out": str(out),
    }
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
