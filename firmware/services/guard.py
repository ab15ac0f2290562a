"""Per-source and per-connection limits, applied before any service code sees a byte.

A honeypot is exposed to whoever finds it, so every service gets the same guard between the
socket and its protocol: at most ``connections_per_source`` open connections per source (an
IPv4 address, an IPv6 /64) and ``connections_total`` in all (extra ones are closed before the
service's protocol is even created), at most ``connection_bytes`` received and
``connection_timeout`` seconds per connection.  A client that does not read what it is sent
stops being read (``pause_writing``) and is cut once ``MAX_UNSENT`` bytes wait for it, so
replies cannot pile up in the service's memory.  The guard is an
asyncio protocol wrapping the service's own protocol, so it works for plain asyncio services and
for asyncssh alike, and the service keeps serving others whatever one client does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from firmware.shared.sources import source_key

log = logging.getLogger(__name__)

MIN_AGE = 5.0  # seconds a connection is safe from making room for others (unless its source
#                is the busiest)
MAX_UNSENT = 256 * 1024  # bytes written to a connection and not yet taken by its client


class SourceCounter:
    """Open connections per source, with a ceiling per source and one in all."""

    def __init__(self, limit: int, total: int = 256) -> None:
        self.limit, self.total = limit, total
        self.open: collections.Counter[str] = collections.Counter()
        self.count = 0

    def acquire(self, host: str) -> bool:
        if self.open[host] >= self.limit or self.count >= self.total:
            return False
        self.open[host] += 1
        self.count += 1
        return True

    def release(self, host: str) -> None:
        self.open[host] -= 1
        self.count -= 1
        if self.open[host] <= 0:
            del self.open[host]


class Guard(asyncio.Protocol):
    """Wraps one connection's protocol; cuts the connection when a limit is hit."""

    def __init__(self, inner: Callable[[], asyncio.Protocol], sources: SourceCounter,
                 registry: dict[object, Guard], *, max_bytes: int, timeout: float,
                 sniff_bytes: int = 0) -> None:
        self.make_inner = inner
        self.inner: asyncio.Protocol | None = None
        self.sources = sources
        self.registry = registry
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.sniff_bytes = sniff_bytes
        self.head = bytearray()  # the first ``sniff_bytes`` received, for fingerprinting
        self.received = 0
        self.peer: Any = None
        self.host = ""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.cut_reason = ""
        self.counted = False  # holds a slot of the source counter
        self.opened = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.host = source_key(str(self.peer[0])) if isinstance(self.peer, tuple) else ""
        if self.sources.count >= self.sources.total:
            self.make_room()
        if not self.sources.acquire(self.host):
            log.info("connection from %s refused: %d open from there, %d in all",
                     self.host, self.sources.open[self.host], self.sources.count)
            self.cut_reason = "too many connections from this source"
            self.transport.abort()
            return
        self.counted = True
        self.registry[self.peer] = self
        self.timer = asyncio.get_running_loop().call_later(
            self.timeout, self.cut, "connection time limit")
        self.inner = self.make_inner()
        self.inner.connection_made(transport)

    def make_room(self) -> None:
        """All connections are taken: the oldest connection of the busiest source goes if that
        source holds more than this one does, else the oldest of all once it has been open
        ``MIN_AGE`` seconds.  A flood that fills the table, from one address or from many,
        cannot keep a newcomer out (the attempt that matters may arrive during the flood), and
        an honest client is short-lived: never the oldest for long.  A newcomer its own
        source's limit refuses anyway makes no room."""
        mine = self.sources.open[self.host]
        if not self.registry or mine >= self.sources.limit:
            return
        busiest, held = self.sources.open.most_common(1)[0]
        now = time.monotonic()
        victims = (g for g in self.registry.values()
                   if (g.host == busiest if held > mine + 1 else now - g.opened >= MIN_AGE))
        oldest = next(victims, None)
        if oldest is not None:
            oldest.cut(f"all {self.sources.total} connections taken: the oldest makes room")
            oldest.release()

    def data_received(self, data: bytes) -> None:
        if self.inner is None or self.cut_reason:
            return
        self.received += len(data)
        if len(self.head) < self.sniff_bytes:
            self.head += data[: self.sniff_bytes - len(self.head)]
        if self.received > self.max_bytes:
            self.cut("connection byte limit")
            return
        self.inner.data_received(data)
        self.check_unsent()

    def check_unsent(self) -> None:
        if self.transport is not None and self.transport.get_write_buffer_size() > MAX_UNSENT:
            self.cut("the client does not read its replies")

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.inner is None:
            return
        self.release()
        inner, self.inner = self.inner, None
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """The client is not taking its replies: read nothing more from it until it does."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        if self.inner is not None:
            self.inner.pause_writing()
        self.check_unsent()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        if self.inner is not None:
            self.inner.resume_writing()

    def release(self) -> None:
        """Give back this connection's slot (at once when cut to make room, not a loop turn
        later when its transport is gone)."""
        if self.counted:
            self.counted = False
            self.sources.release(self.host)
        if self.registry.get(self.peer) is self:
            del self.registry[self.peer]

    def cut(self, reason: str) -> None:
        """Close the connection now (the inner protocol still gets ``connection_lost``)."""
        if self.cut_reason or self.transport is None:
            return
        self.cut_reason = reason
        log.info("connection from %s cut: %s", self.host, reason)
        self.transport.abort()
