"""The console's authoritative DNS server: UDP and TCP on one port, one thread, one selector.

A single thread owns the pure core, so nothing needs a lock.  UDP is drained in bursts (many
datagrams per wake-up, the cheapest loop CPython offers, see bench/console_ingest.py); TCP
connections are length-prefixed, bounded in message size, pending output, count (overall and
per source address), idle time and lifetime, so a slow or hostile client only ever costs its
own connections and cannot hold every slot.

Group commit: the answers of one select round (a UDP burst and the TCP messages that arrived
with it) are collected, the core commits once, and only then are they sent; an answer that
acknowledges something is replaced by SERVFAIL when that commit failed.  One fsync covers a
whole burst, and no device is told it may forget an event the console only holds in memory.
Every query with a DNS header gets an answer (SERVFAIL when nothing better is possible); only
headerless data, DNS responses and datagrams longer than any query stay unanswered.

Sockets are bound here, or inherited from systemd (socket activation), so the console can serve
port 53 without root or capabilities.  State is flushed once per ``flush_interval`` and on
shutdown; ``stop()`` is safe from a signal handler.
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
from typing import Any

from console.config import ServerLimits
from console.handler import Responder, Response
from firmware.shared.activation import take_passed_fds
from firmware.shared.errors import CoalmineError, EnvironmentFault, UsageError

log = logging.getLogger(__name__)
_UDP_BURST = 512
_RCVBUF = 4 << 20
SYSTEMD = "systemd"  # --listen value: take the sockets systemd passes (sd_listen_fds(3))


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    source: str
    opened: float
    last: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)


def _always_durable() -> bool:
    return True


# --- where the sockets come from --------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:5353`` or ``[::1]:5353`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"bad listen address {text!r}",
                         hint=f"use HOST:PORT, e.g. 127.0.0.1:5353, or {SYSTEMD}")
    return host, int(port)


def bind_or_inherit(listen: str) -> tuple[socket.socket, socket.socket]:
    """(UDP, TCP) sockets: inherited from systemd when it passed them, else bound to ``listen``.

    Socket activation wins whenever LISTEN_PID names this process, whatever ``listen`` says;
    ``listen == "systemd"`` insists on it.
    """
    fds = [fd for fd, _ in take_passed_fds()]
    if fds:
        return _inherit(fds)
    if listen == SYSTEMD:
        raise UsageError("--listen systemd, but no sockets were passed to this process",
                         hint="start it from a .socket unit (LISTEN_FDS, LISTEN_PID), "
                         "or give HOST:PORT")
    return _bind(*parse_listen(listen))


def _inherit(fds: list[int]) -> tuple[socket.socket, socket.socket]:
    """One datagram and one listening stream socket (IPv4 or IPv6) out of ``fds``."""
    hint = "the .socket unit needs exactly one ListenDatagram= and one ListenStream="
    if len(fds) != 2:
        raise EnvironmentFault(f"systemd passed {len(fds)} sockets, expected 2", hint=hint)
    socks: list[socket.socket] = []
    try:
        for fd in fds:
            socks.append(socket.socket(fileno=fd))
    except OSError as exc:
        for s in socks:
            s.close()
        raise EnvironmentFault(f"a descriptor from systemd is not a socket: {exc.strerror}",
                               hint=hint) from None
    by_type = {s.type: s for s in socks if s.family in (socket.AF_INET, socket.AF_INET6)}
    udp, tcp = by_type.get(socket.SOCK_DGRAM), by_type.get(socket.SOCK_STREAM)
    if udp is None or tcp is None or not tcp.getsockopt(socket.SOL_SOCKET,
                                                        socket.SO_ACCEPTCONN):
        for s in socks:
            s.close()
        raise EnvironmentFault("systemd passed sockets of the wrong kind", hint=hint)
    return udp, tcp


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
                    hint="is another server on that port? ports below 1024 need socket "
                    "activation (--listen systemd) or CAP_NET_BIND_SERVICE",
                ) from None
            continue
        return udp, tcp
    raise EnvironmentFault(f"no free port for both UDP and TCP on {host}")


# --- the server ---------------------------------------------------------------------------------


class Server:
    """Serves ``responder`` on ``sockets`` (UDP, TCP) until ``stop()``.

    ``on_tick`` persists state (and runs at the end); ``commit`` makes durable what the answers
    of one round acknowledge and returns False when it could not.
    """

    def __init__(
        self, responder: Responder, sockets: tuple[socket.socket, socket.socket],
        limits: ServerLimits, on_tick: Callable[[], None],
        commit: Callable[[], bool] = _always_durable,
    ) -> None:
        self.responder = responder
        self.limits = limits
        self.on_tick = on_tick
        self.commit = commit
        self.udp, self.tcp = sockets
        with contextlib.suppress(OSError):
            self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        self.udp.setblocking(False)
        self.tcp.setblocking(False)
        self.address: tuple[str, int] = self.udp.getsockname()[:2]
        self._conns: dict[socket.socket, _Conn] = {}
        self._sources: dict[str, int] = {}
        self._udp_out: list[tuple[bytes, Response, Any]] = []
        self._tcp_out: list[tuple[_Conn, bytes, Response]] = []
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
                self._send_round()
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
        idle, lifetime = self.limits.tcp_idle_timeout, self.limits.tcp_lifetime
        for conn in [c for c in self._conns.values()
                     if now - c.last > idle or now - c.opened > lifetime]:
            self._close(conn)

    def _drain_wake(self, _sock: object, _mask: int) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)

    # --- answers: built during the round, committed once, then sent -----------------------------

    def _respond(self, data: bytes, tcp: bool) -> Response:
        try:
            return self.responder.respond(data, tcp)
        except Exception:  # a bug must not take the console down: log it, SERVFAIL, stay up
            log.exception("internal error answering a %d-byte query", len(data))
            return Response(self._servfail(data))

    def _servfail(self, data: bytes) -> bytes | None:
        try:
            return self.responder.servfail(data)
        except Exception:
            log.exception("internal error building a SERVFAIL")
            return None

    def _commit(self) -> bool:
        try:
            return self.commit()
        except Exception:
            log.exception("internal error in commit")
            return False

    def _send_round(self) -> None:
        udp, tcp = self._udp_out, self._tcp_out
        if not udp and not tcp:
            return
        self._udp_out, self._tcp_out = [], []
        durable = True
        if any(r.needs_commit for _, r, _ in udp) or any(r.needs_commit for _, _, r in tcp):
            durable = self._commit()
        sendto = self.udp.sendto
        for data, response, addr in udp:
            wire = response.wire if durable or not response.needs_commit else self._servfail(data)
            if wire is not None:
                with contextlib.suppress(OSError):
                    sendto(wire, addr)
        touched: dict[socket.socket, _Conn] = {}
        for conn, data, response in tcp:
            wire = response.wire if durable or not response.needs_commit else self._servfail(data)
            if wire is not None and self._conns.get(conn.sock) is conn:
                conn.outbuf += len(wire).to_bytes(2, "big") + wire
                touched[conn.sock] = conn
        for conn in touched.values():
            if len(conn.outbuf) > self.limits.tcp_max_pending_out:
                self._close(conn)
            else:
                self._write(conn)

    # --- UDP ----------------------------------------------------------------------------------

    def _drain_udp(self, _sock: object, _mask: int) -> None:
        recvfrom, respond, out = self.udp.recvfrom, self._respond, self._udp_out
        most = self.limits.max_query
        for _ in range(_UDP_BURST):
            try:
                data, addr = recvfrom(most + 1)  # a longer datagram arrives cut to most + 1
            except BlockingIOError:
                return
            except OSError:
                continue
            if len(data) <= most:  # longer than any query: dropped unread
                out.append((data, respond(data, False), addr))

    # --- TCP ----------------------------------------------------------------------------------

    def _accept(self, _sock: object, _mask: int) -> None:
        try:
            sock, addr = self.tcp.accept()
        except OSError:
            return
        source = str(addr[0])
        if (len(self._conns) >= self.limits.tcp_connections
                or self._sources.get(source, 0) >= self.limits.tcp_per_source):
            sock.close()
            return
        sock.setblocking(False)
        now = time.monotonic()
        conn = _Conn(sock, source, now, now)
        self._conns[sock] = conn
        self._sources[source] = self._sources.get(source, 0) + 1
        self._sel.register(sock, selectors.EVENT_READ, self._conn_event)

    def _conn_event(self, sock: object, mask: int) -> None:
        conn = self._conns.get(sock)  # type: ignore[call-overload]
        if conn is None:
            return
        if mask & selectors.EVENT_READ and not self._read(conn):
            self._close(conn)
            return
        if mask & selectors.EVENT_WRITE:
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
            if size > self.limits.max_query:
                return False
            if len(conn.inbuf) < 2 + size:
                break
            message = bytes(conn.inbuf[2 : 2 + size])
            del conn.inbuf[: 2 + size]
            self._tcp_out.append((conn, message, self._respond(message, True)))
        return True

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
        if self._conns.pop(conn.sock, None) is None:
            return
        left = self._sources.pop(conn.source) - 1
        if left:
            self._sources[conn.source] = left
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
