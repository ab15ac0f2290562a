"""Signed envelopes for the offline signer's documents: exact bytes, one prefix per role.

Trust roots, release manifests, warrant-canary statements and ceremony transcripts all travel
in one envelope (docs/signing.md): the payload's exact bytes and the signatures over them.  A
signature covers ``pae(role, payload)`` = ``"coalmine/v1/" role NUL length(u64) payload``, so a
release signature can never pass as a canary's or a root's, and nothing is ever re-serialised
before it is checked.  Thresholds count distinct public keys: a key that signs twice, or that a
document lists under two ids, counts once.  Sizes are capped before anything is parsed, and a
threshold below one (no trusted key) refuses everything.  Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

from firmware.shared.errors import RefusedError

PREFIX = b"coalmine/v1/"
ROLES = ("root", "release", "canary", "panic", "transcript")
MAX_ENVELOPE = 64 * 1024  # bytes, checked before parsing
MAX_PAYLOAD = 32 * 1024
MAX_SIGNATURES = 32
KEY_LEN, SIG_LEN = 32, 64


def pae(role: str, payload: bytes) -> bytes:
    """What a signature covers: the role's prefix, the payload's length, the payload."""
    if role not in ROLES:
        raise ValueError(f"no role {role!r}")
    return PREFIX + role.encode("ascii") + b"\x00" + len(payload).to_bytes(8, "big") + payload


def key_id(public: bytes) -> str:
    """A key's id: derived from the key, so one key cannot stand under two ids."""
    return hashlib.blake2b(public, digest_size=16, person=b"coalmine-keyid").hexdigest()


@dataclass(frozen=True)
class Envelope:
    role: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (key id, signature)

    def encode(self) -> bytes:
        doc = {"payload": base64.b64encode(self.payload).decode("ascii"),
               "role": self.role,
               "signatures": [{"keyid": k, "sig": base64.b64encode(s).decode("ascii")}
                              for k, s in self.signatures]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"

    def signed_by(self, seeds: Sequence[bytes]) -> Envelope:
        """This envelope with signatures of the keys made from ``seeds`` added."""
        extra = tuple((key_id(bytes(SigningKey(seed).verify_key)),
                       bytes(SigningKey(seed).sign(pae(self.role, self.payload)).signature))
                      for seed in seeds)
        return Envelope(self.role, self.payload, self.signatures + extra)


def public_key(kid: str, text: Any, what: str) -> bytes:
    """The Ed25519 key a document lists under ``kid``: base64 of 32 bytes whose id is ``kid``."""
    public = b64(text, f"{what} key {kid}")
    if len(public) != KEY_LEN or key_id(public) != kid:
        raise RefusedError(f"{what}: key {kid!r} is not an Ed25519 key under its own id")
    return public


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The payload bytes the signer writes (readers never re-serialise: they keep the bytes)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def parse(data: bytes) -> Envelope:
    """An envelope from bytes, size-capped before parsing; a malformed one is refused."""
    if len(data) > MAX_ENVELOPE:
        raise RefusedError(f"signed document of {len(data)} bytes, more than {MAX_ENVELOPE}")
    doc = _json(data, "signed document")
    if not isinstance(doc, dict) or set(doc) != {"payload", "role", "signatures"}:
        raise RefusedError("not a coalmine signed document (payload, role, signatures)")
    role, sigs = doc["role"], doc["signatures"]
    if role not in ROLES or not isinstance(sigs, list) or len(sigs) > MAX_SIGNATURES:
        raise RefusedError("unknown role or too many signatures")
    payload = b64(doc["payload"], "payload")
    if len(payload) > MAX_PAYLOAD:
        raise RefusedError(f"payload of {len(payload)} bytes, more than {MAX_PAYLOAD}")
    out = []
    for sig in sigs:
        if not isinstance(sig, dict) or set(sig) != {"keyid", "sig"} \
                or not isinstance(sig["keyid"], str) or len(sig["keyid"]) != 32:
            raise RefusedError("malformed signature entry")
        out.append((sig["keyid"], b64(sig["sig"], "signature")))
    return Envelope(role, payload, tuple(out))


def load_payload(env: Envelope, kind: str) -> dict[str, Any]:
    """The payload's JSON object, which must say it is a ``kind`` document."""
    doc = _json(env.payload, f"{kind} payload")
    if not isinstance(doc, dict) or doc.get("type") != kind:
        raise RefusedError(f"not a {kind} document")
    return doc


def signers(env: Envelope, role: str, keys: Mapping[str, bytes],
            allowed: Collection[str]) -> frozenset[bytes]:
    """The distinct public keys, among the ``allowed`` key ids, whose signature over
    ``pae(role, payload)`` verifies (an envelope made for another role verifies nothing)."""
    if env.role != role:
        return frozenset()
    message = pae(role, env.payload)
    found: set[bytes] = set()
    for kid, sig in env.signatures:
        public = keys.get(kid)
        if kid not in allowed or public is None or public in found or len(sig) != SIG_LEN:
            continue
        try:
            VerifyKey(public).verify(message, sig)
        except (BadSignatureError, NaclValueError, TypeError):
            continue
        found.add(public)
    return frozenset(found)


def require(env: Envelope, role: str, keys: Mapping[str, bytes], allowed: Collection[str], *,
            threshold: int, what: str) -> frozenset[bytes]:
    """``signers`` if they reach ``threshold``; refused otherwise, and always when no key is
    trusted (a threshold below one never passes)."""
    if threshold < 1 or not allowed:
        raise RefusedError(f"{what}: no trusted key for the {role} role")
    got = signers(env, role, keys, allowed)
    if len(got) < threshold:
        raise RefusedError(f"{what}: {len(got)} valid {role} signature(s) of the {threshold} "
                           "needed")
    return got


def _json(data: bytes, what: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise RefusedError(f"{what}: a key appears twice")
        return dict(pairs)
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RefusedError(f"{what} is not JSON") from None


def b64(value: Any, what: str) -> bytes:
    """Strict base64 text from a document; refused otherwise."""
    if not isinstance(value, str):
        raise RefusedError(f"{what} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RefusedError(f"{what} is not base64") from None
