"""Hardware preflight: load the Micro-Manager configuration in a child process first.

A bad device adapter, a garbage ``.cfg`` or a property value the device refuses makes
Micro-Manager raise deep inside pymmcore, and a core left half-loaded can abort the
whole interpreter at exit ("FATAL: exception not rethrown", status 134). So before a
run (and in ``validate-config``) liveseg loads the configuration, sets the config's
device properties and exposure in a separate Python process
(``python -m liveseg.hardware``), and turns whatever went wrong there into one
:class:`HardwareError` line that names the file, device, property and value. The child
is started with :mod:`subprocess` and ``sys.executable``, which works the same on
Windows, macOS and Linux; it reports one JSON line on stdout and leaves with
``os._exit`` so a crashing teardown cannot change the verdict.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveseg.errors import HardwareError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from liveseg.config import HardwareConfig

__all__ = ["HardwareError", "preflight", "probe"]

_TAG = "liveseg-preflight:"


def preflight(hardware: HardwareConfig, *, timeout_s: float = 120.0) -> dict[str, Any]:
    """Check that ``hardware`` loads and takes its properties, in a child process.

    Returns what the child found (``devices``: loaded device labels). Call it before
    opening a run's store, so a bad configuration costs one line and no run directory.

    Raises
    ------
    HardwareError
        One line naming what failed: the config file (missing, unreadable, a bad line or
        adapter, no devices), or the device / property / value that was refused.
    """
    mm = hardware.mm_config
    if mm != "demo":
        path = Path(mm).expanduser()
        if not path.is_file():
            raise HardwareError(
                f"Micro-Manager config file not found: {path} "
                f"(hardware.mm_config; use 'demo' for the demo devices)"
            )
        mm = str(path.resolve())
    request = {
        "mm_config": mm,
        "properties": [list(p) for p in hardware.properties],
        "exposure_ms": hardware.exposure_ms,
    }
    cmd = [sys.executable, "-m", "liveseg.hardware", json.dumps(request)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except subprocess.TimeoutExpired:
        raise HardwareError(
            f"loading Micro-Manager config {hardware.mm_config} did not finish within "
            f"{timeout_s:g} s (a device that does not answer?)"
        ) from None
    report = _read_report(proc.stdout)
    if report is None:
        tail = _last_line(proc.stderr) or "no message"
        raise HardwareError(
            f"loading Micro-Manager config {hardware.mm_config} crashed the checking process "
            f"(exit status {proc.returncode}): {tail}"
        )
    if not report.get("ok"):
        raise HardwareError(str(report.get("error")))
    return report


def _read_report(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(_TAG):
            try:
                data = json.loads(line[len(_TAG) :])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _one_line(message: str) -> str:
    """Micro-Manager's multi-line, bracket-nested messages as one readable line."""
    text = re.sub(r"\s*\[.*\]", "", " ".join(message.split()))
    return text.strip() or message.strip()


def probe(mm_config: str, properties: Sequence[Sequence[Any]], exposure_ms: float | None) -> str:
    """Load ``mm_config`` and apply ``properties`` here; ``""`` or what went wrong (one line).

    Runs in the child process of :func:`preflight` (it loads device adapters into the
    calling process). Each refusal names the device, the property and the value, and
    what would be accepted.
    """
    from pymmcore_plus import CMMCorePlus

    core = CMMCorePlus()
    try:
        where = "the demo devices" if mm_config == "demo" else mm_config
        try:
            if mm_config == "demo":
                core.loadSystemConfiguration()
            else:
                core.loadSystemConfiguration(mm_config)
        except Exception as exc:
            return f"{where}: Micro-Manager cannot load it: {_one_line(str(exc))}"
        devices = [str(d) for d in core.getLoadedDevices() if d != "Core"]
        if not devices:
            return (
                f"{where}: Micro-Manager loaded no devices from it; is it a Micro-Manager "
                f"hardware configuration (.cfg saved by the Hardware Configuration Wizard)?"
            )
        for k, entry in enumerate(properties):
            problem = _set_property(core, devices, k, entry)
            if problem:
                return problem
        if exposure_ms is not None:
            try:
                core.setExposure(float(exposure_ms))
            except Exception as exc:
                return f"hardware.exposure_ms = {exposure_ms}: refused: {_one_line(str(exc))}"
        return ""
    finally:
        try:
            core.unloadAllDevices()
        except Exception:
            pass


def _set_property(core: Any, devices: list[str], k: int, entry: Sequence[Any]) -> str:
    where = f"hardware.properties[{k}]"
    if len(entry) != 3:
        return f"{where}: expected [device, property, value], got {list(entry)!r}"
    dev, prop, value = str(entry[0]), str(entry[1]), entry[2]
    if dev not in devices:
        return f"{where}: no device {dev!r} in this configuration (devices: {', '.join(devices)})"
    if not core.hasProperty(dev, prop):
        names = ", ".join(core.getDevicePropertyNames(dev))
        return f"{where}: device {dev!r} has no property {prop!r} (properties: {names})"
    if core.isPropertyReadOnly(dev, prop):
        return f"{where}: property {dev}.{prop} is read-only"
    allowed = [str(v) for v in core.getAllowedPropertyValues(dev, prop)]
    if allowed and str(value) not in allowed:
        return f"{where}: {dev}.{prop} does not accept {value!r}; allowed: {', '.join(allowed)}"
    if core.hasPropertyLimits(dev, prop):
        lo, hi = core.getPropertyLowerLimit(dev, prop), core.getPropertyUpperLimit(dev, prop)
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{where}: {dev}.{prop} needs a number in [{lo:g}, {hi:g}], got {value!r}"
        if not lo <= number <= hi:
            return f"{where}: {dev}.{prop} = {value!r} is outside its range [{lo:g}, {hi:g}]"
    try:
        core.setProperty(dev, prop, value)
    except Exception as exc:
        return f"{where}: {dev}.{prop} = {value!r} refused: {_one_line(str(exc))}"
    return ""


def _main(argv: Sequence[str]) -> int:
    """Child entry point: one JSON request in argv, one tagged JSON line out."""
    try:
        request = json.loads(argv[0])
        error = probe(
            str(request["mm_config"]),
            request.get("properties") or [],
            request.get("exposure_ms"),
        )
        report: dict[str, Any] = {"ok": not error, "error": error}
    except Exception as exc:  # anything unexpected is still one line for the parent
        report = {"ok": False, "error": f"hardware check failed: {type(exc).__name__}: {exc}"}
    sys.stdout.write(_TAG + json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0 if report["ok"] else 3


if __name__ == "__main__":
    # os._exit: a core torn down at interpreter exit can abort the process (status 134)
    # after the verdict is out; the verdict is what counts.
    os._exit(_main(sys.argv[1:]))
