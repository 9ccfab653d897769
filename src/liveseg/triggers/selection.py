"""Selection: which proposals of a frame are accepted, and why the others are not.

Stage limits, dedupe against every accepted target of the run, rate limits per frame
and per minute; every decision carries its reason for ``events.jsonl``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from liveseg.config import SelectionConfig
    from liveseg.types import Proposal

__all__ = ["select"]


def select(
    proposals: Sequence[Proposal],
    history: Sequence[Proposal],
    cfg: SelectionConfig,
    recent_accept_times: Sequence[float],
    now: float,
) -> list[tuple[Proposal, bool, str]]:
    """Decide on every proposal of one frame: ``(proposal, accepted, reason)``.

    Order of checks (the first that fails is the reason): stage limits, dedupe against
    every accepted target of the run *and* of this frame (never revisit within
    ``dedupe_radius_um``), ``max_per_frame``, ``max_per_minute`` (a sliding 60 s window
    given by ``recent_accept_times``, perf-counter seconds). Higher ``priority`` first.
    """
    targets = [p.target_xy for p in history if p.target_xy is not None]
    origin = [p for p in history if p.target_xy is not None]
    in_window = sum(1 for t in recent_accept_times if now - t < 60.0)
    out: list[tuple[Proposal, bool, str]] = []
    n_frame = 0
    r2 = cfg.dedupe_radius_um**2
    for prop in sorted(proposals, key=lambda p: -p.priority):
        xy = prop.target_xy
        if xy is None and prop.event.x_pos is not None and prop.event.y_pos is not None:
            xy = (float(prop.event.x_pos), float(prop.event.y_pos))
        reason = ""
        lim = cfg.stage_limits
        if xy is not None and lim is not None:
            for axis, value, bounds in (("x", xy[0], lim.x), ("y", xy[1], lim.y)):
                if bounds is not None and not (bounds[0] <= value <= bounds[1]):
                    reason = (
                        f"outside stage limits: {axis}={value:.1f} µm not in "
                        f"[{bounds[0]:g}, {bounds[1]:g}]"
                    )
                    break
        if not reason and xy is not None and r2 > 0 and targets:
            arr = np.asarray(targets, dtype=float)
            d2 = (arr[:, 0] - xy[0]) ** 2 + (arr[:, 1] - xy[1]) ** 2
            j = int(np.argmin(d2))
            if d2[j] < r2:
                near = origin[j] if j < len(origin) else None
                what = (
                    f" (frame {near.frame_index}, label {near.label})"
                    if near is not None
                    else " (this frame)"
                )
                reason = (
                    f"duplicate: {math.sqrt(d2[j]):.1f} µm from an accepted target{what}, "
                    f"dedupe radius {cfg.dedupe_radius_um:g} µm"
                )
        if not reason and cfg.max_per_frame is not None and n_frame >= cfg.max_per_frame:
            reason = f"rate limit: max_per_frame={cfg.max_per_frame}"
        if not reason and cfg.max_per_minute is not None and in_window >= cfg.max_per_minute:
            reason = f"rate limit: max_per_minute={cfg.max_per_minute}"
        if reason:
            out.append((prop, False, reason))
            continue
        out.append((prop, True, "accepted"))
        n_frame += 1
        in_window += 1
        if xy is not None:
            targets.append(xy)
            origin.append(prop)
    return out
