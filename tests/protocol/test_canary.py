"""Warrant-canary statements: whole-document k-of-n signatures against pinned keys, key
continuity through NEWPUBKEY, panic, expiry and missing codes (docs/signing.md)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from firmware.protocol import canary
from firmware.protocol import envelope as env
from firmware.shared.errors import RefusedError
from tests.protocol.test_trust import NOW, public, seed

DAY = 86400


def keys(*holders: int, k: int) -> canary.KeySet:
    return canary.KeySet({env.key_id(public(seed(h))): public(seed(h)) for h in holders}, k)


A, B, PANIC = keys(0, 1, 2, k=2), keys(3, 4, 5, k=2), keys(9, k=1)


def pin() -> canary.Pin:
    return canary.Pin("example.org", A, PANIC)


def statement(version: int, *, signers: list[int], current: canary.KeySet = A,
              new: canary.KeySet = A, codes: list[str] | None = None, release: int = NOW,
              expiry: int = NOW + 30 * DAY, role: str = "canary") -> bytes:
    payload = canary.statement(
        domain="example.org", canary=current, new_canary=new, panic=PANIC, new_panic=PANIC,
        version=version, release=release, expiry=expiry, freshness="block 0000000000000000000a",
        codes=list(canary.CODES) if codes is None else codes)
    return env.Envelope(role, payload, ()).signed_by([seed(h) for h in signers]).encode()


def test_two_of_three_sign_an_all_clear_and_the_pin_moves_on() -> None:
    verdict = canary.verify(pin(), statement(1, signers=[0, 2]), NOW)
    assert verdict.status == "ok" and verdict.reasons == ()
    assert verdict.pin.version == 1 and len(verdict.pin.history) == 1
    refused = pytest.raises(RefusedError, match="1 valid canary signature")
    with refused:
        canary.verify(pin(), statement(1, signers=[0]), NOW)


def test_keys_named_in_the_statement_are_never_trusted() -> None:
    forged = statement(1, signers=[6, 7], current=keys(6, 7, k=2), new=keys(6, 7, k=2))
    with pytest.raises(RefusedError, match="0 valid canary signature"):
        canary.verify(pin(), forged, NOW)


def test_fields_spliced_from_two_signed_statements_are_refused() -> None:
    """The standard's per-field signatures let an old all-clear code list ride on new dates;
    one signature over the whole payload does not."""
    old = json.loads(statement(1, signers=[0, 1], expiry=NOW + 30 * DAY))
    new = json.loads(statement(2, signers=[0, 1], codes=["CEASE", "GAG"],
                               release=NOW + 60 * DAY, expiry=NOW + 90 * DAY))
    spliced: dict[str, Any] = json.loads(base64.b64decode(new["payload"]))
    spliced["CODES"] = json.loads(base64.b64decode(old["payload"]))["CODES"]
    new["payload"] = base64.b64encode(env.canonical(spliced)).decode()
    with pytest.raises(RefusedError, match="0 valid canary signature"):
        canary.verify(pin(), json.dumps(new).encode(), NOW + 61 * DAY)


def test_key_rotation_follows_newpubkey_and_a_skipped_link_is_refused() -> None:
    first = canary.verify(pin(), statement(1, signers=[0, 1], new=B), NOW)
    assert first.pin.canary == B
    second = canary.verify(first.pin, statement(2, signers=[3, 5], current=B, new=B), NOW)
    assert second.status == "ok" and second.pin.history[-1].endswith("/2")
    c = keys(6, 7, 8, k=2)  # statement 2 would have named B; C skips it
    with pytest.raises(RefusedError, match="0 valid canary signature"):
        canary.verify(first.pin, statement(2, signers=[6, 7], current=c, new=c), NOW)
    with pytest.raises(RefusedError, match="a key in the chain was skipped"):
        canary.verify(first.pin, statement(2, signers=[3, 4], current=c, new=c), NOW)
    with pytest.raises(RefusedError, match="1 valid canary signature"):  # the old keys: gone
        canary.verify(first.pin, statement(2, signers=[0, 1, 3], current=B), NOW)


def test_expiry_and_missing_codes_fail_the_canary_with_the_reason() -> None:
    expired = canary.verify(pin(), statement(1, signers=[0, 1], expiry=NOW - 1), NOW)
    assert expired.status == "failed" and expired.reasons[0].startswith("expired")
    gagged = canary.verify(pin(), statement(1, signers=[0, 1], codes=["CEASE", "WAR"]), NOW)
    assert gagged.status == "failed"
    assert gagged.reasons == ("codes no longer affirmed: DURESS GAG RAID SEIZE SUBP TRAP "
                              "XCRED XOPERS",)


def test_a_panic_signature_fails_the_canary_and_only_the_pinned_panic_key_counts() -> None:
    panic = canary.verify(pin(), statement(1, signers=[9], role="panic"), NOW)
    assert panic.status == "panic"
    with pytest.raises(RefusedError, match="0 valid panic signature"):
        canary.verify(pin(), statement(1, signers=[0, 1], role="panic"), NOW)


def test_replays_and_malformed_statements_are_refused() -> None:
    first = canary.verify(pin(), statement(3, signers=[0, 1]), NOW)
    with pytest.raises(RefusedError, match="not newer than 3"):
        canary.verify(first.pin, statement(3, signers=[0, 1]), NOW)
    with pytest.raises(RefusedError, match="alphabetical"):
        canary.parse(canary.statement(
            domain="example.org", canary=A, new_canary=A, panic=PANIC, new_panic=PANIC,
            version=1, release=NOW, expiry=NOW, freshness="x", codes=["WAR"]).replace(
                b'"CODES":["WAR"]', b'"CODES":["WAR","GAG"]'))


def legacy(signers: list[int], *, codes: list[str] | None = None,
           expiry: str = "2027-02-01T00:00:00Z") -> dict[str, Any]:
    """A statement in the standard's published layout, each field signed on its own over its
    string form (lists joined by spaces), as the standard's reference client does."""
    from nacl.signing import SigningKey
    claim: dict[str, Any] = {
        "domain": "example.org", "pubkeys": [base64.b64encode(public(seed(h))).decode()
                                             for h in signers],
        "panickey": base64.b64encode(public(seed(9))).decode(), "version": "0.1",
        "release": "2027-01-01T00:00:00Z", "expiry": expiry, "freshness": "00000000000abc",
        "codes": [c.lower() for c in (canary.CODES if codes is None else codes)]}
    sigs = {}
    for h in signers:
        key = SigningKey(seed(h))
        sigs[base64.b64encode(public(seed(h))).decode()] = {
            f: base64.b64encode(key.sign(as_text(claim[f]).encode()).signature).decode()
            for f in canary.LEGACY_FIELDS}
    return {"canary": claim, "signatures": sigs}


def as_text(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


LEGACY_NOW = 1_798_800_000  # 2027-01-01T12:00Z


def test_the_standards_layout_is_read_but_never_fully_valid() -> None:
    good = json.dumps(legacy([0, 1])).encode()
    verdict = canary.verify_legacy(pin(), good, LEGACY_NOW)
    assert verdict.status == "legacy" and "never fully valid" in verdict.reasons[0]
    with pytest.raises(RefusedError, match="1 pinned canary key"):
        canary.verify_legacy(pin(), json.dumps(legacy([0, 6])).encode(), LEGACY_NOW)
    assert canary.verify_legacy(pin(), json.dumps(legacy([9])).encode(),
                                LEGACY_NOW).status == "panic"


def test_a_splice_of_two_legacy_statements_still_verifies_which_is_why_it_is_legacy() -> None:
    """The standard's weakness, shown: an old all-clear code list with its signatures moved
    into a newer statement that withdrew codes verifies field by field."""
    old = legacy([0, 1])
    new = legacy([0, 1], codes=["CEASE"], expiry="2027-03-01T00:00:00Z")
    assert canary.verify_legacy(pin(), json.dumps(new).encode(), LEGACY_NOW).status == "failed"
    new["canary"]["codes"] = old["canary"]["codes"]
    for signer, fields in new["signatures"].items():
        fields["codes"] = old["signatures"][signer]["codes"]
    spliced = canary.verify_legacy(pin(), json.dumps(new).encode(), LEGACY_NOW)
    assert spliced.status == "legacy", "only the warning tells the watcher"
    assert "can be combined" in spliced.reasons[0]
