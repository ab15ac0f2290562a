"""Telling systemd how a daemon is doing (sd_notify: READY=1, WATCHDOG=1, STATUS=...).

Shared by every daemon of the device runtime (the agent, the button daemon) so each reports
readiness the same way, through python3-systemd, which the image ships.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from firmware.shared.errors import EnvironmentFault

Notify = Callable[[str], object]


def systemd_notify() -> Notify:
    """``systemd.daemon.notify`` when running under systemd, else a notifier that does nothing."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return lambda _state: None
    try:
        from systemd import daemon
    except ImportError:
        raise EnvironmentFault("running under systemd but python3-systemd is missing",
                               hint="the image must include python3-systemd") from None
    return daemon.notify  # type: ignore[no-any-return]
