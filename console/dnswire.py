"""A small, bounds-checked DNS message parser and builder for the console's hot path.

Why hand-written: the console answers every beacon of every device, and each query costs one
parse and one build.  Measured by ``bench/console_ingest.py`` on this 2-core machine (CPython
3.11, one core): dnslib ``DNSRecord.parse`` + ``reply()`` + ``pack()`` costs ~57 us per query
(dns-transport.md measured 180-270 us for dnslib's servers), this module's ``parse_query`` +
``build_response`` ~5 us.  The whole console answers a valid encrypted heartbeat in ~33 us in
process and ~56 us of server CPU over loopback (~17,700 beacons/s per core under dnsperf); with
dnslib the codec alone would eat the whole 100 us budget of the 10,000/s goal.

Only what an authoritative server for one zone needs: one question, EDNS0 OPT, answers built
from pre-packed resource records.  The question is echoed byte for byte (resolvers randomise
letter case and drop answers that do not echo it).  Every decode failure is one ``DecodeError``
carrying the offset; nothing here trusts a length it has not checked.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from firmware.shared.errors import DecodeError

HEADER_LEN = 12
MAX_NAME_WIRE = 255
MAX_LABEL = 63
UDP_PLAIN = 512
UDP_EDNS_MAX = 1232  # the common EDNS0 buffer (DNS flag day 2020): avoids IP fragmentation
TCP_MAX = 65535
# The largest query the console accepts, over UDP and TCP alike: header 12 + name 255 + type and
# class 4 + an OPT record (11 bytes) is 282; the other 230 bytes leave room for the options
# resolvers put in queries (a cookie 4+8+32, client subnet 4+4+16, NSID 4, padding to a 128-byte
# block).  Anything longer cannot be a query we answer and is dropped unread.
MAX_QUERY = 512

TYPE_A = 1
TYPE_NS = 2
TYPE_SOA = 6
TYPE_TXT = 16
TYPE_OPT = 41
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NOTIMP = 4
RCODE_REFUSED = 5
RCODE_BADVERS = 16  # extended rcode, carried half in the OPT record

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_CD = 0x0010
OPCODE_MASK = 0x7800

_HDR = struct.Struct(">HHHHHH")
_U16X2 = struct.Struct(">HH")
_RR_FIXED = struct.Struct(">HHIH")  # type, class, ttl, rdlength
_POINTER_TO_QNAME = b"\xc0\x0c"


class Query(NamedTuple):
    """One parsed query.  ``labels`` keep the letter case exactly as received."""

    id: int
    flags: int
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int
    question: bytes  # the raw question section, echoed byte for byte
    edns_size: int | None  # the OPT payload size, None without EDNS0
    edns_version: int = 0

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)


def peek_header(data: bytes) -> tuple[int, int] | None:
    """(id, flags) when ``data`` at least holds a DNS header, else None (drop it silently)."""
    if len(data) < HEADER_LEN:
        return None
    qid, flags = _U16X2.unpack_from(data)
    return qid, flags


def parse_query(data: bytes) -> Query:
    """Parse a query with exactly one question; raises ``DecodeError`` with the offset."""
    if len(data) < HEADER_LEN:
        raise DecodeError("shorter than a DNS header", offset=len(data))
    qid, flags, qdcount, ancount, nscount, arcount = _HDR.unpack_from(data)
    if qdcount != 1:
        raise DecodeError(f"{qdcount} questions, expected 1", offset=4)
    labels, pos = _read_labels(data, HEADER_LEN)
    if pos + 4 > len(data):
        raise DecodeError("truncated question", offset=pos)
    qtype, qclass = _U16X2.unpack_from(data, pos)
    question = data[HEADER_LEN : pos + 4]
    pos += 4
    for _ in range(ancount + nscount):
        pos = _skip_rr(data, pos)[0]
    edns_size: int | None = None
    version = 0
    for _ in range(arcount):
        start = pos
        pos, rtype, rclass, ttl = _skip_rr(data, pos)
        if rtype == TYPE_OPT:
            if edns_size is not None or data[start] != 0:
                raise DecodeError("bad or repeated OPT record", offset=start)
            edns_size, version = rclass, (ttl >> 16) & 0xFF
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} trailing bytes", offset=pos)
    return Query(qid, flags, tuple(labels), qtype, qclass, question, edns_size, version)


def _read_labels(data: bytes, pos: int) -> tuple[list[bytes], int]:
    """Uncompressed labels of the question name (a query's first name cannot point back).

    Stops at the first label that would take the name past 255 bytes (its root byte counted),
    so a hostile name costs at most 255 bytes of reading, whatever the message length.
    """
    labels: list[bytes] = []
    end_of_data = len(data)
    last = pos + MAX_NAME_WIRE - 1  # the root byte of a 255-byte name sits here
    while True:
        if pos >= end_of_data:
            raise DecodeError("truncated name", offset=pos)
        length = data[pos]
        if length == 0:
            return labels, pos + 1
        if length > MAX_LABEL:
            raise DecodeError("compressed or extended label in the question", offset=pos)
        end = pos + 1 + length
        if end > last:
            raise DecodeError("name longer than 255 bytes", offset=pos)
        if end > end_of_data:
            raise DecodeError("truncated label", offset=pos)
        labels.append(data[pos + 1 : end])
        pos = end


def _skip_name(data: bytes, pos: int) -> int:
    """Skip a possibly compressed name; returns the offset just after it."""
    end_of_data = len(data)
    for _ in range(128):  # a name has at most 127 labels
        if pos >= end_of_data:
            raise DecodeError("truncated name", offset=pos)
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end_of_data:
                raise DecodeError("truncated pointer", offset=pos)
            return pos + 2
        if length > MAX_LABEL:
            raise DecodeError("extended label type", offset=pos)
        pos += 1 + length
    raise DecodeError("name has too many labels", offset=pos)


def _skip_rr(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Skip one resource record; returns (next offset, type, class, ttl)."""
    pos = _skip_name(data, pos)
    if pos + _RR_FIXED.size > len(data):
        raise DecodeError("truncated resource record", offset=pos)
    rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
    pos += _RR_FIXED.size + rdlength
    if pos > len(data):
        raise DecodeError("truncated rdata", offset=pos)
    return pos, rtype, rclass, ttl


# --- building ---------------------------------------------------------------------------------


def encode_name(name: str) -> bytes:
    """Wire form of a dotted ASCII name (no compression)."""
    out = bytearray()
    for label in name.strip(".").split("."):
        if not label:
            continue
        raw = label.encode("ascii")
        if len(raw) > MAX_LABEL:
            raise ValueError(f"label {label!r} longer than 63")
        out += bytes((len(raw),)) + raw
    out.append(0)
    if len(out) > MAX_NAME_WIRE:
        raise ValueError("name longer than 255 bytes")
    return bytes(out)


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = CLASS_IN) -> bytes:
    """One packed resource record; ``owner`` is a wire name or a compression pointer."""
    return owner + _RR_FIXED.pack(rtype, rclass, ttl, len(rdata)) + rdata


def txt_rdata(data: bytes) -> bytes:
    """TXT rdata carrying ``data`` as consecutive character-strings of at most 255 bytes."""
    if not data:
        return b"\x00"
    out = bytearray()
    for i in range(0, len(data), 255):
        chunk = data[i : i + 255]
        out.append(len(chunk))
        out += chunk
    return bytes(out)


def txt_answer(data: bytes, ttl: int = 0) -> bytes:
    """A TXT record owned by the question name (pointer to offset 12)."""
    return rr(_POINTER_TO_QNAME, TYPE_TXT, ttl, txt_rdata(data))


def soa_rdata(mname: bytes, rname: bytes, serial: int, minimum: int) -> bytes:
    """SOA rdata: refresh/retry/expire are conventional; ``minimum`` caps negative caching."""
    return mname + rname + struct.pack(">IIIII", serial, 3600, 600, 86400, minimum)


def opt_record(size: int = UDP_EDNS_MAX, ext_rcode: int = 0) -> bytes:
    return b"\x00" + _RR_FIXED.pack(TYPE_OPT, size, (ext_rcode & 0xFF) << 24, 0)


_OPT_NOERROR = opt_record()


def udp_limit(query: Query) -> int:
    """Largest UDP response the client accepts (and we are willing to send)."""
    if query.edns_size is None:
        return UDP_PLAIN
    return max(UDP_PLAIN, min(query.edns_size, UDP_EDNS_MAX))


def build_response(
    query: Query,
    rcode: int = RCODE_NOERROR,
    answers: tuple[bytes, ...] = (),
    authority: tuple[bytes, ...] = (),
    limit: int = UDP_PLAIN,
) -> bytes:
    """Response echoing the question; truncated to header+question (TC=1) above ``limit``."""
    flags = FLAG_QR | FLAG_AA | (query.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | (rcode & 0xF)
    extra = b""
    if query.edns_size is not None:
        extra = _OPT_NOERROR if rcode == RCODE_NOERROR else opt_record(ext_rcode=rcode >> 4)
    body = b"".join(answers) + b"".join(authority)
    size = HEADER_LEN + len(query.question) + len(body) + len(extra)
    if size > limit:
        header = _HDR.pack(query.id, flags | FLAG_TC, 1, 0, 0, 1 if extra else 0)
        return header + query.question + extra
    header = _HDR.pack(query.id, flags, 1, len(answers), len(authority), 1 if extra else 0)
    return header + query.question + body + extra


_TXT_ONE = struct.Struct(">HHHIHB")  # owner pointer, type, class, ttl, rdlength, string length


def txt_response(query: Query, data: bytes, limit: int = UDP_PLAIN) -> bytes:
    """``build_response(query, answers=(txt_answer(data),), limit=limit)`` in one step: the
    answer to every beacon (1-255 bytes of data, one character-string)."""
    size = len(data)
    extra = b"" if query.edns_size is None else _OPT_NOERROR
    if not 0 < size <= 255 or (HEADER_LEN + len(query.question) + _TXT_ONE.size + size
                                + len(extra)) > limit:
        return build_response(query, answers=(txt_answer(data),), limit=limit)
    flags = FLAG_QR | FLAG_AA | (query.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD))
    return b"".join((_HDR.pack(query.id, flags, 1, 1, 0, 1 if extra else 0), query.question,
                     _TXT_ONE.pack(0xC00C, TYPE_TXT, CLASS_IN, 0, size + 1, size), data, extra))


def build_error(qid: int, flags: int, rcode: int) -> bytes:
    """A bare error response (no question) for a query whose question could not be parsed."""
    out_flags = FLAG_QR | (flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | (rcode & 0xF)
    return _HDR.pack(qid, out_flags, 0, 0, 0, 0)


def build_query(
    labels: list[bytes], qtype: int, qid: int = 0, edns_size: int | None = None, rd: bool = True
) -> bytes:
    """A query message (used by tests, the benchmark and anyone playing a device)."""
    name = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    extra = opt_record(edns_size) if edns_size is not None else b""
    header = _HDR.pack(qid, FLAG_RD if rd else 0, 1, 0, 0, 1 if extra else 0)
    return header + name + _U16X2.pack(qtype, CLASS_IN) + extra
