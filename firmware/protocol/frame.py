"""Encrypted frames of DNS protocol v2 (docs/protocol.md): header, nonce, seal and open.

frame  = kind(1) | device_id(8) | session(4) | counter(6) | secretbox(body)   (16-byte MAC)
nonce  = direction(1) | kind(1) | device_id(8) | session(4) | counter(6) | zero(4)  (not sent)
answer = secretbox(reply) under the same header, direction DOWN

A registration frame (pairing, docs/pairing.md) carries the device's whole public key instead of
its id, so a console that does not know the device yet can derive the shared key and open it:

register = kind(1) = 0x03 | device public key(32) | session(4) | counter(6) | secretbox(body)
its nonce is built as above from the id the key hashes to, with kind 0x03, so it never meets a
device frame's nonce under the same key.

The whole clear header is authenticated because it is the nonce; an answer opens only for the
query it answers.  ``session`` is random per agent start, so even a device whose counters went
back (its data partition restored from a backup, or a cloned card) never repeats a nonce: the
first frame after a restore is already safe.  Pure functions: no I/O, keys passed in.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from nacl.bindings import crypto_secretbox, crypto_secretbox_open
from nacl.exceptions import CryptoError

from firmware.protocol.keys import DEVICE_ID_LEN, device_id_for
from firmware.protocol.names import max_frame_bytes
from firmware.shared.errors import AuthenticationError, DecodeError

KIND_DEVICE = 0x02  # a frame from an enrolled device (heartbeats, fragments)
KIND_REGISTER = 0x03  # registration (pairing) of a device the console does not know yet
PUBLIC_KEY_LEN = 32
SESSION_LEN = 4
COUNTER_LEN = 6
HEADER_LEN = 1 + DEVICE_ID_LEN + SESSION_LEN + COUNTER_LEN
REGISTER_HEADER_LEN = 1 + PUBLIC_KEY_LEN + SESSION_LEN + COUNTER_LEN
MAC_LEN = 16
OVERHEAD = HEADER_LEN + MAC_LEN
REGISTER_OVERHEAD = REGISTER_HEADER_LEN + MAC_LEN
MAX_COUNTER = (1 << (8 * COUNTER_LEN)) - 1
MAX_SESSION = (1 << (8 * SESSION_LEN)) - 1

UP = 1  # device -> console (query name)
DOWN = 2  # console -> device (TXT answer)
_ZERO = bytes(24 - 1 - HEADER_LEN)
_HEADER = struct.Struct(">B8sIHI")  # kind, device id, session, counter (16 + 32 bits)
_UP = bytes((UP,))
_DOWN = bytes((DOWN,))


class Header(NamedTuple):
    """The clear part of a frame: who sent it, in which agent session, under which counter."""

    device_id: bytes
    session: int
    counter: int
    kind: int = KIND_DEVICE

    def wire(self) -> bytes:
        return (bytes((self.kind,)) + self.device_id + self.session.to_bytes(SESSION_LEN, "big")
                + self.counter.to_bytes(COUNTER_LEN, "big"))


def body_size(zone: str) -> int:
    """The padded size of every upstream body under ``zone``: one full query name's room."""
    return max_frame_bytes(zone) - OVERHEAD


def register_body_size(zone: str) -> int:
    """The padded size of a registration body under ``zone`` (its header is longer)."""
    return max_frame_bytes(zone) - REGISTER_OVERHEAD


def nonce(direction: int, header: Header) -> bytes:
    return bytes((direction,)) + header.wire() + _ZERO


def seal(key: bytes, header: Header, body: bytes) -> bytes:
    """Build an upstream frame carrying ``body``."""
    if (len(header.device_id) != DEVICE_ID_LEN or header.kind != KIND_DEVICE
            or not 0 <= header.counter <= MAX_COUNTER or not 0 <= header.session <= MAX_SESSION):
        raise ValueError("bad frame header")
    return header.wire() + crypto_secretbox(body, nonce(UP, header), key)


def parse_header(frame: bytes) -> Header:
    """Read the clear header; the body stays sealed until ``open_body`` with the device's key."""
    if len(frame) < OVERHEAD:
        raise DecodeError(f"frame of {len(frame)} bytes is shorter than {OVERHEAD}", offset=0)
    kind, device_id, session, high, low = _HEADER.unpack_from(frame)
    if kind != KIND_DEVICE:  # a registration frame has a header of its own: parse_register
        raise DecodeError(f"not a device frame (kind 0x{kind:02x})", offset=0)
    return Header(device_id, session, high << 32 | low, kind)


def open_body(key: bytes, header: Header, frame: bytes) -> bytes:
    """Authenticate and decrypt the body of an upstream frame (``header`` was read from it)."""
    try:  # the frame's own header bytes are the nonce's: no need to serialise ``header``
        nonce_ = _UP + frame[:HEADER_LEN] + _ZERO
        return bytes(crypto_secretbox_open(frame[HEADER_LEN:], nonce_, key))
    except CryptoError:
        raise AuthenticationError("frame does not authenticate under the device key") from None


def register_header(public_key: bytes, session: int, counter: int) -> Header:
    """The header (for the nonce) of a registration frame from the device with ``public_key``."""
    return Header(device_id_for(public_key), session, counter, KIND_REGISTER)


def seal_register(key: bytes, public_key: bytes, header: Header, body: bytes) -> bytes:
    """Build a registration frame: the device's public key in clear, the body sealed."""
    if len(public_key) != PUBLIC_KEY_LEN or header.kind != KIND_REGISTER:
        raise ValueError("bad registration header")
    clear = (bytes((KIND_REGISTER,)) + public_key + header.session.to_bytes(SESSION_LEN, "big")
             + header.counter.to_bytes(COUNTER_LEN, "big"))
    return clear + crypto_secretbox(body, nonce(UP, header), key)


def parse_register(frame: bytes) -> tuple[bytes, Header]:
    """(device public key, header for the nonce) of a registration frame; body still sealed."""
    if len(frame) < REGISTER_OVERHEAD or frame[0] != KIND_REGISTER:
        raise DecodeError("not a registration frame", offset=0)
    public_key = frame[1:1 + PUBLIC_KEY_LEN]
    at = 1 + PUBLIC_KEY_LEN
    session = int.from_bytes(frame[at:at + SESSION_LEN], "big")
    counter = int.from_bytes(frame[at + SESSION_LEN:REGISTER_HEADER_LEN], "big")
    return public_key, register_header(public_key, session, counter)


def open_register(key: bytes, header: Header, frame: bytes) -> bytes:
    """Authenticate and decrypt a registration frame's body (``header`` from ``parse_register``)."""
    try:
        return bytes(crypto_secretbox_open(frame[REGISTER_HEADER_LEN:], nonce(UP, header), key))
    except CryptoError:
        raise AuthenticationError("registration does not authenticate under its key") from None


def seal_reply(key: bytes, header: Header, reply: bytes) -> bytes:
    """Encrypt the console's reply to the frame with ``header``."""
    return bytes(crypto_secretbox(reply, nonce(DOWN, header), key))


def seal_reply_wire(key: bytes, frame: bytes, reply: bytes) -> bytes:
    """``seal_reply`` for the frame as received: its header bytes are the nonce's."""
    return bytes(crypto_secretbox(reply, _DOWN + frame[:HEADER_LEN] + _ZERO, key))


def open_reply(key: bytes, header: Header, data: bytes) -> bytes:
    """Authenticate and decrypt a reply; it opens only for the query it answers."""
    if len(data) < MAC_LEN:
        raise DecodeError("reply shorter than its MAC", offset=len(data))
    try:
        return bytes(crypto_secretbox_open(data, nonce(DOWN, header), key))
    except CryptoError:
        raise AuthenticationError("reply does not authenticate for this query") from None
