"""What run.json records so that a result can be reproduced."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from liveseg.plugins import PluginHost

__all__ = ["package_versions", "provenance"]

_PACKAGES = (
    "liveseg",
    "liveseg-torch",
    "liveseg-cellpose",
    "pymmcore-plus",
    "pymmcore",
    "mm-test-adapters",
    "useq-schema",
    "ome-writers",
    "numpy",
    "scipy",
    "scikit-image",
    "torch",
    "cellpose",
    "zarr",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def provenance(
    *,
    config: dict[str, Any],
    host: PluginHost,
    chain: list[str],
    sequence: Any,
    core: CMMCorePlus | None = None,
) -> dict[str, Any]:
    """The run.json header: config, chain, plugin + package versions, hardware."""
    hardware: dict[str, Any] = {}
    if core is not None:
        try:
            hardware = {
                "system_configuration_file": core.systemConfigurationFile(),
                "camera": core.getCameraDevice(),
                "pixel_size_um": core.getPixelSizeUm(),
                "image_shape": [core.getImageHeight(), core.getImageWidth()],
                "bit_depth": core.getImageBitDepth(),
                "exposure_ms": core.getExposure(),
            }
        except Exception as exc:
            hardware = {"error": repr(exc)}
    return {
        "config": config,
        "chain": chain,
        "sequence": sequence,
        "plugins": host.versions(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hardware": hardware,
    }
