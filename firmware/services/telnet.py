"""The Telnet honeypot: a login prompt that records each user name and password, refuses all.

Telnet is how botnets and intruders try default passwords on routers and cameras; each attempt
arrives in clear.  The client's option negotiation (RFC 854/855) is taken out of the byte stream
by a small state machine that survives any split and any junk: every option the client offers
or asks for is declined (DONT/WONT), subnegotiations are skipped, an escaped 0xFF is data, and a
CR ends a line whether LF, NUL or nothing follows it.  Only ECHO is ever offered, as login(1)
does for the password: WILL ECHO before ``Password:`` (the client stops echoing what is typed,
and the server echoes nothing), WONT ECHO after it.  Event 6001 keeps OpenCanary's logdata
keys (USERNAME, PASSWORD).  Three refused logins and the connection ends, as login(1) does.
"""

from __future__ import annotations

import asyncio

from firmware.protocol.catalogue import EventCode
from firmware.services.lines import ListenerService, Session

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO = 1
_DATA, _IAC, _OPTION, _SUB, _SUB_IAC, _CR = range(6)
_REFUSAL = {WILL: DONT, DO: WONT}  # what we answer; WONT and DONT need no answer


class TelnetHoneypot(ListenerService):
    name = "telnet"
    default_port = 23
    event_codes = frozenset({EventCode.TELNET_LOGIN_ATTEMPT})
    banner = "Debian GNU/Linux 12"

    def session(self) -> asyncio.Protocol:
        return _TelnetSession(self)


class TelnetFilter:
    """Telnet commands out, data in; line ends as LF.  ``replies`` collects our refusals."""

    def __init__(self) -> None:
        self.state = _DATA
        self.verb = 0
        self.replies = bytearray()
        self.offered: set[int] = set()  # options we said WILL to: the client's DO is its yes

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            state = self.state
            if state == _CR:  # CR LF and CR NUL are one line end, as is a lone CR
                self.state = _DATA
                if byte in (0, 10):
                    continue
                state = _DATA
            if state == _DATA:
                if byte == IAC:
                    self.state = _IAC
                elif byte == 13:
                    out.append(10)
                    self.state = _CR
                else:
                    out.append(byte)
            elif state == _IAC:
                if byte == IAC:
                    out.append(IAC)
                    self.state = _DATA
                elif byte in (WILL, WONT, DO, DONT):
                    self.verb, self.state = byte, _OPTION
                else:
                    self.state = _SUB if byte == SB else _DATA
            elif state == _OPTION:
                if byte in self.offered and self.verb in (DO, DONT):
                    if self.verb == DONT:
                        self.offered.discard(byte)
                elif self.verb in _REFUSAL and len(self.replies) < 64:
                    self.replies += bytes((IAC, _REFUSAL[self.verb], byte))
                self.state = _DATA
            elif state == _SUB:
                if byte == IAC:
                    self.state = _SUB_IAC
            else:  # _SUB_IAC
                self.state = _DATA if byte == SE else _SUB
        return bytes(out)


class _TelnetSession(Session):
    def __init__(self, service: ListenerService) -> None:
        super().__init__(service)
        self.filter = TelnetFilter()
        self.user: bytes | None = None

    def unwrap(self, data: bytes) -> bytes:
        text = self.filter.feed(data)
        if self.filter.replies:
            self.send(bytes(self.filter.replies))
            self.filter.replies.clear()
        return text

    def greet(self) -> None:
        banner = self.service.greeting.replace("\n", "\r\n")
        self.send(b"\r\n" + banner.encode() + b"\r\n\r\n")
        self.prompt()

    def prompt(self) -> None:
        self.send((self.service.settings.prompt or "login: ").encode())

    def line(self, line: bytes) -> None:
        if self.user is None:
            if not line.strip():
                self.prompt()
                return
            self.user = line
            self.filter.offered.add(ECHO)
            self.send(bytes((IAC, WILL, ECHO)) + b"Password: ")
            return
        self.emit(EventCode.TELNET_LOGIN_ATTEMPT, {"USERNAME": self.user, "PASSWORD": line})
        self.user = None
        if ECHO in self.filter.offered:
            self.filter.offered.discard(ECHO)
            self.send(bytes((IAC, WONT, ECHO)))
        self.send(b"\r\nLogin incorrect\r\n")
        if self.tried():
            self.close()
        else:
            self.prompt()
