"""A key holder's private key at rest: Ed25519 seed under the holder's passphrase.

Made on the signing machine and written only to the holder's own removable medium (docs/
ceremony.md).  The seed is sealed with libsodium's secretbox under a key that Argon2id derives
from the passphrase; the Argon2id parameters and salt are stored with each key, so keys made
with stronger parameters later still open.  The sealed plaintext repeats the role, the holder
and the public key, so a file whose labels were edited does not open as something else.  A
wrong passphrase and a damaged file give the same answer after the same work (the derivation
always runs in full before the one authenticity check), and parameters in a file are bounded,
so a crafted file cannot make the signer allocate without limit.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from nacl import pwhash
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.signing import SigningKey
from nacl.utils import random

from firmware.protocol import envelope as env
from firmware.shared.errors import AuthenticationError, DecodeError

FORMAT = "coalmine-key/v1"
MAX_FILE = 4096
MIN_PASSPHRASE = 12


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: libsodium's "sensitive" level by default (1 GiB, 4 passes)."""

    opslimit: int = pwhash.argon2id.OPSLIMIT_SENSITIVE
    memlimit: int = pwhash.argon2id.MEMLIMIT_SENSITIVE

    def check(self) -> None:
        a = pwhash.argon2id
        if not (a.OPSLIMIT_MIN <= self.opslimit <= 32
                and a.MEMLIMIT_MIN <= self.memlimit <= 4 << 30):
            raise DecodeError(f"key file asks for Argon2id ops {self.opslimit}, memory "
                              f"{self.memlimit}: outside what a signer accepts")


@dataclass(frozen=True)
class HolderKey:
    role: str
    holder: str
    public: bytes

    @property
    def key_id(self) -> str:
        return env.key_id(self.public)


def seal(seed: bytes, role: str, holder: str, passphrase: str,
         params: KdfParams = KdfParams()) -> bytes:
    """The key file's bytes for ``seed``."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise ValueError(f"a passphrase of at least {MIN_PASSPHRASE} characters")
    public = bytes(SigningKey(seed).verify_key)
    salt = random(pwhash.argon2id.SALTBYTES)
    box = SecretBox(_derive(passphrase, salt, params))
    inner = env.canonical({"holder": holder, "public": _b64(public), "role": role,
                           "seed": _b64(seed)})
    doc = {"format": FORMAT, "role": role, "holder": holder, "public": _b64(public),
           "keyid": env.key_id(public),
           "kdf": {"alg": "argon2id13", "opslimit": params.opslimit,
                   "memlimit": params.memlimit, "salt": _b64(salt)},
           "sealed": _b64(bytes(box.encrypt(inner)))}
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def describe(data: bytes) -> HolderKey:
    """What a key file says it holds (nothing is decrypted): for prompts and checks."""
    doc = _doc(data)
    return HolderKey(doc["role"], doc["holder"], _unb64(doc["public"]))


def unseal(data: bytes, passphrase: str) -> tuple[HolderKey, bytes]:
    """(who, Ed25519 seed) from a key file and its passphrase."""
    doc = _doc(data)
    kdf = doc["kdf"]
    params = KdfParams(kdf["opslimit"], kdf["memlimit"])
    params.check()
    box = SecretBox(_derive(passphrase, _unb64(kdf["salt"]), params))
    try:
        inner = json.loads(box.decrypt(_unb64(doc["sealed"])))
    except (CryptoError, ValueError):
        raise AuthenticationError("wrong passphrase, or the key file was altered",
                                  hint="type the passphrase again; a holder who lost it needs "
                                       "a new key (docs/ceremony.md)") from None
    key = HolderKey(doc["role"], doc["holder"], _unb64(doc["public"]))
    seed = _unb64(inner.get("seed", ""))
    if (inner.get("role"), inner.get("holder"), inner.get("public")) != (
            key.role, key.holder, doc["public"]) or len(seed) != 32 \
            or bytes(SigningKey(seed).verify_key) != key.public:
        raise AuthenticationError("the key file's labels do not match the sealed key")
    return key, seed


def _doc(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_FILE:
        raise DecodeError(f"key file of {len(data)} bytes: not a coalmine key", offset=0)
    try:
        doc = json.loads(data.decode("utf-8"))
        kdf = doc["kdf"]
        ok = (doc["format"] == FORMAT and kdf["alg"] == "argon2id13"
              and all(isinstance(doc[k], str) for k in ("role", "holder", "public", "sealed"))
              and all(type(kdf[k]) is int for k in ("opslimit", "memlimit"))
              and isinstance(kdf["salt"], str))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise DecodeError("not a coalmine key file (truncated or damaged?)", offset=0,
                          hint="use the holder's own key file; keep a second copy on another "
                               "medium (docs/ceremony.md)")
    return dict(doc)


def _derive(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    if len(salt) != pwhash.argon2id.SALTBYTES:
        raise DecodeError("key file salt has the wrong length", offset=0)
    return bytes(pwhash.argon2id.kdf(SecretBox.KEY_SIZE, passphrase.encode("utf-8"), salt,
                                     opslimit=params.opslimit, memlimit=params.memlimit))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any) -> bytes:
    try:
        return base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except (binascii.Error, ValueError):
        raise DecodeError("not a coalmine key file (bad base64)", offset=0) from None
