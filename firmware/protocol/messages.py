"""Bodies of upstream frames and of the console's replies (DNS protocol v1).

Upstream bodies:  HEARTBEAT(0x01) uptime u32 | queue_depth u16 | flags u8
                  FRAGMENT(0x02)  msg_id u32 | index u8 | count u8 | chunk
Replies:          HEARTBEAT_ACK(0x81) flags u8 | console_time u32
                  FRAGMENT_ACK(0x82)  msg_id u32 | complete u8 | count u8 | bitmap
Each decoder reads through ``Reader`` and raises ``DecodeError`` with the offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from firmware.errors import DecodeError
from firmware.protocol.reader import Reader

HEARTBEAT = 0x01
FRAGMENT = 0x02
HEARTBEAT_ACK = 0x81
FRAGMENT_ACK = 0x82
FRAGMENT_HEADER_LEN = 7
MAX_FRAGMENTS = 255
FLAG_COMMANDS_PENDING = 0x01


@dataclass(frozen=True, slots=True)
class Heartbeat:
    uptime: int
    queue_depth: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Fragment:
    msg_id: int
    index: int
    count: int
    chunk: bytes


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    flags: int
    console_time: int


@dataclass(frozen=True, slots=True)
class FragmentAck:
    msg_id: int
    complete: bool
    received: frozenset[int]
    count: int


Body = Heartbeat | Fragment
Reply = HeartbeatAck | FragmentAck

_HB = struct.Struct(">BIHB")
_FRAG = struct.Struct(">BIBB")
_HBACK = struct.Struct(">BBI")
_FACK = struct.Struct(">BIBB")


def encode_body(body: Body) -> bytes:
    if isinstance(body, Heartbeat):
        return _HB.pack(HEARTBEAT, min(body.uptime, 0xFFFFFFFF), min(body.queue_depth, 0xFFFF),
                        body.flags)
    if not (0 <= body.index < body.count <= MAX_FRAGMENTS and body.chunk):
        raise ValueError("bad fragment index/count or empty chunk")
    return _FRAG.pack(FRAGMENT, body.msg_id, body.index, body.count) + body.chunk


def decode_body(data: bytes) -> Body:
    r = Reader(data)
    kind = r.uint(1, "body type")
    if kind == HEARTBEAT:
        out: Body = Heartbeat(r.uint(4, "uptime"), r.uint(2, "queue depth"), r.uint(1, "flags"))
        r.end("heartbeat")
        return out
    if kind == FRAGMENT:
        msg_id, index, count = r.uint(4, "message id"), r.uint(1, "index"), r.uint(1, "count")
        if not index < count:
            raise DecodeError(f"fragment index {index} not below count {count}", offset=5)
        chunk = r.rest()
        if not chunk:
            raise DecodeError("empty fragment", offset=r.offset)
        return Fragment(msg_id, index, count, chunk)
    raise DecodeError(f"unknown body type 0x{kind:02x}", offset=0)


def encode_reply(reply: Reply) -> bytes:
    if isinstance(reply, HeartbeatAck):
        return _HBACK.pack(HEARTBEAT_ACK, reply.flags, reply.console_time & 0xFFFFFFFF)
    bitmap = bytearray((reply.count + 7) // 8)
    for i in reply.received:
        bitmap[i // 8] |= 0x80 >> (i % 8)
    return _FACK.pack(FRAGMENT_ACK, reply.msg_id, int(reply.complete), reply.count) + bitmap


def decode_reply(data: bytes) -> Reply:
    r = Reader(data)
    kind = r.uint(1, "reply type")
    if kind == HEARTBEAT_ACK:
        out: Reply = HeartbeatAck(r.uint(1, "flags"), r.uint(4, "console time"))
    elif kind == FRAGMENT_ACK:
        msg_id, complete, count = r.uint(4, "message id"), r.uint(1, "complete"), r.uint(1, "count")
        bitmap = r.take((count + 7) // 8, "bitmap")
        received = frozenset(i for i in range(count) if bitmap[i // 8] & (0x80 >> (i % 8)))
        out = FragmentAck(msg_id, bool(complete), received, count)
    else:
        raise DecodeError(f"unknown reply type 0x{kind:02x}", offset=0)
    r.end("reply")
    return out
