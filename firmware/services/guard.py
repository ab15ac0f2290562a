"""Per-source and per-connection limits, applied before any service code sees a byte.

A honeypot is exposed to whoever finds it, so every service gets the same guard between the
socket and its protocol: at most ``connections_per_source`` open connections per source address
(extra ones are closed before the service's protocol is even created), at most
``connection_bytes`` received and ``connection_timeout`` seconds per connection.  The guard is an
asyncio protocol wrapping the service's own protocol, so it works for plain asyncio services and
for asyncssh alike, and the service keeps serving others whatever one client does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger(__name__)


class SourceCounter:
    """Open connections per source host, with a ceiling."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: collections.Counter[str] = collections.Counter()

    def acquire(self, host: str) -> bool:
        if self.open[host] >= self.limit:
            return False
        self.open[host] += 1
        return True

    def release(self, host: str) -> None:
        self.open[host] -= 1
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.host = str(self.peer[0]) if isinstance(self.peer, tuple) else ""
        if not self.sources.acquire(self.host):
            log.info("connection from %s refused: %d already open from there",
                     self.host, self.sources.limit)
            self.cut_reason = "too many connections from this source"
            self.transport.abort()
            return
        self.registry[self.peer] = self
        self.timer = asyncio.get_running_loop().call_later(
            self.timeout, self.cut, "connection time limit")
        self.inner = self.make_inner()
        self.inner.connection_made(transport)

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

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.inner is None:
            return
        self.sources.release(self.host)
        if self.registry.get(self.peer) is self:
            del self.registry[self.peer]
        inner, self.inner = self.inner, None
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def cut(self, reason: str) -> None:
        """Close the connection now (the inner protocol still gets ``connection_lost``)."""
        if self.cut_reason or self.transport is None:
            return
        self.cut_reason = reason
        log.info("connection from %s cut: %s", self.host, reason)
        self.transport.abort()
