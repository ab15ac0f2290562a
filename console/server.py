"""The console's authoritative DNS server: UDP and TCP on one port, one thread, one selector.

A single thread owns the pure core, so nothing needs a lock.  UDP is drained in bursts (many
datagrams per wake-up, the cheapest loop CPython offers, see bench/console_ingest.py); TCP
connections are length-prefixed, bounded in message size, pending output, count and idle time,
so a slow or hostile client only ever costs its own connection.  State is flushed once per
``flush_interval`` and on shutdown; ``stop()`` is safe from a signal handler.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from console.config import ServerLimits
from console.handler import Responder
from firmware.errors import CoalmineError, EnvironmentFault, UsageError

log = logging.getLogger(__name__)
_UDP_BURST = 512
_RCVBUF = 4 << 20


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    last: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:5353`` or ``[::1]:5353`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"bad listen address {text!r}", hint="use HOST:PORT, e.g. 127.0.0.1:5353")
    return host, int(port)


def _bind(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same port (port 0: any free port for both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(128)
        except OSError as exc:
            udp.close()
            tcp.close()
            if port:
                raise EnvironmentFault(
                    f"cannot listen on {host}:{port}: {exc.strerror}",
                    hint="is another server on that port? ports below 1024 need "
                    "CAP_NET_BIND_SERVICE",
                ) from None
            continue
        with contextlib.suppress(OSError):
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp
    raise EnvironmentFault(f"no free port for both UDP and TCP on {host}")


class Server:
    """Serves ``responder`` until ``stop()``; ``on_tick`` persists state (and runs at the end)."""

    def __init__(
        self, responder: Responder, host: str, port: int, limits: ServerLimits,
        on_tick: Callable[[], None],
    ) -> None:
        self.responder = responder
        self.limits = limits
        self.on_tick = on_tick
        self.udp, self.tcp = _bind(host, port)
        self.address: tuple[str, int] = self.udp.getsockname()[:2]
        self._conns: dict[socket.socket, _Conn] = {}
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.udp, selectors.EVENT_READ, self._drain_udp)
        self._sel.register(self.tcp, selectors.EVENT_READ, self._accept)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)

    # --- life cycle ---------------------------------------------------------------------------

    def serve_forever(self) -> None:
        next_tick = time.monotonic() + self.limits.flush_interval
        try:
            while not self._stopping:
                for key, mask in self._sel.select(max(0.0, next_tick - time.monotonic())):
                    key.data(key.fileobj, mask)
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick = now + self.limits.flush_interval
        finally:
            self._tick(time.monotonic())
            self.close()

    def stop(self) -> None:
        """Ask the loop to finish (flushes state first); safe from signal handlers and threads."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _s, _f: self.stop())

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        self._sel.close()
        for sock in (self.udp, self.tcp, self._wake_r, self._wake_w):
            sock.close()

    def _tick(self, now: float) -> None:
        try:
            self.on_tick()
        except CoalmineError as exc:
            log.error("%s (%s)", exc.message, exc.hint)
        idle = self.limits.tcp_idle_timeout
        for conn in [c for c in self._conns.values() if now - c.last > idle]:
            self._close(conn)

    def _drain_wake(self, _sock: object, _mask: int) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)

    def _respond(self, data: bytes, tcp: bool) -> bytes | None:
        try:
            return self.responder.respond(data, tcp)
        except Exception:  # a bug must not take the console down; log it and stay up
            log.exception("internal error answering a %d-byte query", len(data))
            return None

    # --- UDP ----------------------------------------------------------------------------------

    def _drain_udp(self, _sock: object, _mask: int) -> None:
        recvfrom, sendto, respond = self.udp.recvfrom, self.udp.sendto, self._respond
        for _ in range(_UDP_BURST):
            try:
                data, addr = recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                continue
            out = respond(data, False)
            if out is not None:
                with contextlib.suppress(OSError):
                    sendto(out, addr)

    # --- TCP ----------------------------------------------------------------------------------

    def _accept(self, _sock: object, _mask: int) -> None:
        try:
            sock, _addr = self.tcp.accept()
        except OSError:
            return
        if len(self._conns) >= self.limits.tcp_connections:
            sock.close()
            return
        sock.setblocking(False)
        conn = _Conn(sock, time.monotonic())
        self._conns[sock] = conn
        self._sel.register(sock, selectors.EVENT_READ, self._conn_event)

    def _conn_event(self, sock: object, mask: int) -> None:
        conn = self._conns.get(sock)  # type: ignore[call-overload]
        if conn is None:
            return
        if mask & selectors.EVENT_READ and not self._read(conn):
            self._close(conn)
            return
        self._write(conn)

    def _read(self, conn: _Conn) -> bool:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        conn.last = time.monotonic()
        conn.inbuf += data
        while len(conn.inbuf) >= 2:
            size = int.from_bytes(conn.inbuf[:2], "big")
            if size > self.limits.tcp_max_message:
                return False
            if len(conn.inbuf) < 2 + size:
                break
            message = bytes(conn.inbuf[2 : 2 + size])
            del conn.inbuf[: 2 + size]
            out = self._respond(message, True)
            if out is not None:
                conn.outbuf += len(out).to_bytes(2, "big") + out
        return len(conn.outbuf) <= self.limits.tcp_max_pending_out

    def _write(self, conn: _Conn) -> None:
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(conn)
                return
            del conn.outbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        if self._sel.get_key(conn.sock).events != events:
            self._sel.modify(conn.sock, events, self._conn_event)

    def _close(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
