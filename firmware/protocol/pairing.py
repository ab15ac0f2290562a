"""The pairing fingerprint both sides show, so a person can tell the real device from an impostor.

Anyone who knows the console's public key can ask to be paired, so the operator approves a
request only when the code the console lists is the one the device in front of them shows (on
its serial console and as an LED blink code, docs/pairing.md).  The code is a hash of both
public keys and of a nonce the console draws *after* it received the request: an impostor who
wants a code that matches a real device's cannot grind keys for it, because the code is not
fixed until the console has chosen the nonce; each request gets a fresh nonce, so a wrong
approval needs a 1-in-a-million coincidence that the operator then also overlooks.

Pure: no I/O, no randomness (the console draws the nonce and passes it in).
"""

from __future__ import annotations

import hashlib

from firmware.protocol.keys import KEY_LEN
from firmware.protocol.messages import PAIRING_NONCE_LEN

DIGITS = 6
_PERSON = b"coalmine-pair"


def fingerprint(console_public: bytes, device_public: bytes, nonce: bytes) -> str:
    """The six-digit pairing code, e.g. ``"042917"`` (shown as ``042 917``)."""
    if len(console_public) != KEY_LEN or len(device_public) != KEY_LEN \
            or len(nonce) != PAIRING_NONCE_LEN:
        raise ValueError("fingerprint needs two 32-byte keys and a 16-byte nonce")
    digest = hashlib.blake2b(console_public + device_public + nonce, digest_size=8,
                             person=_PERSON).digest()
    return f"{int.from_bytes(digest, 'big') % 10**DIGITS:0{DIGITS}d}"


def shown(code: str) -> str:
    """How people read the code: two groups of three digits."""
    return f"{code[:3]} {code[3:]}"
