"""The VNC honeypot: a remote-desktop server that asks for its password and never accepts one.

Port 5900 open on a network is a prize: many VNC servers have a short password or none, and
intruders try the common ones.  This is RFB (RFC 6143) up to the end of its authentication.  The
server says ``RFB 003.008`` (``services.vnc.banner`` another ``RFB xxx.yyy``: ``RFB 005.000`` is
RealVNC's), takes the client's version (3.3, 3.7 and 3.8; anything else is read as the spec
says), offers one security type, VNC Authentication, and sends a fresh 16-byte challenge.  The
client's answer is the challenge DES-encrypted under its password, so one event 12001 per
attempt keeps the challenge and the response (OpenCanary's ``VNC Server Challenge`` and ``VNC
Client Response``, in capitals: VNC_SERVER_CHALLENGE, VNC_CLIENT_RESPONSE); the response is
masked like a password, since a defender, or anyone who reads it, can crack the password from
it.  When it is the answer of one of ``COMMON_PASSWORDS`` the event names that password too
(VNC_PASSWORD, masked).  The answer is "Authentication failed" and the connection ends, as it
does on the real servers.

Bounds: the client sends 12 bytes of version, one byte of security type and 16 of response,
and nothing after them is read; a version or security type that is not RFB's closes the
connection.  A client that goes quiet is cut off by the guard's timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from functools import lru_cache

from firmware.protocol.catalogue import EventCode
from firmware.services.lines import ListenerService, Session
from firmware.shared.errors import DecodeError

log = logging.getLogger(__name__)

VERSION = re.compile(rb"RFB ([0-9]{3})\.([0-9]{3})\n")
VNC_AUTH = 2
CHALLENGE_LEN = 16
FAILED = "Authentication failed"
# Passwords tried first on VNC servers (default and vendor passwords, the top of leaked lists);
# VNC uses only the first 8 characters of a password.
COMMON_PASSWORDS = (
    "", "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678", "123456789",
    "000000", "0000", "00000000", "111111", "11111111", "654321", "87654321", "1q2w3e4r",
    "qwerty", "qwertyui", "asdfgh", "zxcvbnm", "abc123", "password", "passw0rd", "P@ssw0rd",
    "Password", "pass", "secret", "letmein", "welcome", "changeme", "default", "admin",
    "administ", "root", "toor", "user", "guest", "test", "vnc", "vncvnc", "vncpass",
    "realvnc", "tightvnc", "ultravnc", "x11vnc", "raspberry", "pi", "ubuntu", "debian",
    "linux", "server", "support", "remote", "desktop", "access", "master", "monkey",
    "dragon", "iloveyou", "sunshine", "super", "private", "system", "manager", "operator",
    "service", "cisco", "synology",
)


class VNCHoneypot(ListenerService):
    name = "vnc"
    default_port = 5900
    event_codes = frozenset({EventCode.VNC_LOGIN_ATTEMPT})
    banner = "RFB 003.008"

    def session(self) -> asyncio.Protocol:
        return _VNCSession(self)

    @property
    def version_line(self) -> bytes:
        line = self.greeting.encode("ascii", "replace") + b"\n"
        if VERSION.fullmatch(line):
            return line
        log.warning("services.vnc.banner %r is not 'RFB xxx.yyy': saying %s", self.greeting,
                    self.banner)
        return self.banner.encode() + b"\n"


class VNCDecodeError(DecodeError):
    """The client's bytes are not RFB."""


# --- VNC Authentication (pure) -------------------------------------------------------------------


def des_key(password: str) -> bytes:
    """The DES key VNC makes of a password: its first 8 bytes (NUL-padded), each byte's bits in
    reverse order (the quirk of the original implementation, kept by every server since)."""
    raw = password.encode("latin-1", "replace")[:8].ljust(8, b"\0")
    return bytes(int(f"{b:08b}"[::-1], 2) for b in raw)


def response(password: str, challenge: bytes) -> bytes:
    """What a client answers to ``challenge`` when it knows ``password``."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    key = des_key(password)
    # three equal keys: single DES; ECB: the protocol encrypts the two blocks on their own
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305
    return encryptor.update(challenge) + encryptor.finalize()


@lru_cache(maxsize=1)
def _common() -> tuple[tuple[str, bytes], ...]:
    """Each common password with its key, once (distinct keys only: VNC reads 8 characters)."""
    seen: dict[bytes, str] = {}
    for password in COMMON_PASSWORDS:
        seen.setdefault(des_key(password), password)
    return tuple((p, k) for k, p in seen.items())


def common_password(challenge: bytes, answer: bytes) -> str | None:
    """The common password whose answer to ``challenge`` is ``answer``, if one is."""
    return next((p for p, _ in _common() if response(p, challenge) == answer), None)


def chosen_version(line: bytes) -> tuple[int, int]:
    """The protocol version a client's ``RFB xxx.yyy`` line selects: 3.3, 3.7 or 3.8 (RFC 6143
    7.1.1: a minor version the server does not know is read as 3.3; later majors as 3.8)."""
    match = VERSION.fullmatch(line)
    if match is None:
        raise VNCDecodeError(f"not an RFB version: {line[:12]!r}", offset=0)
    major, minor = int(match[1]), int(match[2])
    if major > 3 or minor >= 8:
        return 3, 8
    return 3, 7 if minor == 7 else 3


def failure(version: tuple[int, int]) -> bytes:
    """SecurityResult "failed"; 3.8 adds the reason."""
    reason = FAILED.encode()
    if version >= (3, 8):
        return b"\0\0\0\1" + len(reason).to_bytes(4, "big") + reason
    return b"\0\0\0\1"


# --- one connection ------------------------------------------------------------------------------


class _VNCSession(Session):
    service: VNCHoneypot

    def __init__(self, service: VNCHoneypot) -> None:
        super().__init__(service)
        self.version: tuple[int, int] | None = None
        self.chose = False  # the client picked VNC Authentication (3.7, 3.8) or was told (3.3)
        self.challenge = os.urandom(CHALLENGE_LEN)

    def greet(self) -> None:
        self.send(self.service.version_line)

    def data_received(self, data: bytes) -> None:
        self.pending += data
        try:
            self.step()
        except VNCDecodeError:
            self.close()

    def step(self) -> None:
        if self.version is None:
            if len(self.pending) < 12:
                return
            self.version = chosen_version(bytes(self.pending[:12]))
            del self.pending[:12]
            if self.version == (3, 3):  # the server decides: VNC Authentication
                self.chose = True
                self.send(VNC_AUTH.to_bytes(4, "big") + self.challenge)
            else:
                self.send(bytes([1, VNC_AUTH]))
        if not self.chose:
            if not self.pending:
                return
            if self.pending[0] != VNC_AUTH:
                raise VNCDecodeError(f"security type {self.pending[0]} not offered", offset=0)
            self.chose = True
            del self.pending[:1]
            self.send(self.challenge)
        if len(self.pending) < CHALLENGE_LEN:
            return
        answer = bytes(self.pending[:CHALLENGE_LEN])  # anything after it is never read
        self.pending.clear()
        self.record(answer)
        self.send(failure(self.version))
        self.close()

    def record(self, answer: bytes) -> None:
        assert self.version is not None
        data: dict[str, str | bytes | int] = {
            "VNC_SERVER_CHALLENGE": self.challenge.hex(),
            "VNC_CLIENT_RESPONSE": answer.hex(),
            "VERSION": "{}.{}".format(*self.version),
        }
        password = common_password(self.challenge, answer)
        if password is not None:
            data["VNC_PASSWORD"] = password
        self.emit(EventCode.VNC_LOGIN_ATTEMPT, data)

    def line(self, line: bytes) -> None:  # RFB is binary: parsed by step, not as lines
        raise NotImplementedError
