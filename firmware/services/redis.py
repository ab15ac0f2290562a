"""The Redis honeypot: a password-protected Redis that records every command and AUTH attempt.

An exposed Redis is a classic way in (CONFIG SET dir + SAVE writes an SSH key or a cron job),
and intruders probe with INFO, CONFIG or AUTH guesses.  This one speaks RESP2 (arrays of bulk
strings, as ``redis-cli`` and every library send) and inline commands (what ``nc`` or a
scanner types), and answers as a Redis with ``requirepass`` set: every command but AUTH, HELLO
and QUIT gets ``-NOAUTH``, every AUTH gets ``-WRONGPASS``.  Event 17001 keeps OpenCanary's
logdata keys (CMD, ARGS); an AUTH's password goes to PASSWORD (masked like every password), its
user name to USERNAME, and neither is repeated in ARGS.

Bounds, checked before anything is kept: at most ``MAX_ARGS`` arguments of at most ``MAX_BULK``
bytes each (Redis's own parser also refuses malformed lengths with ``-ERR Protocol error`` and
closes), ``MAX_EVENTS`` commands recorded per connection (the rest are answered, not recorded:
the guard's byte and time limits end the connection soon after).
"""

from __future__ import annotations

import asyncio

from firmware.protocol.catalogue import EventCode
from firmware.services.lines import MAX_LINE, ListenerService, Session

MAX_ARGS = 64
MAX_BULK = 4096
MAX_EVENTS = 32
ARGS_SHOWN = 512  # characters of ARGS kept in an event
SECRET_SHOWN = b"********"  # a credential's place in ARGS (the credential itself: PASSWORD)
NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


class RedisHoneypot(ListenerService):
    name = "redis"
    default_port = 6379
    event_codes = frozenset({EventCode.REDIS_COMMAND})
    banner = "7.2.4"  # the version a client learns only after AUTH (never, here)

    def session(self) -> asyncio.Protocol:
        return _RedisSession(self)


class ProtocolError(Exception):
    """The client's bytes are not RESP: Redis answers ``-ERR Protocol error`` and closes."""


def parse_command(buf: bytearray) -> list[bytes] | None:
    """One command taken off the front of ``buf``, or None while it is incomplete.

    Raises ProtocolError for what Redis itself refuses (bad lengths, too many arguments).
    """
    if not buf:
        return None
    if buf[0] != ord("*"):  # an inline command: one line of words
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > MAX_LINE:
                raise ProtocolError("too big inline request")
            return None
        line = bytes(buf[:end]).rstrip(b"\r")
        del buf[:end + 1]
        return line.split()
    pos, count = _number(buf, 0, b"*", MAX_ARGS)
    if pos < 0:
        return None
    args: list[bytes] = []
    for _ in range(count):
        pos, size = _number(buf, pos, b"$", MAX_BULK)
        if pos < 0 or len(buf) < pos + size + 2:
            return None
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise ProtocolError("expected CRLF after a bulk string")
        args.append(bytes(buf[pos:pos + size]))
        pos += size + 2
    del buf[:pos]
    return args


def _number(buf: bytearray, pos: int, mark: bytes, most: int) -> tuple[int, int]:
    """``<mark><digits>\\r\\n`` at ``pos``: (the position after it, the number); (-1, 0) if
    incomplete."""
    end = buf.find(b"\r\n", pos, pos + 24)
    if end < 0:
        if len(buf) - pos >= 24:
            raise ProtocolError(f"invalid {'multibulk' if mark == b'*' else 'bulk'} length")
        return -1, 0
    if buf[pos:pos + 1] != mark:
        raise ProtocolError(f"expected '{mark.decode()}', got something else")
    digits = bytes(buf[pos + 1:end])
    if not digits.isdigit() or int(digits) > most:
        raise ProtocolError(f"invalid {'multibulk' if mark == b'*' else 'bulk'} length")
    return end + 2, int(digits)


class _RedisSession(Session):
    def __init__(self, service: ListenerService) -> None:
        super().__init__(service)
        self.recorded = 0

    def greet(self) -> None:  # Redis says nothing first
        pass

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while self.ready():
            try:
                args = parse_command(self.pending)
            except ProtocolError as exc:
                self.send(f"-ERR Protocol error: {exc}\r\n".encode())
                self.close()
                return
            if args is None:
                return
            if args:
                self.command(args)

    def command(self, args: list[bytes]) -> None:
        verb = args[0].decode("ascii", "replace").upper()
        data = _logdata(verb, args[1:])
        if self.recorded < MAX_EVENTS or "PASSWORD" in data:  # a credential is always recorded
            self.recorded += 1
            self.emit(EventCode.REDIS_COMMAND, data)
        if verb == "QUIT":
            self.send(b"+OK\r\n")
            self.close()
        elif verb == "AUTH" and len(args) in (2, 3):
            self.send(WRONGPASS)
        elif verb == "AUTH":
            self.send(b"-ERR wrong number of arguments for 'auth' command\r\n")
        elif verb == "HELLO" and len(args) >= 5 and args[2].upper() == b"AUTH":
            self.send(WRONGPASS)
        elif verb == "HELLO":
            self.send(b"-NOAUTH HELLO must be called with the client already authenticated, "
                      b"otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                      b"authenticate the client and select the RESP protocol version at the "
                      b"same time\r\n")
        else:
            self.send(NOAUTH)

    def line(self, line: bytes) -> None:  # commands are parsed whole, not as lines
        raise NotImplementedError


def _logdata(verb: str, rest: list[bytes]) -> dict[str, str | bytes | int]:
    """CMD and ARGS; credentials under USERNAME and PASSWORD and masked in ARGS: AUTH's,
    HELLO ... AUTH's, MIGRATE ... AUTH/AUTH2's and a CONFIG SET of requirepass, masterauth or
    any other parameter that holds a password."""
    data: dict[str, str | bytes | int] = {"CMD": verb}
    if verb == "AUTH" and rest:
        data["PASSWORD"] = rest[-1]
        data["USERNAME"] = rest[0] if len(rest) == 2 else "default"
        rest = []
    shown = list(rest)
    upper = [a.upper() for a in rest]
    for i, word in enumerate(upper):
        if verb in ("HELLO", "MIGRATE") and word in (b"AUTH", b"AUTH2"):
            user = verb == "HELLO" or word == b"AUTH2"
            secret = rest[i + 1:i + 3] if user else rest[i + 1:i + 2]
            if secret:
                data.setdefault("USERNAME", secret[0] if user else b"default")
                data.setdefault("PASSWORD", secret[-1])
                shown[i + 1:i + 1 + len(secret)] = [SECRET_SHOWN] * len(secret)
        elif (verb == "CONFIG" and upper[:1] == [b"SET"] and i % 2 == 1 and i + 1 < len(rest)
              and (b"PASS" in word or b"AUTH" in word)):
            data.setdefault("PASSWORD", rest[i + 1])
            shown[i + 1] = SECRET_SHOWN
    data["ARGS"] = b" ".join(shown)[:ARGS_SHOWN]
    return data
