"""What the user-path checks cost: hardware preflight and the weights' sha256 per load.

Prints JSON. ``preflight_s``: ``liveseg.hardware.preflight`` on the demo devices (a
child Python process that loads the Micro-Manager demo configuration), added once to
``run`` and ``validate-config``. ``sha256_ms``: hashing the shipped default weights, the
check every model load now does once.
"""

from __future__ import annotations

import json
import statistics
import time


def main() -> None:
    from liveseg.config import HardwareConfig
    from liveseg.hardware import preflight
    from liveseg.models import builtin_models, file_sha256

    hw = HardwareConfig(mm_config="demo", properties=[("Camera", "Mode", "Noise")])
    pre = []
    for _ in range(3):
        t0 = time.perf_counter()
        preflight(hw)
        pre.append(time.perf_counter() - t0)
    out: dict[str, object] = {"preflight_s": {"median": statistics.median(pre), "runs": pre}}
    shipped = builtin_models()
    if "default" in shipped:
        card = json.loads((shipped["default"] / "model.json").read_text())
        weights = shipped["default"] / str(card.get("weights", "default.pt"))
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            file_sha256(weights)
            times.append((time.perf_counter() - t0) * 1e3)
        out["sha256_ms"] = {
            "median": statistics.median(times),
            "bytes": weights.stat().st_size,
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
