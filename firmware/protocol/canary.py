"""Warrant-canary statements: signed whole by k of n canary keys, checked against pinned keys.

A statement (docs/signing.md, "Warrant canaries") has the standard's fields; CODES lists, in
alphabetical order, the all-clear codes the signers still affirm (no warrant: WAR, no gag
order: GAG, ...).  Unlike the standard's per-field signatures, the whole payload is signed as
one envelope under the ``canary`` role, so fields of two statements can never be spliced.

The verifier never takes keys from the statement itself: it holds a *pin* (the canary key set
with its threshold, the panic keys, the domain, the last version seen), believes a statement
only under the pinned threshold, and then moves the pin on to the statement's NEWPUBKEY and
NEWPANICKEY: key continuity, so a statement that skips a key set in the chain is refused.  A
statement signed by a pinned panic key (an envelope of the ``panic`` role) fails the canary at
once.  Pure: no I/O; ``canary watch`` keeps the pin between runs.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import VerifyKey

from firmware.protocol import envelope as env
from firmware.shared.errors import RefusedError

CODES = ("CEASE", "DURESS", "GAG", "RAID", "SEIZE", "SUBP", "TRAP", "WAR", "XCRED", "XOPERS")
FIELDS = ("CODES", "DOMAIN", "EXPIRY", "FRESHNESS", "NEWPANICKEY", "NEWPUBKEY", "PANICKEY",
          "PUBKEY", "RELEASE", "VERSION", "type")
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
MAX_FRESHNESS = 256
MAX_KEYS = 16


@dataclass(frozen=True)
class KeySet:
    keys: Mapping[str, bytes]  # key id -> Ed25519 public key
    threshold: int

    def doc(self) -> dict[str, Any]:
        return {"keys": {k: base64.b64encode(v).decode("ascii")
                         for k, v in sorted(self.keys.items())}, "threshold": self.threshold}


@dataclass(frozen=True)
class Pin:
    """What a watcher trusts, kept between checks (the key-continuity history)."""

    domain: str
    canary: KeySet
    panic: KeySet
    version: int = 0
    history: tuple[str, ...] = field(default=())  # "VERSION key-id,key-id/k" of each step


@dataclass(frozen=True)
class Verdict:
    """``ok`` (all clear), ``failed`` (expired or a code gone), ``panic``; why; the next pin."""

    status: str
    reasons: tuple[str, ...]
    pin: Pin
    statement: Mapping[str, Any]


def statement(*, domain: str, canary: KeySet, new_canary: KeySet, panic: KeySet,
              new_panic: KeySet, version: int, release: int, expiry: int, freshness: str,
              codes: list[str]) -> bytes:
    """The payload the signers sign (canonical JSON, CODES sorted)."""
    return env.canonical({
        "type": "canary", "DOMAIN": domain, "PUBKEY": canary.doc(),
        "NEWPUBKEY": new_canary.doc(), "PANICKEY": panic.doc(), "NEWPANICKEY": new_panic.doc(),
        "VERSION": version, "RELEASE": release, "EXPIRY": expiry, "FRESHNESS": freshness,
        "CODES": sorted(codes)})


def verify(pin: Pin, data: bytes, now: int) -> Verdict:
    """Check one statement against the pin; refused (RefusedError) when it cannot be believed
    at all, else a verdict whose pin the watcher keeps."""
    envelope = env.parse(data)
    doc = parse(envelope.payload)
    if envelope.role == "panic":
        env.require(envelope, "panic", pin.panic.keys, list(pin.panic.keys),
                    threshold=pin.panic.threshold, what="panic statement")
        return Verdict("panic", ("signed by the pinned panic key: the canary has failed on "
                                 "purpose",), pin, doc)
    env.require(envelope, "canary", pin.canary.keys, list(pin.canary.keys),
                threshold=pin.canary.threshold, what="canary statement")
    if doc["DOMAIN"] != pin.domain:
        raise RefusedError(f"statement for {doc['DOMAIN']}, not {pin.domain}")
    if doc["PUBKEY"] != pin.canary or doc["PANICKEY"] != pin.panic:
        raise RefusedError("PUBKEY or PANICKEY is not the pinned key set: a key in the chain "
                           "was skipped")
    if doc["VERSION"] <= pin.version:
        raise RefusedError(f"statement version {doc['VERSION']} is not newer than "
                           f"{pin.version} (replayed or rolled back)")
    reasons = []
    if now >= doc["EXPIRY"]:
        reasons.append(f"expired at {doc['EXPIRY']} (now {now})")
    if doc["RELEASE"] > now:
        reasons.append(f"released in the future ({doc['RELEASE']}, now {now})")
    missing = [c for c in CODES if c not in doc["CODES"]]
    if missing:
        reasons.append("codes no longer affirmed: " + " ".join(missing))
    new = replace(pin, canary=doc["NEWPUBKEY"], panic=doc["NEWPANICKEY"],
                  version=doc["VERSION"], history=(*pin.history, _step(doc)))
    return Verdict("failed" if reasons else "ok", tuple(reasons), new, doc)


def parse(payload: bytes) -> dict[str, Any]:
    """A statement's fields, validated; key sets as ``KeySet``."""
    doc = env.load_payload(env.Envelope("canary", payload, ()), "canary")
    if set(doc) != set(FIELDS):
        raise RefusedError("canary: expected exactly the fields " + ", ".join(FIELDS))
    if not isinstance(doc["DOMAIN"], str) or not _DOMAIN.fullmatch(doc["DOMAIN"]):
        raise RefusedError("canary: DOMAIN is not a domain name")
    for name in ("VERSION", "RELEASE", "EXPIRY"):
        if type(doc[name]) is not int or not 0 <= doc[name] < 2**53:
            raise RefusedError(f"canary: {name} is not a whole number")
    fresh = doc["FRESHNESS"]
    if not isinstance(fresh, str) or not 0 < len(fresh) <= MAX_FRESHNESS:
        raise RefusedError("canary: FRESHNESS must be text of 1 to 256 characters")
    codes = doc["CODES"]
    if not isinstance(codes, list) or codes != sorted(set(codes)) or not set(codes) <= set(CODES):
        raise RefusedError("canary: CODES must be known codes, once each, in alphabetical order")
    for name in ("PUBKEY", "NEWPUBKEY", "PANICKEY", "NEWPANICKEY"):
        doc[name] = keyset(doc[name], name)
    return doc


def keyset(value: Any, what: str) -> KeySet:
    if not isinstance(value, dict) or set(value) != {"keys", "threshold"}:
        raise RefusedError(f"canary: {what} must hold keys and a threshold")
    keys, threshold = value["keys"], value["threshold"]
    if not isinstance(keys, dict) or not 0 < len(keys) <= MAX_KEYS:
        raise RefusedError(f"canary: {what} must hold 1 to 16 keys")
    out = {kid: env.public_key(kid, text, f"canary: {what}") for kid, text in keys.items()}
    if type(threshold) is not int or not 1 <= threshold <= len(out):
        raise RefusedError(f"canary: {what} threshold {threshold!r} of {len(out)} keys")
    return KeySet(out, threshold)


def _step(doc: Mapping[str, Any]) -> str:
    ks: KeySet = doc["NEWPUBKEY"]
    return f"{doc['VERSION']} {','.join(sorted(ks.keys))}/{ks.threshold}"


# --- the standard's own JSON layout (legacy) --------------------------------------------------

LEGACY_FIELDS = ("domain", "pubkeys", "panickey", "version", "release", "expiry", "freshness",
                 "codes")
LEGACY_WARNING = ("legacy layout: each field is signed on its own, so fields of two genuinely "
                  "signed statements can be combined; this statement is never fully valid")


def verify_legacy(pin: Pin, data: bytes, now: int) -> Verdict:
    """A statement in the standard's published layout (``{"canary": {...}, "signatures":
    {public key: {field: signature}}}``), checked field by field under the pinned keys.  Its
    best verdict is ``legacy`` with the splicing warning, never ``ok``."""
    if len(data) > env.MAX_ENVELOPE:
        raise RefusedError(f"statement of {len(data)} bytes, more than {env.MAX_ENVELOPE}")
    try:
        doc = json.loads(data.decode("utf-8"))
        claim, sigsets = doc["canary"], doc["signatures"]
        values = {f: _legacy_value(claim[f]) for f in LEGACY_FIELDS}
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        raise RefusedError("not a statement in the standard's layout") from None
    if not isinstance(sigsets, dict):
        raise RefusedError("legacy statement: signatures must be a table")

    def signed_by(keys: KeySet) -> int:
        count = 0
        for public in keys.keys.values():
            fields = sigsets.get(base64.b64encode(public).decode())
            if isinstance(fields, dict) and all(
                    _legacy_ok(public, values[f], fields.get(f)) for f in LEGACY_FIELDS):
                count += 1
        return count

    if signed_by(pin.panic) >= pin.panic.threshold:
        return Verdict("panic", ("signed by the pinned panic key", LEGACY_WARNING), pin, claim)
    got = signed_by(pin.canary)
    if got < pin.canary.threshold:
        raise RefusedError(f"legacy statement: {got} pinned canary key(s) signed every field, "
                           f"{pin.canary.threshold} needed")
    if values["domain"] != pin.domain:
        raise RefusedError(f"statement for {values['domain']}, not {pin.domain}")
    reasons = [LEGACY_WARNING]
    try:
        expiry, release = (int(datetime.fromisoformat(claim[f]).timestamp())
                           for f in ("expiry", "release"))
    except (TypeError, ValueError):
        raise RefusedError("legacy statement: release or expiry is not a date") from None
    if now >= expiry:
        reasons.append(f"expired at {expiry} (now {now})")
    if release > now:
        reasons.append(f"released in the future ({release}, now {now})")
    codes = {str(c).upper() for c in claim["codes"]} if isinstance(claim["codes"], list) else set()
    missing = [c for c in CODES if c not in codes]
    if missing:
        reasons.append("codes no longer affirmed: " + " ".join(missing))
    return Verdict("failed" if len(reasons) > 1 else "legacy", tuple(reasons), pin, claim)


def _legacy_value(value: Any) -> str:
    """The standard's string form of a field, as its signatures cover it."""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if value is None:
        return ""
    return str(value)


def _legacy_ok(public: bytes, value: str, signature: Any) -> bool:
    try:
        VerifyKey(public).verify(value.encode("utf-8"), base64.b64decode(signature,
                                                                         validate=True))
    except (BadSignatureError, NaclValueError, TypeError, ValueError):
        return False
    return True
