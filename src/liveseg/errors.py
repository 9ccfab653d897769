"""Exceptions users see: each says what is wrong and how to fix it."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "HardwareError",
    "LivesegError",
    "ModelError",
    "PluginError",
    "StorageError",
]


class LivesegError(Exception):
    """Base class of every error liveseg raises on purpose."""


class ConfigError(LivesegError, ValueError):
    """A config file, step parameter or CLI option is malformed or unknown."""


class PluginError(LivesegError):
    """A plugin could not be loaded or registered something invalid."""


class ModelError(LivesegError):
    """Model weights are missing, corrupt or of the wrong kind."""


class HardwareError(ConfigError):
    """The Micro-Manager configuration does not load, or a device refuses a setting."""


class StorageError(LivesegError):
    """A folder liveseg must write to is missing, not a folder, or not writable."""
