"""The one small base every honeypot service subclasses, and the registry of services.

A service only says what it is (``name``, ``default_port``, the ``event_codes`` it may emit) and
how to ``start``.  Everything that must be the same for every service lives here, so no service
can get it wrong: the source/destination of an event come from the real socket (peername and
sockname), never from anything the attacker sent; attacker strings are decoded with replacement,
made inert (control and format characters escaped) and bounded; logdata keys are upper case;
a code the service did not declare is a bug and raises; a failing sink is logged and skipped.
Connections are accepted through :mod:`firmware.services.guard`, which applies the per-source
and per-connection limits from ``cfg.limits``.  On the device a service never binds its port
itself: systemd holds the listener (a ``.socket`` unit) and passes it in (``LISTEN_FDS``), so the
service needs no capability and no network access of its own; the lab and the tests, which start
services as plain processes, get a socket bound to the configured host and port instead.

Subclasses register themselves (``__init_subclass__``); :func:`discover` imports every module of
this package, so adding a service is adding a file, never editing an import list.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import json
import logging
import pkgutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from firmware.config import DeviceConfig
from firmware.eventpath import EventSink, encode_datagram
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import KEY_PATTERN, Event, Value
from firmware.protocol.text import bound, inert
from firmware.services.guard import Guard, SourceCounter
from firmware.shared.activation import pick_fd, take_passed_fds
from firmware.shared.errors import EnvironmentFault, UsageError

log = logging.getLogger(__name__)

REGISTRY: dict[str, type[Service]] = {}
IDLE_POLL = 5.0  # seconds between looks at whether anyone is connected


class HasExtraInfo(Protocol):
    """Anything that knows its socket: an asyncio transport, an asyncssh connection."""

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class Service:
    """Base of every honeypot service.  Subclasses set the class attributes and ``start``."""

    name: ClassVar[str]
    default_port: ClassVar[int]
    event_codes: ClassVar[frozenset[EventCode]]
    sniff_bytes: ClassVar[int] = 0  # how much of each connection's first bytes to keep (guard.head)

    def __init_subclass__(cls, *, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not register:
            return
        for attr in ("name", "default_port", "event_codes"):
            if attr not in cls.__dict__:
                raise TypeError(f"service {cls.__qualname__} must set {attr}")
        if cls.name in REGISTRY:
            raise TypeError(f"service name {cls.name!r} registered twice")
        REGISTRY[cls.name] = cls

    def __init__(self, cfg: DeviceConfig, sinks: Sequence[EventSink],
                 *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.sinks = list(sinks)
        self.clock = clock
        self.sources = SourceCounter(cfg.limits.connections_per_source,
                                     cfg.limits.connections_total)
        self.guards: dict[object, Guard] = {}
        self.server: asyncio.Server | None = None
        self.socket_activated = False  # listening on a socket systemd passed in

    # --- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def enabled(cls, cfg: DeviceConfig) -> bool:
        """Whether the configuration turns this service on (on unless a service says otherwise)."""
        return True

    async def start(self) -> None:
        """Bind and start serving; returns once the service is listening."""
        raise NotImplementedError

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set.  A service whose own machinery can die (the port-scan
        detector's packet socket) raises here instead, so the process fails and systemd
        restarts it: a dead part never hangs silently.

        A service systemd started from its socket also returns once nobody has been connected
        for ``limits.idle_exit`` seconds: systemd keeps the port and starts the service again
        at the next connection (which waits in the socket's backlog meanwhile), so an idle
        device holds no honeypot process in memory."""
        idle, limit = 0.0, self.cfg.limits.idle_exit
        poll = min(IDLE_POLL, limit / 4)
        while not self.socket_activated or idle < limit:
            try:
                await asyncio.wait_for(stop.wait(), poll)
                return
            except TimeoutError:
                idle = 0.0 if self.guards else idle + poll
        log.info("%s: nobody connected for %.0f s: exiting until the next connection",
                 self.name, idle)

    @classmethod
    def make_host_key(cls, cfg: DeviceConfig, group: str | None = None) -> str:
        """Create what the service reads but must never write itself (run before it starts).

        On the device a root oneshot runs this, so the service gets no writable storage.
        Returns a line for the operator (e.g. the key's fingerprint).
        """
        raise UsageError(f"service {cls.name} has no host key to make")

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self.server is not None:
            self.server.close()
        for guard in list(self.guards.values()):
            guard.cut("service stopping")
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the configured one only when that was 0)."""
        if self.server is None or not self.server.sockets:
            return -1
        return int(self.server.sockets[0].getsockname()[1])

    async def listen(self, inner: Callable[[], asyncio.Protocol],
                     host: str, port: int) -> asyncio.Server:
        """Listen on ``host:port``; every connection goes through a :class:`Guard`."""
        limits = self.cfg.limits
        loop = asyncio.get_running_loop()

        def factory() -> Guard:
            return Guard(inner, self.sources, self.guards, max_bytes=limits.connection_bytes,
                         timeout=limits.connection_timeout, sniff_bytes=self.sniff_bytes)

        inherited = inherited_listener(self.name)
        try:
            if inherited is not None:
                self.server = await loop.create_server(factory, sock=inherited)
                self.socket_activated = True
            else:
                self.server = await loop.create_server(factory, host, port)
        except OSError as exc:
            raise EnvironmentFault(
                f"{self.name}: cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="is another program using the port? ports below 1024 need "
                     "CAP_NET_BIND_SERVICE or socket activation") from None
        where = address(self.server.sockets[0].getsockname()) if self.server.sockets else ("", -1)
        log.info("%s listening on %s port %d (%s)", self.name, where[0] or "?", where[1],
                 "socket from systemd" if inherited is not None else "bound here")
        return self.server

    def guard_of(self, conn: HasExtraInfo) -> Guard | None:
        """The guard of an open connection, found by its peer address."""
        return self.guards.get(conn.get_extra_info("peername"))

    # --- events ----------------------------------------------------------------------------------

    def emit(self, code: EventCode, conn: HasExtraInfo,
             data: Mapping[str, str | bytes | int]) -> Event:
        """Build an event from the real socket of ``conn`` and hand it to every sink."""
        if code not in self.event_codes:
            raise ValueError(f"bug: service {self.name} emitted undeclared event code {code!r}")
        src_host, src_port = address(conn.get_extra_info("peername"))
        dst_host, dst_port = address(conn.get_extra_info("sockname"))
        event = Event(code=code, time=self.clock(), src_host=src_host, src_port=src_port,
                      dst_host=dst_host, dst_port=dst_port, data=clean_data(data))
        event = fit(event, self.cfg.limits.event_datagram_bytes)
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:  # one failing sink never stops the service or the other sinks
                log.exception("%s: event sink %r failed", self.name, sink)
        return event


def inherited_listener(service: str) -> socket.socket | None:
    """The listening TCP socket systemd passed for ``service``, or None (then bind as usual).

    The variables are removed once read, so nothing this process starts mistakes them for its own.
    """
    fd = pick_fd(take_passed_fds(), service)
    if fd is None:
        return None
    try:
        sock = socket.socket(fileno=fd)
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError as exc:
        raise EnvironmentFault(f"{service}: socket {fd} passed by systemd is unusable: {exc}",
                               hint=f"check ListenStream= in coalmine-{service}.socket") from None
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise EnvironmentFault(f"{service}: socket {fd} passed by systemd is not a listening "
                               "stream socket", hint=f"check coalmine-{service}.socket")
    sock.setblocking(False)
    return sock


def address(sockaddr: object) -> tuple[str, int]:
    """``(host, port)`` of a socket address; ``("", -1)`` when there is none (not TCP/UDP)."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return "", -1
    host, port = sockaddr[0], sockaddr[1]
    if not isinstance(host, str) or not isinstance(port, int):
        return "", -1
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:  # not an IP socket: host fields hold IP addresses or nothing
        return "", -1
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), port


def clean_data(data: Mapping[str, str | bytes | int]) -> dict[str, Value]:
    """Upper-case keys (a bad key is a bug), inert bounded strings, integers as they are."""
    out: dict[str, Value] = {}
    for key, value in data.items():
        upper = key.upper()
        if not KEY_PATTERN.fullmatch(upper):
            raise ValueError(f"bug: event data key {key!r} is not a valid logdata key")
        if isinstance(value, bool) or not isinstance(value, str | bytes | int):
            raise ValueError(f"bug: event data {key} is a {type(value).__name__}")
        out[upper] = value if isinstance(value, int) else inert(value)
    return out


def fit(event: Event, max_bytes: int) -> Event:
    """Shorten the longest strings until the event fits one datagram of ``max_bytes``."""
    data = dict(event.data)
    while len(encode_datagram(event._replace(data=data))) > max_bytes:
        strings = {k: v for k, v in data.items() if isinstance(v, str) and len(v) > 8}
        if not strings:
            break
        longest = max(strings, key=lambda k: len(json.dumps(strings[k])))
        data[longest] = bound(strings[longest], len(strings[longest]) // 2)
    return event._replace(data=data)


def load(name: str) -> type[Service] | None:
    """The service ``name`` with only its own module imported (each lives in a module of its
    name): a honeypot's process never loads the libraries of the others (asyncssh,
    cryptography, scapy), which would triple its memory.  None if there is no such service."""
    package = __name__.rsplit(".", 1)[0]
    if name.startswith("_") or not name.isidentifier():
        return None
    try:
        importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.{name}":
            raise
        return None
    return REGISTRY.get(name)


def discover() -> dict[str, type[Service]]:
    """Import every module of this package so each service registers itself."""
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    return REGISTRY
