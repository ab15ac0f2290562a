"""Liveness the agent proves to systemd: it pings the watchdog only while it truly works.

The agent unit is ``Type=notify`` with ``WatchdogSec=``: systemd restarts an agent that stops
pinging.  A heartbeat alone cannot show that the agent's event receiver died (heartbeats would go
on while events pile up unseen), so every thread that must run reports progress here, and the
ping is sent only while each of them has made progress within its allowance.  Notifications go
through python3-systemd (``systemd.daemon.notify``); outside systemd (no ``NOTIFY_SOCKET``, the
lab and the tests) nothing is sent, and a test double can stand in for the notifier.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware.shared.notify import Notify

log = logging.getLogger(__name__)
def watchdog_period() -> float | None:
    """Seconds systemd allows between pings (``WATCHDOG_USEC``), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000


@dataclass
class Liveness:
    """Progress stamps of the threads that must run; ``healthy`` is what the ping depends on."""

    clock: Callable[[], float] = time.monotonic
    _allowance: dict[str, float] = field(default_factory=dict)
    _last: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, name: str, allowance: float) -> None:
        """``name`` must call ``tick(name)`` at least every ``allowance`` seconds."""
        with self._lock:
            self._allowance[name] = allowance
            self._last[name] = self.clock()

    def tick(self, name: str) -> None:
        with self._lock:
            self._last[name] = self.clock()

    def late(self) -> list[str]:
        """The names that have not made progress within their allowance."""
        now = self.clock()
        with self._lock:
            return sorted(n for n, a in self._allowance.items() if now - self._last[n] > a)


class Watchdog:
    """Sends READY once and then WATCHDOG=1 pings while ``liveness`` is healthy."""

    def __init__(self, liveness: Liveness, notify: Notify, period: float | None) -> None:
        self.liveness = liveness
        self.notify = notify
        self.period = period
        self.stalled: list[str] = []

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def check(self, extra: Callable[[], list[str]] = list) -> bool:
        """Ping if every thread is alive and on time; returns whether it pinged."""
        late = self.liveness.late() + extra()
        if late != self.stalled:
            if late:
                log.error("not pinging the watchdog: %s stopped making progress; systemd will "
                          "restart the agent", ", ".join(late))
            self.stalled = late
        if late:
            self.notify(f"STATUS=stalled: {', '.join(late)}")
            return False
        if self.period is not None:
            self.notify("WATCHDOG=1")
        return True
