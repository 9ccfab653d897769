"""Exceptions users see: each says what is wrong and how to fix it."""

from __future__ import annotations

__all__ = ["ConfigError", "LivesegError", "ModelError", "PluginError"]


class LivesegError(Exception):
    """Base class of every error liveseg raises on purpose."""


class ConfigError(LivesegError, ValueError):
    """A config file, step parameter or CLI option is malformed or unknown."""


class PluginError(LivesegError):
    """A plugin could not be loaded or registered something invalid."""


class ModelError(LivesegError):
    """Model weights are missing, corrupt or of the wrong kind."""
