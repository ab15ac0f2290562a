"""Bodies of upstream frames and of the console's replies (DNS protocol v2).

Every upstream body is padded to the same size (the room a full query name leaves under the
zone) and every reply to ``REPLY_SIZE``, with ISO/IEC 7816-4 padding (0x80, then zeros) inside
the box: on the wire a heartbeat, an event fragment and their answers all look alike, so whoever
controls the DNS path cannot drop events and let heartbeats pass.

Upstream:  HEARTBEAT(0x01) uptime u32 | interval u16 | queue u32 | oldest_age u32 |
                           dropped u32 | rejected u32 | store_failed u32 | flags u8
           FRAGMENT(0x02)  msg_id u64 | index u8 | count u8 | chunk
           REGISTER(0x03)  name length u8 | name (UTF-8)   -- only in a registration frame
           SETTINGS_GET(0x04) offset u16                   -- config mode only
Replies:   HEARTBEAT_ACK(0x81) flags u8 | console_time u32
           FRAGMENT_ACK(0x82)  msg_id u64 | complete u8 | count u8 | bitmap
           STALE(0x83)         highest counter u48 (the device jumps past it)
           REGISTER_ACK(0x84)  status u8 | pairing nonce (16), or when approved the
                               console's settings verify key (32)
           SETTINGS_PART(0x85) version u32 | total u16 | offset u16 | chunk (<= 38)
Every decoder raises ``DecodeError`` with the offset: replies read through ``Reader``; bodies,
on the console's hot path, unpack with ``struct`` after an explicit length check.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from firmware.protocol.reader import Reader
from firmware.shared.errors import DecodeError

HEARTBEAT = 0x01
FRAGMENT = 0x02
SETTINGS_GET = 0x04
SETTINGS_PART = 0x85
SETTINGS_MAX = 64 + 1024  # a signed settings document (firmware/protocol/settings.py)
SETTINGS_CHUNK = 38  # what one reply holds after its type, version, total and offset
HEARTBEAT_ACK = 0x81
FRAGMENT_ACK = 0x82
STALE = 0x83
REGISTER = 0x03
REGISTER_ACK = 0x84
MAX_NAME_BYTES = 32  # the name a device suggests for itself when it registers
PAIRING_NONCE_LEN = 16
SETTINGS_KEY_LEN = 32
FRAGMENT_HEADER_LEN = 11
MAX_FRAGMENTS = 255
REPLY_SIZE = 48
PAD = 0x80

# Heartbeat flags (device -> console)
HB_RECEIVER_ALIVE = 0x01  # the event receiver thread is running
HB_QUEUE_RESET = 0x02  # the queue was unreadable at start and was moved aside (events lost)
# Heartbeat-ack flags (console -> device)
ACK_SETTINGS_PENDING = 0x01  # the console holds settings newer than the heartbeat names


class Heartbeat(NamedTuple):
    """What an operator needs to trust a device's silence (see docs/protocol.md)."""

    uptime: int
    interval: int  # seconds between heartbeats: the console judges "offline" per device
    queue_depth: int = 0
    oldest_age: int = 0  # seconds the oldest queued event has waited
    dropped: int = 0  # events dropped because the queue was full (since the queue was made)
    rejected: int = 0  # datagrams refused at the event socket (since the agent started)
    store_failed: int = 0  # events that could not be stored (disk full ...) since start
    flags: int = HB_RECEIVER_ALIVE
    settings_version: int = 0  # the signed settings in effect (0: none): the console flags newer
    acked: int = 0  # counter of the heartbeat before the last one the console acknowledged: a
    #                 console that no longer holds it lost its state (docs/console.md)



@dataclass(slots=True)  # not frozen: that costs ~3x to build (0.78 against 0.21 us), and the
class Fragment:  # console builds one of these and one FragmentAck for every fragment
    msg_id: int
    index: int
    count: int
    chunk: bytes


class HeartbeatAck(NamedTuple):
    flags: int
    console_time: int


@dataclass(slots=True)
class FragmentAck:
    msg_id: int
    complete: bool
    received: frozenset[int]
    count: int


class Stale(NamedTuple):
    """The frame's counter is at or below what the console holds: continue above ``highest``."""

    highest: int


class Register(NamedTuple):
    """A device asks to be paired (config mode only); ``name`` is its suggestion, untrusted."""

    name: str


class RegisterAck(NamedTuple):
    """Where the device's pairing stands: pending or rejected with the nonce of its code;
    approved with the console's settings key, which the device pins (docs/pairing.md)."""

    status: int  # REG_PENDING, REG_APPROVED, REG_REJECTED
    nonce: bytes = bytes(PAIRING_NONCE_LEN)
    settings_key: bytes = b""  # with REG_APPROVED: the console's Ed25519 settings verify key


REG_PENDING = 1  # the operator has not decided yet: show the fingerprint, ask again
REG_APPROVED = 2  # paired: send as an enrolled device
REG_REJECTED = 3  # refused or revoked: this key will not be paired
REG_STATUSES = frozenset({REG_PENDING, REG_APPROVED, REG_REJECTED})

class SettingsGet(NamedTuple):
    """Config mode only: the device asks for its signed settings, from ``offset`` on."""

    offset: int


class SettingsPart(NamedTuple):
    """A piece of the device's newest signed settings (version 0, total 0: it has none)."""

    version: int
    total: int
    offset: int
    chunk: bytes


Body = Heartbeat | Fragment | SettingsGet
Reply = HeartbeatAck | FragmentAck | Stale | RegisterAck | SettingsPart

_HB = struct.Struct(">BIHIIIIIBIHI")  # ... settings version, acked (48 bits: 16 + 32)
_HB_V1 = struct.Struct(">BIHIIIIIBI")  # the same without acked: still read
_FRAG = struct.Struct(">BQBB")
_SGET = struct.Struct(">BH")
_SPART = struct.Struct(">BIHH")
_HBACK = struct.Struct(">BBI")
_FACK = struct.Struct(">BQBB")
_U32 = 0xFFFFFFFF
_PADS = [bytes((PAD,)) + bytes(REPLY_SIZE - n - 1) for n in range(REPLY_SIZE)]
_FULL = [bytes([0xFF] * (n // 8) + ([(0xFF << (8 - n % 8)) & 0xFF] if n % 8 else []))
         for n in range(MAX_FRAGMENTS + 1)]


def pad(data: bytes, size: int) -> bytes:
    """``data`` + 0x80 + zeros up to ``size`` bytes."""
    if len(data) + 1 > size:
        raise ValueError(f"{len(data)} bytes do not fit a padded block of {size}")
    return data + bytes((PAD,)) + bytes(size - len(data) - 1)


def unpad(data: bytes) -> bytes:
    """Remove 7816-4 padding; a block without it is malformed."""
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != PAD:
        raise DecodeError("missing padding", offset=max(0, end - 1))
    return data[: end - 1]


def encode_register(reg: Register, size: int) -> bytes:
    """A registration body padded to ``size`` (``register_body_size``); the name is cut to fit."""
    name = reg.name.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return pad(bytes((REGISTER, len(name))) + name, size)


def decode_register(data: bytes) -> Register:
    r = Reader(unpad(data))
    if r.uint(1, "body type") != REGISTER:
        raise DecodeError("not a registration body", offset=0)
    size = r.uint(1, "name length")
    if size > MAX_NAME_BYTES:
        raise DecodeError(f"name of {size} bytes, more than {MAX_NAME_BYTES}", offset=1)
    name = r.take(size, "name").decode("utf-8", errors="replace")
    r.end("registration")
    return Register(name)


def encode_body(body: Body, size: int) -> bytes:
    """The body padded to ``size`` bytes (the room one full query name leaves)."""
    if isinstance(body, Heartbeat):
        if not 0 <= body.acked < 1 << 48:
            raise ValueError(f"acked counter {body.acked} is not 48 bits")
        raw = _HB.pack(HEARTBEAT, min(body.uptime, _U32), min(body.interval, 0xFFFF),
                       *(min(v, _U32) for v in (body.queue_depth, body.oldest_age, body.dropped,
                                                body.rejected, body.store_failed)),
                       body.flags, min(body.settings_version, _U32),
                       (body.acked >> 32) & 0xFFFF, body.acked & _U32)
    elif isinstance(body, SettingsGet):
        raw = _SGET.pack(SETTINGS_GET, body.offset)
    else:
        if not (0 <= body.index < body.count <= MAX_FRAGMENTS and body.chunk):
            raise ValueError("bad fragment index/count or empty chunk")
        raw = _FRAG.pack(FRAGMENT, body.msg_id, body.index, body.count) + body.chunk
    return pad(raw, size)


def decode_body(data: bytes) -> Body:
    """Fixed-size fields with ``struct`` after an explicit length check: this runs for every
    query the console answers, and it is ~3x cheaper than field-by-field ``Reader`` calls."""
    body = unpad(data)
    kind = body[0] if body else -1
    if kind == HEARTBEAT:
        if len(body) == _HB_V1.size:  # agents before the acked field
            body = body + bytes(_HB.size - _HB_V1.size)
        if len(body) != _HB.size:
            raise DecodeError(f"heartbeat of {len(body)} bytes, not {_HB.size}",
                              offset=min(len(body), _HB.size))
        (_, up, interval, depth, age, dropped, rejected, failed, flags, held, acked_hi,
         acked_lo) = _HB.unpack(body)
        return Heartbeat(up, interval, depth, age, dropped, rejected, failed, flags, held,
                         acked_hi << 32 | acked_lo)
    if kind == FRAGMENT:
        if len(body) <= _FRAG.size:
            raise DecodeError("truncated or empty fragment", offset=len(body))
        _, msg_id, index, count = _FRAG.unpack_from(body)
        if not index < count:
            raise DecodeError(f"fragment index {index} not below count {count}", offset=9)
        return Fragment(msg_id, index, count, body[_FRAG.size:])
    if kind == SETTINGS_GET:
        if len(body) != _SGET.size:
            raise DecodeError(f"settings request of {len(body)} bytes", offset=len(body))
        return SettingsGet(_SGET.unpack(body)[1])
    raise DecodeError(f"unknown body type 0x{kind & 0xFF:02x}" if body else "empty body",
                      offset=0)


def encode_reply(reply: Reply) -> bytes:
    """The reply padded to ``REPLY_SIZE`` bytes: every answer has the same size."""
    if isinstance(reply, HeartbeatAck):
        raw = _HBACK.pack(HEARTBEAT_ACK, reply.flags, reply.console_time & _U32)
    elif isinstance(reply, FragmentAck):  # the two common replies first: one of them per query
        if len(reply.received) == reply.count:  # all of them: the bitmap is known
            bitmap = _FULL[reply.count]
        else:
            mask = bytearray((reply.count + 7) // 8)
            for i in reply.received:
                mask[i // 8] |= 0x80 >> (i % 8)
            bitmap = bytes(mask)
        raw = _FACK.pack(FRAGMENT_ACK, reply.msg_id, int(reply.complete), reply.count) + bitmap
    elif isinstance(reply, RegisterAck):
        if reply.status not in REG_STATUSES or len(reply.nonce) != PAIRING_NONCE_LEN or (
                reply.status == REG_APPROVED and len(reply.settings_key) != SETTINGS_KEY_LEN):
            raise ValueError("bad registration reply")
        raw = bytes((REGISTER_ACK, reply.status)) + (
            reply.settings_key if reply.status == REG_APPROVED else reply.nonce)
    elif isinstance(reply, Stale):
        raw = bytes((STALE,)) + reply.highest.to_bytes(6, "big")
    else:
        if not (0 <= reply.total <= SETTINGS_MAX and len(reply.chunk) <= SETTINGS_CHUNK
                and reply.offset + len(reply.chunk) <= reply.total):
            raise ValueError("bad settings part")
        raw = _SPART.pack(SETTINGS_PART, reply.version, reply.total, reply.offset) + reply.chunk
    return raw + _PADS[len(raw)]


def decode_reply(data: bytes) -> Reply:
    r = Reader(unpad(data))
    kind = r.uint(1, "reply type")
    if kind == HEARTBEAT_ACK:
        out: Reply = HeartbeatAck(r.uint(1, "flags"), r.uint(4, "console time"))
    elif kind == STALE:
        out = Stale(r.uint(6, "highest counter"))
    elif kind == SETTINGS_PART:
        version, total, offset = r.uint(4, "version"), r.uint(2, "total"), r.uint(2, "offset")
        if total > SETTINGS_MAX or offset > total:
            raise DecodeError(f"settings part {offset}/{total} out of range", offset=5)
        out = SettingsPart(version, total, offset,
                           r.take(min(SETTINGS_CHUNK, total - offset), "settings chunk"))
    elif kind == REGISTER_ACK:
        status = r.uint(1, "registration status")
        if status not in REG_STATUSES:
            raise DecodeError(f"unknown registration status {status}", offset=1)
        if status == REG_APPROVED:
            out = RegisterAck(status, settings_key=r.take(SETTINGS_KEY_LEN, "settings key"))
        else:
            out = RegisterAck(status, r.take(PAIRING_NONCE_LEN, "pairing nonce"))
    elif kind == FRAGMENT_ACK:
        msg_id, complete, count = r.uint(8, "message id"), r.uint(1, "complete"), r.uint(1, "count")
        bitmap = r.take((count + 7) // 8, "bitmap")
        received = frozenset(i for i in range(count) if bitmap[i // 8] & (0x80 >> (i % 8)))
        out = FragmentAck(msg_id, bool(complete), received, count)
    else:
        raise DecodeError(f"unknown reply type 0x{kind:02x}", offset=0)
    r.end("reply")
    return out
