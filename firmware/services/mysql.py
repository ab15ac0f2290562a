"""The MySQL/MariaDB honeypot: a server that asks every client for its password in clear.

An exposed 3306 is probed with default and stolen credentials.  The greeting is a real
server's Initial Handshake v10 (version from ``services.mysql.banner``, a fresh 20-byte scramble,
``mysql_native_password``, no ``CLIENT_SSL`` so no client moves to TLS).  The client's
Handshake Response 41 gives its user, database, auth plugin and connect attributes (its library
and program); the server then sends an AuthSwitchRequest to ``mysql_clear_password``.  A client
that allows it (``--enable-cleartext-plugin``, ``LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN``) sends its
password in clear (PASSWORD); one that refuses (Oracle's client without
``--enable-cleartext-plugin``; MariaDB's sends it unless it lacks the plugin) sends an empty
packet or hangs up, and the event keeps the scramble and
the client's native-password response instead (SCRAMBLE, in hashcat's mode 11200 form
``$mysqlna$<scramble>*<response>``, from which a defender can crack the password).  Either way
the answer is ERR 1045 "Access denied" and the connection ends, as the real server does after
a failed login: one attempt per connection, one event 8001 per attempt (OpenCanary's MySQL
login code and keys USERNAME, PASSWORD).

Bounds: a packet is at most ``MAX_PACKET`` bytes (its 3-byte length is checked before anything
is kept, so no multi-packet payloads), names and auth data at most ``MAX_FIELD`` bytes, at most
``MAX_ATTRS`` connect attributes kept (cut to ``MAX_FIELD``; a broken attribute block loses
only the attributes).  Bytes that are not the protocol raise
:class:`MySQLDecodeError`; the client gets ERR 1043 "Bad handshake" and the connection closes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from dataclasses import dataclass

from firmware.protocol.catalogue import EventCode
from firmware.services.base import address
from firmware.services.lines import ListenerService, Session
from firmware.shared.errors import DecodeError

MAX_PACKET = 16 * 1024
MAX_FIELD = 256
MAX_ATTRS = 32
NATIVE = b"mysql_native_password"
CLEAR = b"mysql_clear_password"

LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB = 1, 2, 4, 8
PROTOCOL_41, INTERACTIVE, SSL, TRANSACTIONS, SECURE_CONNECTION = 0x200, 0x400, 0x800, 0x2000, 0x8000
MULTI_STATEMENTS, MULTI_RESULTS, PS_MULTI_RESULTS = 1 << 16, 1 << 17, 1 << 18
PLUGIN_AUTH, CONNECT_ATTRS, LENENC_AUTH = 1 << 19, 1 << 20, 1 << 21
SESSION_TRACK, DEPRECATE_EOF = 1 << 23, 1 << 24
# what MySQL 8.0 offers, less compression and TLS (and LOCAL INFILE: nothing is ever loaded)
CAPABILITIES = (LONG_PASSWORD | FOUND_ROWS | LONG_FLAG | CONNECT_WITH_DB | 0x10 | 0x40 | 0x100
                | PROTOCOL_41 | INTERACTIVE | 0x1000 | TRANSACTIONS | 0x4000 | SECURE_CONNECTION
                | MULTI_STATEMENTS | MULTI_RESULTS | PS_MULTI_RESULTS | PLUGIN_AUTH
                | CONNECT_ATTRS | LENENC_AUTH | (1 << 22) | SESSION_TRACK | DEPRECATE_EOF)
_THREADS = itertools.count(random.SystemRandom().randrange(8, 4000))


class MySQLHoneypot(ListenerService):
    name = "mysql"
    default_port = 3306
    event_codes = frozenset({EventCode.MYSQL_LOGIN_ATTEMPT})
    banner = "8.0.40"

    def session(self) -> asyncio.Protocol:
        return _MySQLSession(self)


class MySQLDecodeError(DecodeError):
    """The client's bytes are not the MySQL client/server protocol."""


@dataclass(frozen=True)
class HandshakeResponse:
    capabilities: int
    user: bytes
    auth: bytes
    database: bytes
    plugin: bytes
    attrs: tuple[tuple[bytes, bytes], ...]

    def attr(self, key: bytes) -> bytes:
        return next((v for k, v in self.attrs if k == key), b"")


# --- the wire format (pure) ----------------------------------------------------------------------


def packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq & 0xFF]) + payload


def take_packet(buf: bytearray) -> tuple[int, bytes] | None:
    """(sequence id, payload) off the front of ``buf``, or None while it is incomplete."""
    if len(buf) < 4:
        return None
    size = int.from_bytes(buf[:3], "little")
    if size > MAX_PACKET:
        raise MySQLDecodeError(f"packet of {size} bytes", offset=0)
    if len(buf) < 4 + size:
        return None
    seq, payload = buf[3], bytes(buf[4:4 + size])
    del buf[:4 + size]
    return seq, payload


def make_scramble() -> bytes:
    """20 bytes as MySQL makes them: 7-bit, never NUL nor ``$``."""
    out = bytearray(b & 0x7F for b in os.urandom(20))
    return bytes(b + 1 if b in (0, 0x24) else b for b in out)


def greeting(version: str, thread: int, scramble: bytes) -> bytes:
    mariadb = "mariadb" in version.lower()
    caps = CAPABILITIES & ~LONG_PASSWORD if mariadb else CAPABILITIES  # MariaDB: no CLIENT_MYSQL
    return (b"\x0a" + version.encode()[:MAX_FIELD] + b"\0"
            + (thread & 0xFFFFFFFF).to_bytes(4, "little") + scramble[:8] + b"\0"
            + (caps & 0xFFFF).to_bytes(2, "little") + bytes([45 if mariadb else 255])
            + b"\x02\x00" + (caps >> 16).to_bytes(2, "little")  # status: autocommit
            + bytes([len(scramble) + 1]) + b"\0" * 10 + scramble[8:] + b"\0" + NATIVE + b"\0")


def auth_switch(plugin: bytes, data: bytes) -> bytes:
    return b"\xfe" + plugin + b"\0" + data + b"\0"


def error(code: int, state: str, message: str) -> bytes:
    return b"\xff" + code.to_bytes(2, "little") + b"#" + state.encode() + message.encode()


def hashcat(scramble: bytes, response: bytes) -> str:
    """A native-password exchange as hashcat mode 11200 (John: ``mysqlna``) reads it."""
    return f"$mysqlna${scramble.hex()}*{response.hex()}"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.left():
            raise MySQLDecodeError(f"{n} bytes wanted, {self.left()} left", offset=self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def lenenc(self) -> int:
        first = self.number(1)
        if first < 0xFB:
            return first
        if first in (0xFB, 0xFF):
            raise MySQLDecodeError(f"bad length-encoded integer 0x{first:02x}", offset=self.pos - 1)
        return self.number({0xFC: 2, 0xFD: 3, 0xFE: 8}[first])

    def string(self, n: int) -> bytes:
        if n > MAX_FIELD:
            raise MySQLDecodeError(f"field of {n} bytes", offset=self.pos)
        return self.take(n)

    def cstring(self) -> bytes:
        """Up to a NUL (or the end of the packet, as some clients leave the last one out)."""
        end = self.data.find(b"\0", self.pos)
        end = len(self.data) if end < 0 else end
        out = self.string(end - self.pos)
        self.pos = min(end + 1, len(self.data))
        return out


def parse_response(payload: bytes) -> HandshakeResponse:
    """A Handshake Response 41 (raises MySQLDecodeError for anything else, TLS requests too)."""
    r = _Reader(payload)
    caps = r.number(4) & (CAPABILITIES | SSL)
    if not caps & PROTOCOL_41:
        raise MySQLDecodeError("pre-4.1 handshake response", offset=0)
    r.take(4 + 1 + 23)  # max packet, character set, filler (MariaDB: its capabilities)
    if caps & SSL:
        raise MySQLDecodeError("TLS requested but not offered", offset=0)
    user = r.cstring()
    if caps & LENENC_AUTH:
        auth = r.string(r.lenenc())
    elif caps & SECURE_CONNECTION:
        auth = r.string(r.number(1))
    else:
        auth = r.cstring()
    database = r.cstring() if caps & CONNECT_WITH_DB and r.left() else b""
    plugin = r.cstring() if caps & PLUGIN_AUTH and r.left() else b""
    attrs: list[tuple[bytes, bytes]] = []
    try:  # the attributes only describe the client: a broken block keeps what was read
        a = _Reader(r.take(r.lenenc()) if caps & CONNECT_ATTRS and r.left() else b"")
        while a.left() and len(attrs) < MAX_ATTRS:
            attrs.append((a.take(a.lenenc())[:MAX_FIELD], a.take(a.lenenc())[:MAX_FIELD]))
    except MySQLDecodeError:
        pass
    return HandshakeResponse(caps, user, auth, database, plugin, tuple(attrs))


# --- one connection ------------------------------------------------------------------------------


class _MySQLSession(Session):
    def __init__(self, service: ListenerService) -> None:
        super().__init__(service)
        self.scramble = make_scramble()
        self.response: HandshakeResponse | None = None  # once the client has sent it
        self.done = False  # the attempt recorded (or never to be: a bad handshake)

    def greet(self) -> None:
        self.send(packet(0, greeting(self.service.greeting, next(_THREADS), self.scramble)))

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while self.ready() and not self.done:
            try:
                got = take_packet(self.pending)
                if got is None:
                    return
                self.packet(*got)
            except MySQLDecodeError:
                if not self.done:  # what came before the bad bytes is still an attempt
                    self.finish(-1, password=None)
                self.send(packet(2, error(1043, "08S01", "Bad handshake")))
                self.close()

    def packet(self, seq: int, payload: bytes) -> None:
        if self.response is None:
            if seq != 1:
                raise MySQLDecodeError(f"packet {seq} out of order", offset=3)
            self.response = parse_response(payload)
            if self.response.plugin == CLEAR:  # the password came in clear already
                self.finish(seq, password=self.response.auth.rstrip(b"\0"))
            elif not self.response.auth:
                self.finish(seq, password=b"")
            else:
                self.send(packet(seq + 1, auth_switch(CLEAR, self.scramble)))
        elif seq == 3:  # the plugin ends the password with a NUL; a refusing client sends nothing
            self.finish(seq, password=payload[:MAX_FIELD].removesuffix(b"\0") if payload else None)
        else:
            raise MySQLDecodeError(f"packet {seq} out of order", offset=3)

    def finish(self, seq: int, password: bytes | None) -> None:
        """Record the attempt; with a sequence id, answer it as refused and close."""
        response, self.done = self.response, True
        if response is None:
            return
        data: dict[str, str | bytes | int] = {"USERNAME": response.user}
        if password is not None:
            data["PASSWORD"] = password
        elif response.plugin in (NATIVE, b"") and len(response.auth) == 20:
            data["SCRAMBLE"] = hashcat(self.scramble, response.auth)
        data.update(DATABASE=response.database, PLUGIN=response.plugin,
                    CLIENT=b" ".join(filter(None, (response.attr(b"_client_name"),
                                                   response.attr(b"_client_version")))),
                    PROGRAM=response.attr(b"program_name"))
        self.emit(EventCode.MYSQL_LOGIN_ATTEMPT, data)
        if seq >= 0 and self.transport is not None:
            host = address(self.transport.get_extra_info("peername"))[0]
            user = response.user.decode("utf-8", "replace")
            using = "NO" if password == b"" else "YES"
            denied = f"Access denied for user '{user}'@'{host}' (using password: {using})"
            self.send(packet(seq + 1, error(1045, "28000", denied)))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:  # a client that would not send its password in clear
            self.finish(-1, password=None)
        self.transport = None

    def line(self, line: bytes) -> None:  # packets are parsed whole, not as lines
        raise NotImplementedError
