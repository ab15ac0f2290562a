"""Flood control: an attacker hammering a honeypot floods neither the DNS channel nor memory.

Events from the network are grouped by (source address, event code, port).  Within one window
(``limits.flood_window`` seconds from a group's first event) the first ``limits.flood_burst``
events of the group go out as they are, so the first event of a new source always leaves at
once, and the rest are only counted; when the window ends a count goes out as one
EVENTS_AGGREGATED event ("412 more login attempts from 10.0.0.7 on port 22 in 60 s").  The
table of groups is bounded (``limits.flood_sources``); a group pushed out of a full table
reports its count at once, so counts are never dropped, only reported early.  Events without a
source address (the device's own, the button's) are never held back.  An IPv6 source is its
/64 (one host holds a whole /64 and can send from any address in it); the count then names the
network's first address and says ``PREFIX=64``.  Windows are timed by the monotonic clock, so
a wall clock set back (a spoofed NTP answer) cannot keep counts from being reported.

The state lives in the agent, not in the services: with socket activation a service's process
is short-lived, and a compromised service must not be able to hide another's events.  Counts
not yet reported when the agent stops are reported as it stops (``flush``); a crash loses them,
and the restart is itself reported (AGENT_RESTARTED).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.shared.sources import source_key

Group = tuple[str, int, int]  # source address, event code, destination port


@dataclass
class _Window:
    start: float
    passed: int = 0
    held: int = 0


class FloodControl:
    EMITS = frozenset({EventCode.EVENTS_AGGREGATED})

    def __init__(self, burst: int, window: float, most: int,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.burst, self.window, self.most = burst, window, most
        self.clock, self.wall = clock, wall
        self.groups: collections.OrderedDict[Group, _Window] = collections.OrderedDict()
        self.held_total = 0  # events counted rather than sent, since the start
        # the receiver admits and reports; the stopping agent flushes, maybe while a stalled
        # receiver is still at it
        self.lock = threading.Lock()

    def admit(self, event: Event) -> list[Event]:
        """What to queue now for ``event``: itself while its group is within its burst, and
        the count of any group this one pushed out of a full table."""
        if not event.src_host:
            return [event]
        with self.lock:
            return self._admit(event, (source_key(event.src_host), int(event.code),
                                       event.dst_port))

    def _admit(self, event: Event, key: Group) -> list[Event]:
        now = self.clock()
        out: list[Event] = []
        win = self.groups.get(key)
        if win is not None and now - win.start >= self.window:
            del self.groups[key]  # a new window: to the end, where the newest windows are
            out += self._report(key, win, now)
            win = None
        if win is None:
            while len(self.groups) >= self.most:
                old_key, old = self.groups.popitem(last=False)
                out += self._report(old_key, old, now)
            win = self.groups[key] = _Window(now)
        if win.passed < self.burst:
            win.passed += 1
            out.append(event)
        else:
            win.held += 1
            self.held_total += 1
        return out

    def due(self) -> list[Event]:
        """The counts of every group whose window has ended (their groups forgotten)."""
        with self.lock:
            now = self.clock()
            out: list[Event] = []
            while self.groups:
                key, win = next(iter(self.groups.items()))
                if now - win.start < self.window:
                    break  # groups are in the order their windows began
                del self.groups[key]
                out += self._report(key, win, now)
            return out

    def flush(self) -> list[Event]:
        """Every count not reported yet (the agent is stopping)."""
        with self.lock:
            now = self.clock()
            out = [e for key, win in self.groups.items() for e in self._report(key, win, now)]
            self.groups.clear()
            return out

    def _report(self, key: Group, win: _Window, now: float) -> list[Event]:
        if not win.held:
            return []
        host, code, port = key
        data = {"CODE": code, "COUNT": win.held, "SECONDS": max(1, round(now - win.start))}
        if "/" in host:
            host, prefix = host.split("/")
            data["PREFIX"] = int(prefix)
        return [Event(EventCode.EVENTS_AGGREGATED, self.wall(), src_host=host, dst_port=port,
                      data=data)]

