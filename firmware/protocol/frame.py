"""Encrypted frames of DNS protocol v1 (docs/protocol.md): header, nonce, seal and open.

frame  = device_id(4) | counter(6) | secretbox(body)          (16-byte MAC inside the box)
nonce  = direction(1) | device_id(4) | counter(6) | zero(13)   (never sent)
answer = secretbox(reply) under the same device id and counter, direction DOWN

The clear header is authenticated because it is part of the nonce; an answer opens only for
the query it answers.  Pure functions: no I/O, keys passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.bindings import crypto_secretbox, crypto_secretbox_open
from nacl.exceptions import CryptoError

from firmware.errors import AuthenticationError, DecodeError

DEVICE_ID_LEN = 4
COUNTER_LEN = 6
HEADER_LEN = DEVICE_ID_LEN + COUNTER_LEN
MAC_LEN = 16
OVERHEAD = HEADER_LEN + MAC_LEN
MAX_COUNTER = (1 << (8 * COUNTER_LEN)) - 1

UP = 1  # device -> console (query name)
DOWN = 2  # console -> device (TXT answer)
_ZERO = bytes(24 - 1 - HEADER_LEN)


@dataclass(frozen=True, slots=True)
class Header:
    """The clear part of a frame: who sent it and under which counter."""

    device_id: bytes
    counter: int


def nonce(direction: int, device_id: bytes, counter: int) -> bytes:
    return bytes((direction,)) + device_id + counter.to_bytes(COUNTER_LEN, "big") + _ZERO


def seal(key: bytes, device_id: bytes, counter: int, body: bytes) -> bytes:
    """Build an upstream frame carrying ``body``."""
    if len(device_id) != DEVICE_ID_LEN or not 0 <= counter <= MAX_COUNTER:
        raise ValueError("bad device id or counter")
    header = device_id + counter.to_bytes(COUNTER_LEN, "big")
    return header + crypto_secretbox(body, nonce(UP, device_id, counter), key)


def parse_header(frame: bytes) -> Header:
    """Read the clear header; the body stays sealed until ``open_body`` with the device's key."""
    if len(frame) < OVERHEAD:
        raise DecodeError(f"frame of {len(frame)} bytes is shorter than {OVERHEAD}", offset=0)
    return Header(frame[:DEVICE_ID_LEN], int.from_bytes(frame[DEVICE_ID_LEN:HEADER_LEN], "big"))


def open_body(key: bytes, header: Header, frame: bytes) -> bytes:
    """Authenticate and decrypt the body of an upstream frame."""
    try:
        return bytes(crypto_secretbox_open(frame[HEADER_LEN:], nonce(UP, *_h(header)), key))
    except CryptoError:
        raise AuthenticationError("frame does not authenticate under the device key") from None


def seal_reply(key: bytes, header: Header, reply: bytes) -> bytes:
    """Encrypt the console's reply to the frame with ``header``."""
    return bytes(crypto_secretbox(reply, nonce(DOWN, *_h(header)), key))


def open_reply(key: bytes, header: Header, data: bytes) -> bytes:
    """Authenticate and decrypt a reply; it opens only for the query it answers."""
    if len(data) < MAC_LEN:
        raise DecodeError("reply shorter than its MAC", offset=len(data))
    try:
        return bytes(crypto_secretbox_open(data, nonce(DOWN, *_h(header)), key))
    except CryptoError:
        raise AuthenticationError("reply does not authenticate for this query") from None


def _h(header: Header) -> tuple[bytes, int]:
    return header.device_id, header.counter
