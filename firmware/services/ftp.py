"""The FTP honeypot: records each USER/PASS pair and refuses every login, anonymous ones too.

FTP sends credentials in clear, so an attempt tells a defender exactly which password was
tried.  The dialogue is a real server's up to the login (RFC 959 replies, FEAT, SYST, AUTH TLS
refused so a client falls back to plain USER/PASS); every command that would need a login gets
530.  Event 2000 keeps OpenCanary's logdata keys (USERNAME, PASSWORD).  After three refused
logins the server says goodbye and closes, as vsftpd does.
"""

from __future__ import annotations

import asyncio

from firmware.protocol.catalogue import EventCode
from firmware.services.lines import ListenerService, Session

FEATURES = b"211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n REST STREAM\r\n SIZE\r\n" \
           b" TVFS\r\n UTF8\r\n211 End\r\n"


class FTPHoneypot(ListenerService):
    name = "ftp"
    default_port = 21
    event_codes = frozenset({EventCode.FTP_LOGIN_ATTEMPT})
    banner = "220 (vsFTPd 3.0.5)"

    def session(self) -> asyncio.Protocol:
        return _FTPSession(self)


class _FTPSession(Session):
    def __init__(self, service: ListenerService) -> None:
        super().__init__(service)
        self.user: bytes | None = None

    def greet(self) -> None:
        banner = self.service.greeting
        self.send((banner if banner[:4] == "220 " else "220 " + banner).encode() + b"\r\n")

    def line(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if verb == b"USER":
            self.user = arg
            self.send(b"331 Please specify the password.\r\n")
        elif verb == b"PASS":
            self.login(arg)
        elif verb == b"QUIT":
            self.send(b"221 Goodbye.\r\n")
            self.close()
        elif verb == b"FEAT":
            self.send(FEATURES)
        elif verb == b"SYST":
            self.send(b"215 UNIX Type: L8\r\n")
        elif verb == b"NOOP":
            self.send(b"200 NOOP ok.\r\n")
        elif verb in (b"AUTH", b"PBSZ", b"PROT"):
            self.send(b"530 Please login with USER and PASS.\r\n")
        elif verb == b"OPTS":
            self.send(b"200 Always in UTF8 mode.\r\n")
        else:
            self.send(b"530 Please login with USER and PASS.\r\n")

    def login(self, password: bytes) -> None:
        if self.user is None:
            self.send(b"503 Login with USER first.\r\n")
            return
        self.emit(EventCode.FTP_LOGIN_ATTEMPT, {"USERNAME": self.user, "PASSWORD": password})
        self.user = None
        self.send(b"530 Login incorrect.\r\n")
        if self.tried():
            self.send(b"221 Goodbye.\r\n")
            self.close()
