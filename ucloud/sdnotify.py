"""Readiness for systemd: ``Type=notify`` units (``systemd/``) learn when a service is up.

``notify("READY=1")`` tells the service manager that started this process (``$NOTIFY_SOCKET``
set) that it is ready, ``notify("STOPPING=1")`` that it is stopping. The protocol is spoken
by systemd's own Python binding (Debian's ``python3-systemd``, seen through the venv's
system site-packages); without ``$NOTIFY_SOCKET`` nothing is sent and nothing is imported.
"""

from __future__ import annotations

import importlib
import logging
import os

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` to the service manager; whether it was sent."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        log.warning("NOTIFY_SOCKET is set but python3-systemd is missing: %s not sent", state)
        return False
    return bool(daemon.notify(state))
