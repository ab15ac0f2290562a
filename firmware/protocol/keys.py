"""Keys typed by role, device ids and the cached shared key of DNS protocol v2.

A device holds its own X25519 private key and the console's public key; the console holds its
own private key and each device's public key.  Both sides derive the same 32-byte secretbox key
once (crypto_box_beforenm, ~33 us) and cache it: per frame only the cheap secretbox runs.
A public key is checked before anyone relies on it: low-order points (32 zero bytes and the
other small-subgroup points) make every shared key the same, so they are refused at the edge.
The device id is 8 bytes of a hash of the public key: grinding a key whose id squats another
device's costs about 2^64 key generations.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from firmware.shared.errors import DecodeError

KEY_LEN = 32
DEVICE_ID_LEN = 8
_ID_PERSON = b"coalmine-devid"
_PROBE_SCALAR = bytes([8] + [1] * 30 + [64])  # a fixed clamped scalar
_P = 2**255 - 19  # a canonical encoding is below the field prime (so bit 255 is clear)


@dataclass(frozen=True)
class PeerPublicKey:
    """The X25519 public key of the other side (console on the device, device on the console)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise DecodeError(f"public key must be {KEY_LEN} bytes", offset=len(self.raw))
        if int.from_bytes(self.raw, "little") >= _P:  # X25519 ignores bit 255: one key, 2 ids
            raise DecodeError("not a canonical X25519 public key", offset=KEY_LEN - 1)
        try:  # any clamped scalar times a low-order point is the identity: libsodium refuses
            crypto_scalarmult(_PROBE_SCALAR, self.raw)
        except CryptoError:
            raise DecodeError("not a usable X25519 public key (low-order point)",
                              offset=0) from None

    @classmethod
    def from_text(cls, text: str) -> PeerPublicKey:
        return cls(decode_key_text(text))

    def text(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def device_id(self) -> bytes:
        return device_id_for(self.raw)


@dataclass(frozen=True)
class OwnPrivateKey:
    """This side's own X25519 private key; never leaves the machine that made it."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise DecodeError(f"private key must be {KEY_LEN} bytes", offset=len(self.raw))

    @classmethod
    def generate(cls) -> OwnPrivateKey:
        return cls(bytes(PrivateKey.generate()))

    def public(self) -> PeerPublicKey:
        return PeerPublicKey(bytes(PrivateKey(self.raw).public_key))

    def shared_key(self, peer: PeerPublicKey) -> bytes:
        """The secretbox key both sides derive; compute once per peer and cache it."""
        return bytes(Box(PrivateKey(self.raw), PublicKey(peer.raw)).shared_key())

    def __repr__(self) -> str:  # never print secret bytes by accident
        return "OwnPrivateKey(<secret>)"


def device_id_for(public_key: bytes) -> bytes:
    """The 8-byte device id carried in clear in every frame: a hash of the device public key."""
    return hashlib.blake2b(public_key, digest_size=DEVICE_ID_LEN, person=_ID_PERSON).digest()


def decode_key_text(text: str) -> bytes:
    """Decode a base64 key as written in configuration files and CLI arguments."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("key is not valid base64", offset=0) from None
    if len(raw) != KEY_LEN:
        raise DecodeError(f"key must decode to {KEY_LEN} bytes, not {len(raw)}", offset=len(raw))
    return raw
