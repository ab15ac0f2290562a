"""Keys typed by role, device ids and the cached shared key of DNS protocol v1.

A device holds its own X25519 private key and the console's public key; the console holds its
own private key and each device's public key.  Both sides derive the same 32-byte secretbox key
once (crypto_box_beforenm, ~33 us) and cache it: per frame only the cheap secretbox runs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from nacl.public import Box, PrivateKey, PublicKey

from firmware.errors import DecodeError
from firmware.protocol.frame import DEVICE_ID_LEN

KEY_LEN = 32
_ID_PERSON = b"coalmine-devid"


@dataclass(frozen=True)
class PeerPublicKey:
    """The X25519 public key of the other side (console on the device, device on the console)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise DecodeError(f"public key must be {KEY_LEN} bytes", offset=len(self.raw))

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
    """The 4-byte device id carried in clear in every frame: a hash of the device public key."""
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
