"""What the honeypots that only listen and talk share: their configuration and a bounded reader.

FTP, Telnet and Redis need nothing but where to listen (``[services.NAME]`` in device.toml, off
unless the settings turn them on) and what to say first; :class:`ListenerService` gives them
that, and its ``start`` listens through the base's guard.  :class:`Session` is one connection of
a line-based protocol: attacker bytes arrive split anywhere, and the protocol sees only whole
lines (LF, CR LF, or a lone CR as Telnet clients send it), each at most ``MAX_LINE`` bytes: an
overlong line is handed on cut at that length and the rest of it is dropped, so no client can
make a service hold more than one line of its input.  After ``max_tries`` login attempts the
session ends, as the real servers do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import ClassVar, cast

from firmware.config import DeviceConfig, Listener
from firmware.protocol.catalogue import EventCode
from firmware.services.base import Service

log = logging.getLogger(__name__)

MAX_LINE = 1024
MAX_UNSENT = 64 * 1024  # replies a client has not taken before no more requests are answered


class ListenerService(Service, register=False):
    """A service configured only by ``[services.NAME]``: enabled, host, port, banner."""

    banner: ClassVar[str]  # the default greeting (``services.NAME.banner`` replaces it)

    @classmethod
    def enabled(cls, cfg: DeviceConfig) -> bool:
        return cfg.listeners[cls.name].enabled

    @property
    def settings(self) -> Listener:
        return self.cfg.listeners[self.name]

    @property
    def greeting(self) -> str:
        return self.settings.banner or self.banner

    def session(self) -> asyncio.Protocol:
        raise NotImplementedError

    async def start(self) -> None:
        await self.listen(self.session, self.settings.host, self.settings.port)


class Session(asyncio.Protocol):
    """One connection of a line-based protocol: ``greet`` once, then ``line`` per line."""

    max_tries: ClassVar[int] = 3

    def __init__(self, service: ListenerService) -> None:
        self.service = service
        self.transport: asyncio.Transport | None = None
        self.pending = bytearray()
        self.skipping = False  # inside the dropped rest of an overlong line
        self.tries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.greet()

    def data_received(self, data: bytes) -> None:
        self.pending += self.unwrap(data)
        while self.ready():
            end = self.pending.find(b"\n")
            if end < 0:
                if len(self.pending) >= MAX_LINE:
                    line = bytes(self.pending[:MAX_LINE])
                    self.pending.clear()
                    if not self.skipping:
                        self.skipping = True
                        self.line(line)
                return
            line = bytes(self.pending[:end]).rstrip(b"\r")
            del self.pending[:end + 1]
            if self.skipping:
                self.skipping = False
                continue
            self.line(line[:MAX_LINE])

    def ready(self) -> bool:
        """Whether to answer the next request now: the connection is open and the client has
        taken its earlier replies (else ``resume_writing`` goes on once it has), so no client
        can pile up replies in memory by sending without reading."""
        return (self.transport is not None and not self.transport.is_closing()
                and self.transport.get_write_buffer_size() <= MAX_UNSENT)

    def resume_writing(self) -> None:
        self.data_received(b"")

    def unwrap(self, data: bytes) -> bytes:
        """The protocol's own framing taken off what arrived (Telnet's commands); as is here."""
        return data

    def greet(self) -> None:
        raise NotImplementedError

    def line(self, line: bytes) -> None:
        raise NotImplementedError

    def emit(self, code: EventCode, data: Mapping[str, str | bytes | int]) -> None:
        """An event about this connection (addresses from its socket)."""
        if self.transport is not None:
            self.service.emit(code, self.transport, data)

    def send(self, text: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(text)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def tried(self) -> bool:
        """Count a login attempt; True when it was the last one allowed (then say goodbye)."""
        self.tries += 1
        return self.tries >= self.max_tries
