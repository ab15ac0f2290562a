"""The local event path: services hand events to the beacon agent over a Unix datagram socket.

Services run as their own users and never see the device key; all they can do is drop a
datagram (compact event JSON) into ``<run_dir>/events.sock``, which the agent owns and a shared
group may write to.  A sink never raises into a service: a dead agent costs at most the events
that do not fit the sender's small retry buffer, and the service keeps serving.
"""

from __future__ import annotations

import collections
import json
import logging
import socket
from pathlib import Path
from typing import Protocol

from firmware.errors import DecodeError
from firmware.protocol.event import Event, from_compact

log = logging.getLogger(__name__)


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


def encode_datagram(event: Event) -> bytes:
    return json.dumps(event.to_compact(), separators=(",", ":")).encode("utf-8")


def decode_datagram(data: bytes, max_bytes: int) -> Event:
    """Validate one datagram from a service (a compromised service is still attacker input)."""
    if len(data) > max_bytes:
        raise DecodeError(f"event datagram of {len(data)} bytes exceeds {max_bytes}", offset=0)
    try:
        obj = json.loads(data.decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise DecodeError(f"event datagram is not JSON: {exc}", offset=0) from None
    return from_compact(obj)


class SocketSink:
    """Sends events to the agent's socket; keeps a bounded backlog while the agent is away."""

    def __init__(self, path: Path, backlog: int = 256) -> None:
        self.path = path
        self.backlog: collections.deque[bytes] = collections.deque(maxlen=backlog)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def emit(self, event: Event) -> None:
        self.backlog.append(encode_datagram(event))
        self.flush()

    def flush(self) -> None:
        while self.backlog:
            try:
                self.sock.sendto(self.backlog[0], str(self.path))
            except OSError as exc:
                log.warning("event agent not reachable at %s (%s); %d events waiting",
                            self.path, exc.strerror, len(self.backlog))
                return
            self.backlog.popleft()

    def close(self) -> None:
        self.sock.close()


class MemorySink:
    """In-memory sink for tests: same interface as ``SocketSink``."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
