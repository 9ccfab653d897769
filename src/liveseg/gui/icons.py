"""Offline labs: stop pymmcore-widgets from waiting on icon downloads.

pymmcore-widgets draws its buttons with iconify icons, which superqt fetches one by one
from ``api.iconify.design`` through pyconify (cached on disk once fetched). On a
microscope PC without internet every uncached icon waits for a failed DNS lookup: about
20 s before the MDA widget appears. One lookup tells whether the host is reachable; if
it is not, later downloads fail at once and superqt draws its fallback icons, while
icons already in pyconify's cache still load.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

__all__ = ["ICON_HOST", "skip_icon_downloads_when_offline"]

ICON_HOST = "api.iconify.design"
log = logging.getLogger("liveseg.gui")


def skip_icon_downloads_when_offline() -> bool:
    """Make icon downloads fail immediately when :data:`ICON_HOST` cannot be resolved.

    Returns True when downloads are (now) skipped.
    """
    try:
        import requests
        from pyconify.api import _session  # private, but the one session pyconify uses
    except ImportError:
        return False
    session = _session()
    if getattr(session.get_adapter(f"https://{ICON_HOST}"), "liveseg_offline", False):
        return True
    try:
        socket.getaddrinfo(ICON_HOST, 443)
        return False
    except OSError:
        pass

    class Offline(requests.adapters.BaseAdapter):  # type: ignore[misc]
        """A transport that fails every request at once (no DNS lookup, no timeout)."""

        liveseg_offline = True

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            raise requests.ConnectionError(f"{ICON_HOST} is unreachable", request=request)

        def close(self) -> None:
            """Nothing to release."""

    log.info("%s is unreachable: icons not in pyconify's cache use fallbacks", ICON_HOST)
    session.mount(f"https://{ICON_HOST}", Offline())
    session.mount(f"http://{ICON_HOST}", Offline())
    return True
