"""The local event path: services hand events to the beacon agent over a Unix datagram socket.

Services run as their own users and never see the device key; all they can do is drop a
datagram (compact event JSON) into their own socket, ``<run_dir>/<service>/events.sock``,
which the agent owns and only that service's group may write to.  The agent therefore knows
which service sent each datagram and accepts only that service's event codes.  A sink never
raises into a service: a dead agent costs at most the events that do not fit the sender's
retry buffer, and the service keeps serving.  Inside an event loop the sink retries its
backlog on its own, so events waiting through an agent restart leave without needing a later
event to push them out: soon when the agent's socket is only full (a burst), every
``retry_after`` seconds while the agent is away.

No event is lost in silence: when the buffer is full the newest events are the ones dropped
(the earliest, a source's first contact among them, are kept) and counted, and the count goes
to the agent as an EVENTS_DROPPED datagram as soon as it can be delivered; the agent reports it
as its own event naming the service.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import time
from pathlib import Path
from typing import Protocol

from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event, from_compact
from firmware.shared.errors import DecodeError

log = logging.getLogger(__name__)


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class FlushingSink(EventSink, Protocol):
    """A sink outside an event loop (device daemons): it calls ``flush`` now and then to send
    what waited while the agent was away (what :class:`SocketSink` offers)."""

    def flush(self) -> None: ...


def encode_datagram(event: Event) -> bytes:
    return json.dumps(event.to_compact(), separators=(",", ":")).encode("utf-8")


def decode_datagram(data: bytes, max_bytes: int) -> Event:
    """Validate one datagram from a service (a compromised service is still attacker input)."""
    if len(data) > max_bytes:
        raise DecodeError(f"event datagram of {len(data)} bytes exceeds {max_bytes}", offset=0)
    try:
        obj = json.loads(data.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError) as exc:  # deep nesting exhausts the parser's stack
        raise DecodeError(f"event datagram is not JSON: {type(exc).__name__}", offset=0) from None
    return from_compact(obj)


class SocketSink:
    """Sends events to the agent's socket; keeps a bounded backlog while the agent is away."""

    EMITS = frozenset({EventCode.EVENTS_DROPPED})  # its own count of what it had to drop

    def __init__(self, path: Path, backlog: int = 1024, retry_after: float = 2.0,
                 retry_full: float = 0.005) -> None:
        self.path = path
        self.limit = backlog
        self.backlog: collections.deque[bytes] = collections.deque()
        self.retry_after, self.retry_full = retry_after, retry_full
        self.retry: asyncio.TimerHandle | None = None
        self.away = False
        self.dropped = 0  # events dropped since the last count reached the agent
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def emit(self, event: Event) -> None:
        if len(self.backlog) >= self.limit:
            if not self.dropped:
                log.error("%d events wait for the agent at %s: newer ones are dropped and "
                          "counted", len(self.backlog), self.path)
            self.dropped += 1
        else:
            self.backlog.append(encode_datagram(event))
        self.flush()

    def flush(self) -> None:
        while self.backlog or self.dropped:
            report = not self.backlog
            data = self.backlog[0] if not report else encode_datagram(Event(
                EventCode.EVENTS_DROPPED, time.time(), data={"COUNT": self.dropped}))
            try:
                self.sock.sendto(data, str(self.path))
            except BlockingIOError:  # the agent's socket is full: it is reading, try soon
                self.schedule_retry(self.retry_full)
                return
            except OSError as exc:
                if not self.away:
                    log.warning("event agent not reachable at %s (%s); %d events waiting",
                                self.path, exc.strerror, len(self.backlog))
                self.away = True
                self.schedule_retry(self.retry_after)
                return
            if report:
                log.warning("told the agent at %s that %d events were dropped", self.path,
                            self.dropped)
                self.dropped = 0
            else:
                self.backlog.popleft()
        if self.away:
            log.info("event agent reachable again at %s; backlog delivered", self.path)
            self.away = False

    def schedule_retry(self, after: float) -> None:
        """Flush again later if an event loop is running (services); plain callers just wait."""
        if self.retry is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.retry = loop.call_later(after, self._retry_now)

    def _retry_now(self) -> None:
        self.retry = None
        self.flush()

    def drain(self, timeout: float, every: float = 1.0) -> int:
        """Before a short-lived sender exits: retry for up to ``timeout`` seconds (an agent
        restarting); returns, and logs, how many events could still not be handed over."""
        deadline = time.monotonic() + timeout
        self.flush()
        while (self.backlog or self.dropped) and time.monotonic() < deadline:
            time.sleep(every)
            self.flush()
        lost = len(self.backlog) + self.dropped
        if lost:
            log.error("%d events could not be handed to the agent at %s and are lost",
                      lost, self.path)
        return lost

    def close(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
        self.sock.close()
