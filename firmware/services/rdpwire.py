"""RDP's wire pieces up to the client's login: pure functions of bytes, kept apart from the state.

What an RDP client says before anyone can log in is what the RDP honeypot records: its X.224
Connection Request (MS-RDPBCGR 2.2.1.1: the ``Cookie: mstshash=NAME`` line, which carries the
user name mstsc and most tools put there, or a broker's routing token, and the RDP_NEG_REQ with
the security protocols it asks for), then, inside TLS, CredSSP's TSRequest (MS-CSSP 2.2.1:
ASN.1 DER, carrying the NTLMSSP messages of Network Level Authentication), or for a client
that chose plain TLS, its MCS Connect Initial (T.125, with the client's core data, MS-RDPBCGR
2.2.1.3.2: its computer name, build and keyboard).  Here: the TPKT framing (RFC 1006), the
parsers of those three, and the server's answers (an RDP_NEG_RSP as Windows 10 and Server 2016
or later send it, an RDP_NEG_FAILURE, the TSRequests of the exchange).

Bounds: a TPKT is at most ``MAX_TPKT`` bytes and a TSRequest at most ``MAX_TSREQUEST`` (both
lengths are checked before anything is kept); DER lengths are definite, at most three bytes
long and checked against the bytes that enclose them before anything is read; the TSRequest
is read by its structure, so nothing nests deeper than it does (six levels); at most
``MAX_TOKENS`` negotiation tokens.  Every reader raises only :class:`RDPDecodeError`, with the
offset where it stopped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from firmware.services.ntlm import der
from firmware.shared.errors import DecodeError

MAX_TPKT = 16 * 1024
MAX_TSREQUEST = 16 * 1024
MAX_TOKENS = 4
MAX_NONCE = 64

X224_CONNECTION_REQUEST, X224_CONNECTION_CONFIRM, X224_DATA = 0xE0, 0xD0, 0xF0
NEG_REQ, NEG_RSP, NEG_FAILURE, CORRELATION_INFO = 1, 2, 3, 6

PROTOCOL_RDP, PROTOCOL_SSL, PROTOCOL_HYBRID, PROTOCOL_RDSTLS = 0, 0x1, 0x2, 0x4
PROTOCOL_HYBRID_EX, PROTOCOL_RDSAAD = 0x8, 0x10
PROTOCOL_NAMES = ((PROTOCOL_SSL, "ssl"), (PROTOCOL_HYBRID, "hybrid"),
                  (PROTOCOL_RDSTLS, "rdstls"), (PROTOCOL_HYBRID_EX, "hybrid_ex"),
                  (PROTOCOL_RDSAAD, "rdsaad"))
# RDP_NEG_REQ flags
RESTRICTED_ADMIN_MODE_REQUIRED, REDIRECTED_AUTHENTICATION_MODE_REQUIRED = 0x1, 0x2
CORRELATION_INFO_PRESENT = 0x8
REQUEST_FLAG_NAMES = ((RESTRICTED_ADMIN_MODE_REQUIRED, "restricted_admin"),
                      (REDIRECTED_AUTHENTICATION_MODE_REQUIRED, "redirected_auth"),
                      (CORRELATION_INFO_PRESENT, "correlation_info"))
# RDP_NEG_RSP flags of Windows 10 / Server 2016 and later: extended client data, the graphics
# pipeline, the reserved bit, restricted admin and redirected authentication supported
SERVER_FLAGS = 0x1F
SOURCE_REFERENCE = b"\x12\x34"  # the X.224 source reference Windows puts in every confirm
# RDP_NEG_FAILURE codes
SSL_REQUIRED_BY_SERVER, HYBRID_REQUIRED_BY_SERVER = 1, 5

CREDSSP_VERSION = 6  # what Windows 10 and Server 2016 or later speak (MS-CSSP 2.2.1)
STATUS_LOGON_FAILURE = 0xC000006D
CS_CORE = 0xC001


class RDPDecodeError(DecodeError):
    """Bytes from a client that are not RDP as MS-RDPBCGR and MS-CSSP allow it."""


def names(value: int, table: tuple[tuple[int, str], ...]) -> str:
    """The bits of ``value`` by name, space-separated; unknown bits in hex."""
    known = [name for bit, name in table if value & bit]
    rest = value & ~sum(bit for bit, _ in table)
    return " ".join(known + ([f"0x{rest:x}"] if rest else []))


# --- TPKT and X.224 ------------------------------------------------------------------------------

def tpkt(payload: bytes) -> bytes:
    return b"\x03\x00" + (len(payload) + 4).to_bytes(2, "big") + payload


def take_tpkt(buf: bytearray) -> bytes | None:
    """The payload of the TPKT at the front of ``buf`` (removed), or None while incomplete."""
    if buf and buf[0] != 3:
        raise RDPDecodeError(f"not TPKT (version byte 0x{buf[0]:02x})", offset=0)
    if len(buf) < 4:
        return None
    size = int.from_bytes(buf[2:4], "big")
    if not 7 <= size <= MAX_TPKT:
        raise RDPDecodeError(f"TPKT of {size} bytes", offset=2)
    if len(buf) < size:
        return None
    payload = bytes(buf[4:size])
    del buf[:size]
    return payload


@dataclass(frozen=True)
class ConnectionRequest:
    """What an X.224 Connection Request says about its client."""

    cookie: bytes | None  # the mstshash user name, as sent
    routing_token: bytes | None  # any other cookie line (a connection broker's token)
    negotiated: bool  # an RDP_NEG_REQ came (old clients send none: standard RDP security)
    protocols: int  # requestedProtocols
    flags: int
    correlation_id: bytes

    @property
    def protocol_names(self) -> str:
        return names(self.protocols, PROTOCOL_NAMES) or "rdp"

    @property
    def flag_names(self) -> str:
        return names(self.flags, REQUEST_FLAG_NAMES)

    @classmethod
    def parse(cls, tpdu: bytes) -> ConnectionRequest:
        if len(tpdu) < 7:
            raise RDPDecodeError("X.224 header truncated", offset=len(tpdu))
        if tpdu[0] != len(tpdu) - 1:
            raise RDPDecodeError(f"X.224 length indicator {tpdu[0]} for {len(tpdu) - 1} bytes")
        if tpdu[1] & 0xF0 != X224_CONNECTION_REQUEST:
            raise RDPDecodeError(f"not an X.224 Connection Request (0x{tpdu[1]:02x})", offset=1)
        pos, cookie, token = 7, None, None
        if tpdu.startswith(b"Cookie: ", pos):
            end = tpdu.find(b"\r\n", pos)
            if end < 0:
                raise RDPDecodeError("cookie without CR LF", offset=pos)
            line = tpdu[pos + 8:end]
            if line.startswith(b"mstshash="):
                cookie = line[9:]
            else:
                token = line
            pos = end + 2
        if pos == len(tpdu):
            return cls(cookie, token, False, PROTOCOL_RDP, 0, b"")
        if len(tpdu) - pos < 8 or tpdu[pos] != NEG_REQ:
            raise RDPDecodeError("not an RDP negotiation request", offset=pos)
        _kind, flags, length, protocols = struct.unpack_from("<BBHI", tpdu, pos)
        if length != 8:
            raise RDPDecodeError(f"RDP_NEG_REQ of length {length}", offset=pos + 2)
        pos += 8
        correlation = b""
        if flags & CORRELATION_INFO_PRESENT:
            if (len(tpdu) - pos < 36 or tpdu[pos] != CORRELATION_INFO
                    or struct.unpack_from("<H", tpdu, pos + 2)[0] != 36):
                raise RDPDecodeError("bad RDP_NEG_CORRELATION_INFO", offset=pos)
            correlation = tpdu[pos + 4:pos + 20]
        return cls(cookie, token, True, protocols, flags, correlation)


def _confirm(kind: int, flags: int, value: int) -> bytes:
    return tpkt(bytes([14, X224_CONNECTION_CONFIRM]) + b"\x00\x00" + SOURCE_REFERENCE + b"\x00"
                + struct.pack("<BBHI", kind, flags, 8, value))


def connection_confirm(selected: int) -> bytes:
    """The X.224 Connection Confirm with an RDP_NEG_RSP selecting ``selected``."""
    return _confirm(NEG_RSP, SERVER_FLAGS, selected)


def negotiation_failure(code: int) -> bytes:
    """The X.224 Connection Confirm with an RDP_NEG_FAILURE (e.g. HYBRID_REQUIRED_BY_SERVER)."""
    return _confirm(NEG_FAILURE, 0, code)


# --- DER (the subset CredSSP and T.125 use) -------------------------------------------------------

def _length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A definite length at ``pos`` (short form, or long form of 1-3 bytes) and where it ends."""
    if pos >= end:
        raise RDPDecodeError("DER length truncated", offset=pos)
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if not 0 < count <= 3:
        raise RDPDecodeError(f"DER length of {count} bytes", offset=pos)
    if pos + 1 + count > end:
        raise RDPDecodeError("DER length truncated", offset=pos)
    return int.from_bytes(data[pos + 1:pos + 1 + count], "big"), pos + 1 + count


class _DER:
    """TLVs one after another between ``pos`` and ``end`` of ``data`` (one-byte tags)."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def more(self) -> bool:
        return self.pos < self.end

    def next(self, tag: int | None = None) -> tuple[int, int, int]:
        """(tag, start, end) of the next value, which must lie inside; ``tag`` if given."""
        at = self.pos
        if at >= self.end:
            raise RDPDecodeError("DER value missing", offset=at)
        got = self.data[at]
        if tag is not None and got != tag:
            raise RDPDecodeError(f"DER tag 0x{got:02x} where 0x{tag:02x} belongs", offset=at)
        length, start = _length(self.data, at + 1, self.end)
        if start + length > self.end:
            raise RDPDecodeError(f"DER value of {length} bytes beyond its container", offset=at)
        self.pos = start + length
        return got, start, start + length

    def inside(self, tag: int) -> _DER:
        """A reader of the next value's contents (which must have ``tag``)."""
        _, start, end = self.next(tag)
        return _DER(self.data, start, end)

    def integer(self) -> int:
        """An INTEGER of at most 32 bits, as an unsigned number (NTSTATUS codes are negative)."""
        _, start, end = self.next(0x02)
        raw = self.data[start:end]
        if not 0 < len(raw) <= 5 or (len(raw) == 5 and raw[0] != 0):
            raise RDPDecodeError(f"INTEGER of {len(raw)} bytes", offset=start)
        return int.from_bytes(raw, "big", signed=True) & 0xFFFFFFFF


def take_der(buf: bytearray, limit: int = MAX_TSREQUEST) -> bytes | None:
    """The DER SEQUENCE at the front of ``buf`` (removed), or None while incomplete."""
    if not buf:
        return None
    if buf[0] != 0x30:
        raise RDPDecodeError(f"not a TSRequest (tag 0x{buf[0]:02x})", offset=0)
    if len(buf) < 2:
        return None
    count = buf[1] & 0x7F if buf[1] & 0x80 else 0
    if buf[1] & 0x80 and not 0 < count <= 3:
        raise RDPDecodeError(f"DER length of {count} bytes", offset=1)
    if len(buf) < 2 + count:
        return None  # the length itself is still arriving
    length, start = _length(bytes(buf[:2 + count]), 1, 2 + count)
    if start + length > limit:
        raise RDPDecodeError(f"TSRequest of {start + length} bytes", offset=1)
    if len(buf) < start + length:
        return None
    out = bytes(buf[:start + length])
    del buf[:start + length]
    return out


# --- CredSSP (MS-CSSP 2.2.1) ----------------------------------------------------------------------

@dataclass(frozen=True)
class TSRequest:
    version: int
    tokens: tuple[bytes, ...]  # negoTokens: SPNEGO or raw NTLMSSP messages
    auth_info: bool  # the client's encrypted credentials came (never here: login refused)
    pub_key_auth: bool
    error_code: int | None
    client_nonce: bytes

    @classmethod
    def parse(cls, data: bytes) -> TSRequest:
        outer = _DER(data)
        fields = outer.inside(0x30)
        if outer.more():
            raise RDPDecodeError("bytes after the TSRequest", offset=outer.pos)
        version: int | None = None
        tokens: tuple[bytes, ...] = ()
        auth_info = pub_key_auth = False
        error_code: int | None = None
        nonce, last = b"", -1
        while fields.more():
            at = fields.pos
            tag = data[at]
            number = tag & 0x1F
            if tag & 0xE0 != 0xA0 or number <= last:
                raise RDPDecodeError(f"TSRequest field 0x{tag:02x} out of place", offset=at)
            last = number
            value = fields.inside(tag)
            if number == 0:
                version = value.integer()
            elif number == 1:
                tokens = _nego_tokens(value.inside(0x30))
            elif number in (2, 3):  # authInfo, pubKeyAuth: only whether they came
                value.next(0x04)
                auth_info, pub_key_auth = auth_info or number == 2, pub_key_auth or number == 3
            elif number == 4:
                error_code = value.integer()
            elif number == 5:
                _, start, end = value.next(0x04)
                nonce = data[start:min(end, start + MAX_NONCE)]
            # a later version's fields are skipped
        if version is None:
            raise RDPDecodeError("TSRequest without a version")
        return cls(version, tokens, auth_info, pub_key_auth, error_code, nonce)


def _nego_tokens(items: _DER) -> tuple[bytes, ...]:
    """NegoData: SEQUENCE OF SEQUENCE { negoToken [0] OCTET STRING }."""
    tokens: list[bytes] = []
    while items.more():
        if len(tokens) == MAX_TOKENS:
            raise RDPDecodeError(f"more than {MAX_TOKENS} negotiation tokens", offset=items.pos)
        _, start, end = items.inside(0x30).inside(0xA0).next(0x04)
        tokens.append(items.data[start:end])
    return tuple(tokens)


def _integer(value: int) -> bytes:
    return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def ts_request(version: int, token: bytes | None = None, error_code: int | None = None) -> bytes:
    """A server's TSRequest: its version, a negotiation token, or an NTSTATUS ``error_code``
    (four bytes as Windows writes it, STATUS_LOGON_FAILURE as C000006D)."""
    body = der(0xA0, _integer(version))
    if token is not None:
        body += der(0xA1, der(0x30, der(0x30, der(0xA0, der(0x04, token)))))
    if error_code is not None:
        body += der(0xA4, der(0x02, error_code.to_bytes(4, "big")))
    return der(0x30, body)


# --- MCS Connect Initial (T.125, T.124, MS-RDPBCGR 2.2.1.3) ---------------------------------------

@dataclass(frozen=True)
class ClientCore:
    """TS_UD_CS_CORE: what the client says about itself when it connects without NLA."""

    version: int
    width: int
    height: int
    keyboard_layout: int
    build: int
    name: str


def client_core(payload: bytes) -> ClientCore | None:
    """The client core data of the MCS Connect Initial in an X.224 Data TPDU (``payload`` of a
    TPKT); None when the client sent none."""
    if len(payload) < 3 or payload[0] != 2 or payload[1] != X224_DATA:
        raise RDPDecodeError("not an X.224 Data TPDU", offset=0)
    if payload[3:5] != b"\x7f\x65":
        raise RDPDecodeError("not an MCS Connect Initial", offset=3)
    length, start = _length(payload, 5, len(payload))
    if start + length > len(payload):
        raise RDPDecodeError("MCS Connect Initial truncated", offset=5)
    fields = _DER(payload, start, start + length)
    user_data: tuple[int, int] | None = None
    while fields.more():  # domain selectors, upward flag, three parameter sets, user data
        tag, begin, end = fields.next()
        if tag == 0x04:
            user_data = begin, end
    if user_data is None:
        raise RDPDecodeError("MCS Connect Initial without user data", offset=start)
    gcc = payload[user_data[0]:user_data[1]]
    key = gcc.find(b"Duca", 0, 32)  # the H.221 key before the client's data blocks (T.124)
    if key < 0 or key + 6 > len(gcc):
        raise RDPDecodeError("no client data in the conference request", offset=user_data[0])
    pos = key + 4
    size = gcc[pos]
    if size & 0x80:  # PER length in two bytes
        size, pos = (size & 0x7F) << 8 | gcc[pos + 1], pos + 2
    else:
        pos += 1
    blocks = gcc[pos:pos + size]
    at = 0
    while at + 4 <= len(blocks):
        kind, block = struct.unpack_from("<HH", blocks, at)
        if block < 4 or at + block > len(blocks):
            raise RDPDecodeError(f"client data block of {block} bytes", offset=at)
        if kind == CS_CORE and block >= 4 + 52:
            version, width, height, _depth, _sas, layout, build = struct.unpack_from(
                "<IHHHHII", blocks, at + 4)
            name = blocks[at + 24:at + 56].decode("utf-16-le", "replace").split("\0", 1)[0]
            return ClientCore(version, width, height, layout, build, name)
        at += block
    return None
