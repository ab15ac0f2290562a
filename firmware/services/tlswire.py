"""The client's first TLS record: its ClientHello, and the JA3 and JA4 fingerprints made of it.

The ssl module terminates TLS for the HTTPS honeypot but says nothing about what the client
offered, and the offer is what tells one client (a browser, curl, a scanner, a bot kit) from
another.  The guard keeps the first bytes of each connection; this pure parser reads them with a
bounds-checked reader: one TLS record (at most ``MAX_RECORD`` bytes), the handshake message in
it, the ClientHello's cipher suites and extensions.  Whatever an attacker sends, it returns a
:class:`ClientHello`, ``None`` while the record is incomplete, or raises :class:`DecodeError`
(:class:`NotTLS` when the bytes are no TLS record at all) with the offset where it stopped.
A ClientHello longer than its record (spread over several) is reported as such, not parsed.

JA3 (Salesforce): ``version,ciphers,extensions,groups,point formats`` in decimal, values
joined by ``-``, and its MD5.  JA4 (FoxIO, ``technical_details/JA4.md``): ``t``, the highest
version offered, ``d``/``i`` for SNI or none, the counts of ciphers and extensions, the first
and last character of the first ALPN value; then the truncated SHA-256 of the sorted cipher
list and of the sorted extension list (without SNI and ALPN) with the signature algorithms.
GREASE values (RFC 8701) are left out of both everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from firmware.shared.errors import DecodeError

CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
MAX_RECORD = 1 << 14  # a TLSPlaintext fragment (RFC 8446 5.1)
RECORD_HEADER = 5

EXT_SNI, EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIGNATURES, EXT_ALPN, EXT_VERSIONS = (
    0, 10, 11, 13, 16, 43)

_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
                 0x0002: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


class NotTLS(DecodeError):
    """The first bytes are no TLS handshake record (plain HTTP, random bytes)."""


@dataclass(frozen=True)
class ClientHello:
    version: int  # legacy_version
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]  # in the order sent
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    signatures: tuple[int, ...] = ()
    versions: tuple[int, ...] = ()  # supported_versions
    server_name: bytes | None = None
    alpn: tuple[bytes, ...] = ()

    @property
    def ja3_string(self) -> str:
        return ",".join((str(self.version), _dec(self.ciphers), _dec(self.extensions),
                         _dec(self.groups), "-".join(str(v) for v in self.point_formats)))

    @property
    def ja3(self) -> str:
        return hashlib.md5(self.ja3_string.encode(), usedforsecurity=False).hexdigest()

    @property
    def ja4(self) -> str:
        ciphers = [v for v in self.ciphers if not is_grease(v)]
        extensions = [v for v in self.extensions if not is_grease(v)]
        offered = [v for v in self.versions if not is_grease(v)]
        version = _JA4_VERSIONS.get(max(offered) if offered else self.version, "00")
        sni = "d" if EXT_SNI in extensions else "i"
        prefix = (f"t{version}{sni}{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}"
                  f"{_ja4_alpn(self.alpn[0] if self.alpn else b'')}")
        listed = sorted(v for v in extensions if v not in (EXT_SNI, EXT_ALPN))
        signatures = [v for v in self.signatures if not is_grease(v)]
        ext_text = _hex(listed) + ("_" + _hex(signatures) if signatures else "")
        return f"{prefix}_{_sha12(_hex(sorted(ciphers)))}_{_sha12(ext_text if listed else '')}"


def is_grease(value: int) -> bool:
    """RFC 8701's reserved values: 0x0a0a, 0x1a1a ... 0xfafa."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def _dec(values: tuple[int, ...]) -> str:
    return "-".join(str(v) for v in values if not is_grease(v))


def _hex(values: list[int]) -> str:
    return ",".join(f"{v:04x}" for v in values)


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "0" * 12


def _ja4_alpn(value: bytes) -> str:
    """First and last character of the first ALPN value; their hex digits if not alphanumeric."""
    if not value:
        return "00"
    first, last = value[:1], value[-1:]
    if (first + last).isalnum() and (first + last).isascii():
        return (first + last).decode()
    digits = value.hex()
    return digits[0] + digits[-1]


class _Reader:
    """Bounds-checked reads; every failure is a DecodeError at an absolute offset."""

    def __init__(self, data: bytes, base: int = 0) -> None:
        self.data, self.base, self.pos = data, base, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(f"{what} truncated", offset=self.base + self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, size: int, what: str) -> _Reader:
        length = self.uint(size, f"{what} length")
        start = self.base + self.pos
        return _Reader(self.take(length, what), start)

    def uints(self, size: int, what: str) -> tuple[int, ...]:
        if len(self.data) % size:
            raise DecodeError(f"{what}: odd length {len(self.data)}", offset=self.base)
        return tuple(int.from_bytes(self.data[i:i + size], "big")
                     for i in range(0, len(self.data), size))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def end(self, what: str) -> None:
        if self.left:
            raise DecodeError(f"{self.left} bytes after {what}", offset=self.base + self.pos)


def parse_client_hello(head: bytes) -> ClientHello | None:
    """The ClientHello in the first record of ``head``; None while that record is incomplete."""
    if (head[:1] and head[0] != CONTENT_HANDSHAKE) or (len(head) > 1 and head[1] != 3):
        raise NotTLS("not a TLS handshake record", offset=0)
    if len(head) < RECORD_HEADER:
        return None
    length = int.from_bytes(head[3:5], "big")
    if length > MAX_RECORD or length < 4:
        raise DecodeError(f"record length {length} is not 4 to {MAX_RECORD}", offset=3)
    if len(head) < RECORD_HEADER + length:
        return None
    record = _Reader(head[RECORD_HEADER:RECORD_HEADER + length], RECORD_HEADER)
    if record.uint(1, "handshake type") != HANDSHAKE_CLIENT_HELLO:
        raise DecodeError("first handshake message is not a ClientHello", offset=RECORD_HEADER)
    size = record.uint(3, "handshake length")
    if size > record.left:
        raise DecodeError(f"ClientHello of {size} bytes continues in a further record "
                          "(not parsed)", offset=RECORD_HEADER + 1)
    return _hello(_Reader(record.take(size, "ClientHello"), RECORD_HEADER + 4))


def _hello(body: _Reader) -> ClientHello:
    version = body.uint(2, "client version")
    body.take(32, "random")
    if body.vector(1, "session id").left > 32:
        raise DecodeError("session id longer than 32 bytes", offset=body.base + 34)
    ciphers = body.vector(2, "cipher suites").uints(2, "cipher suites")
    body.vector(1, "compression methods")
    fields: dict[str, Any] = {}
    types: list[int] = []
    if body.left:
        extensions = body.vector(2, "extensions")
        body.end("the extensions")
        while extensions.left:
            kind = extensions.uint(2, "extension type")
            types.append(kind)
            _extension(kind, extensions.vector(2, f"extension {kind}"), fields)
    return ClientHello(version=version, ciphers=ciphers, extensions=tuple(types), **fields)


def _extension(kind: int, data: _Reader, fields: dict[str, Any]) -> None:
    """Decode the extensions the fingerprints or the events use; skip the others."""
    if kind == EXT_SNI and data.left:
        names = data.vector(2, "server name list")
        data.end("the server name list")
        while names.left:
            name_type = names.uint(1, "server name type")
            name = names.vector(2, "server name").data
            if name_type == 0 and "server_name" not in fields:
                fields["server_name"] = name
    elif kind == EXT_GROUPS:
        fields["groups"] = data.vector(2, "supported groups").uints(2, "supported groups")
    elif kind == EXT_POINT_FORMATS:
        fields["point_formats"] = tuple(data.vector(1, "point formats").data)
    elif kind == EXT_SIGNATURES:
        fields["signatures"] = data.vector(2, "signature algorithms").uints(
            2, "signature algorithms")
    elif kind == EXT_ALPN:
        protocols = data.vector(2, "ALPN list")
        names_seen: list[bytes] = []
        while protocols.left:
            names_seen.append(protocols.vector(1, "ALPN protocol").data)
        fields["alpn"] = tuple(names_seen)
    elif kind == EXT_VERSIONS:
        fields["versions"] = data.vector(1, "supported versions").uints(2, "supported versions")
    else:
        return
    data.end(f"extension {kind}")
