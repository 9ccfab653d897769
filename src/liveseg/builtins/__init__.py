"""liveseg's built-in features, each a plugin module like any third-party plugin.

The host registers the modules of :data:`BUILTIN_PLUGINS` first, in this order; each can
be switched off by its short name (``plugins: {deny: [threshold]}``), exactly as an
installed plugin can. A new built-in backend, trigger, flag policy or sink is a module
here with ``@hookimpl`` functions, added to this tuple.
"""

from __future__ import annotations

__all__ = ["BUILTIN_PLUGINS"]

BUILTIN_PLUGINS: tuple[str, ...] = (
    "liveseg.builtins.normalize",
    "liveseg.builtins.threshold",
    "liveseg.builtins.size_filter",
    "liveseg.builtins.triggers",
    "liveseg.builtins.flags",
    "liveseg.builtins.kmeans",
    "liveseg.builtins.pixel_classifier",
    "liveseg.builtins.classes",
)
"""Built-in plugin modules, registered first; each can be denied by its short name."""
