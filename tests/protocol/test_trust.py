"""Attack stories against the trust rules (docs/signing.md; the threat checklist of
../shared/design/updates.md): an in-memory repository of keys, roots and releases, and for each
attack the refusal, beside the acceptance of the valid case."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from nacl.signing import SigningKey

from firmware.protocol import envelope as env
from firmware.protocol import trust
from firmware.shared.errors import RefusedError

NOW = 1_800_000_000
YEAR = 365 * 86400


def seed(n: int) -> bytes:
    return hashlib.sha256(b"holder %d" % n).digest()


def public(s: bytes) -> bytes:
    return bytes(SigningKey(s).verify_key)


@dataclass
class Repo:
    """Key holders 0..9; roles map to the holders whose keys they list."""

    roles: dict[str, tuple[list[int], int]] = field(default_factory=lambda: {
        "root": ([0, 1, 2], 2), "release": ([3, 4, 5, 6, 7], 3), "canary": ([8], 1),
        "panic": ([9], 1)})

    def root_payload(self, version: int, expires: int = NOW + YEAR) -> bytes:
        holders = sorted({h for ids, _ in self.roles.values() for h in ids})
        keys = {env.key_id(public(seed(h))): base64.b64encode(public(seed(h))).decode()
                for h in holders}
        roles = {name: {"keyids": [env.key_id(public(seed(h))) for h in ids], "threshold": k}
                 for name, (ids, k) in self.roles.items()}
        return env.canonical({"type": "root", "version": version, "expires": expires,
                              "keys": keys, "roles": roles})


def signed(role: str, payload: bytes, holders: list[int]) -> bytes:
    return env.Envelope(role, payload, ()).signed_by([seed(h) for h in holders]).encode()


def release_payload(version: int, *, boards: list[str] | None = None,
                    expires: int = NOW + 30 * 86400, root_fs: bytes = b"root slot") -> bytes:
    comps = {"root": {"length": len(root_fs),
                      trust.HASH: hashlib.blake2b(root_fs, digest_size=32).hexdigest()},
             "boot/vmlinuz": {"length": 6,
                              trust.HASH: hashlib.blake2b(b"kernel", digest_size=32).hexdigest()}}
    return env.canonical({"type": "release", "version": version, "expires": expires,
                          "boards": boards or ["rpi4"], "components": comps})


@pytest.fixture
def root() -> trust.Root:
    return trust.first_root(signed("root", Repo().root_payload(1), [0, 1]))


def verify(root: trust.Root, data: bytes, floor: trust.Floor | None = None,
           board: str = "rpi4", now: int = NOW) -> trust.Release:
    return trust.verify_release(root, data, board=board, now=now, floor=floor or trust.Floor())


def refused(reason: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(RefusedError, match=reason):
        fn(*args, **kwargs)


# --- arbitrary software --------------------------------------------------------------------------

def test_three_of_five_release_keys_make_a_release(root: trust.Root) -> None:
    release = verify(root, signed("release", release_payload(7), [3, 5, 7]))
    assert release.version == 7 and set(release.components) == {"root", "boot/vmlinuz"}


def test_unknown_keys_flipped_bytes_and_missing_signatures_are_refused(root: trust.Root) -> None:
    refused("0 valid release", verify, root, signed("release", release_payload(7), [0, 1, 2]))
    good = json.loads(signed("release", release_payload(7), [3, 4, 5]))
    payload = bytearray(base64.b64decode(good["payload"]))
    payload[payload.index(b"rpi4")] ^= 0x01  # "spi4": one flipped bit
    good["payload"] = base64.b64encode(bytes(payload)).decode()
    refused("0 valid release", verify, root, json.dumps(good).encode())
    refused("2 valid release signature", verify, root,
            signed("release", release_payload(7), [3, 4]))


def test_no_trusted_key_refuses_everything() -> None:
    e = env.parse(signed("release", release_payload(1), [3, 4, 5]))
    keys = {env.key_id(public(seed(3))): public(seed(3))}
    refused("no trusted key", env.require, e, "release", keys, [], threshold=0, what="release")
    refused("no trusted key", env.require, e, "release", keys, list(keys), threshold=0,
            what="release")


# --- threshold abuse -----------------------------------------------------------------------------

def test_one_signature_listed_three_times_counts_once(root: trust.Root) -> None:
    one = json.loads(signed("release", release_payload(7), [3]))
    one["signatures"] *= 3
    refused("1 valid release signature", verify, root, json.dumps(one).encode())


def test_a_key_cannot_be_listed_under_two_ids() -> None:
    doc = json.loads(Repo().root_payload(1))
    kid = next(iter(doc["keys"]))
    doc["keys"]["0" * 32] = doc["keys"][kid]  # the same key under a second id
    refused("not an Ed25519 key under its own id", trust.parse_root, env.canonical(doc))


def test_a_signature_for_another_role_verifies_nothing(root: trust.Root) -> None:
    """Domain separation: release keys that also hold the canary role cannot make one
    signature serve both (the envelope says the role; the prefix differs)."""
    canary = json.loads(signed("canary", release_payload(7), [3, 4, 5]))
    canary["role"] = "release"
    refused("0 valid release", verify, root, json.dumps(canary).encode())


# --- rollback, fast-forward, freeze --------------------------------------------------------------

def test_an_older_release_is_refused_and_the_same_one_reinstalls(root: trust.Root) -> None:
    installed = verify(root, signed("release", release_payload(7), [3, 4, 5]))
    floor = trust.floor_after(root, installed, NOW)
    refused("older than the installed 7", verify, root,
            signed("release", release_payload(6), [3, 4, 5]), floor)
    assert verify(root, signed("release", release_payload(7), [3, 4, 5]), floor).version == 7


def test_an_absurd_version_is_recovered_from_only_by_rotating_the_release_keys(
        root: trust.Root) -> None:
    absurd = verify(root, signed("release", release_payload(2**52), [3, 4, 5]))
    floor = trust.floor_after(root, absurd, NOW)
    refused("rollback", verify, root, signed("release", release_payload(8), [3, 4, 5]), floor)
    repo = Repo()
    repo.roles["release"] = ([4, 5, 6, 7], 3)  # holder 3's key retired
    root2 = trust.newest_root(root, [signed("root", repo.root_payload(2), [0, 1])], NOW)
    assert verify(root2, signed("release", release_payload(8), [4, 5, 6]), floor).version == 8


def test_expired_releases_and_roots_are_refused_even_with_the_clock_at_1970(
        root: trust.Root) -> None:
    refused("expired", verify, root,
            signed("release", release_payload(7, expires=NOW - 1), [3, 4, 5]))
    floor = trust.Floor(time=NOW)  # stored at the last update
    now = trust.fixed_now(0.0, floor)  # no real-time clock: the Pi woke in 1970
    assert now == NOW
    refused("expired", verify, root,
            signed("release", release_payload(7, expires=NOW - 1), [3, 4, 5]), floor, now=now)
    refused("trust root 1 expired", verify, root,
            signed("release", release_payload(7), [3, 4, 5]), now=NOW + 2 * YEAR)


# --- mix-and-match, wrong hardware, endless data -------------------------------------------------

def test_components_must_be_exactly_the_signed_ones(root: trust.Root) -> None:
    release = verify(root, signed("release", release_payload(7, root_fs=b"root slot"), [3, 4, 5]))
    good = trust.ComponentCheck("root", release.components["root"])
    good.update(b"root ")
    good.update(b"slot")
    good.finish()
    other = verify(root, signed("release", release_payload(8, root_fs=b"other slot"), [3, 4, 5]))
    mixed = trust.ComponentCheck("root", release.components["root"])  # release 7's manifest
    mixed.update(b"root slo7")  # same length, release 8's kind of content
    refused("differs from the signed release", mixed.finish)
    assert other.components["boot/vmlinuz"] == release.components["boot/vmlinuz"]
    endless = trust.ComponentCheck("root", release.components["root"])
    endless.update(b"root slot")
    refused("more than the 9 bytes", endless.update, b"x")
    short = trust.ComponentCheck("root", release.components["root"])
    short.update(b"root")
    refused("4 bytes of 9", short.finish)


def test_a_field_spliced_between_two_signed_manifests_is_refused(root: trust.Root) -> None:
    old = json.loads(signed("release", release_payload(7, boards=["rpi4", "qemu-arm64"]),
                            [3, 4, 5]))
    new = json.loads(signed("release", release_payload(9), [3, 4, 5]))
    spliced = json.loads(base64.b64decode(new["payload"]))
    spliced["boards"] = ["rpi4", "qemu-arm64"]  # the old manifest's field in the new one
    new["payload"] = base64.b64encode(env.canonical(spliced)).decode()
    refused("0 valid release", verify, root, json.dumps(new).encode(), board="qemu-arm64")
    assert verify(root, json.dumps(old).encode(), board="qemu-arm64").version == 7


def test_a_release_for_another_board_is_refused(root: trust.Root) -> None:
    refused("is for rpi4, not qemu-arm64", verify, root,
            signed("release", release_payload(7), [3, 4, 5]), board="qemu-arm64")


def test_oversized_and_malformed_documents_are_refused_before_parsing(root: trust.Root) -> None:
    refused("more than 65536", env.parse, b"{" * (env.MAX_ENVELOPE + 1))
    refused("not JSON", env.parse, b"\xff\xfe")
    refused("a key appears twice", env.parse,
            b'{"payload":"","role":"release","role":"root","signatures":[]}')
    refused("not a coalmine signed document", env.parse, b"[]")
    payload = release_payload(7).replace(b'"version":7', b'"version":7,"version":8')
    refused("a key appears twice", verify, root, signed("release", payload, [3, 4, 5]))
    for bad in (b'"version":7.0', b'"version":-7', b'"version":true'):
        refused("not a whole number", verify, root,
                signed("release", release_payload(7).replace(b'"version":7', bad), [3, 4, 5]))


# --- root rotation -------------------------------------------------------------------------------

def test_root_rotation_needs_both_thresholds_and_the_next_version(root: trust.Root) -> None:
    repo = Repo()
    repo.roles["root"] = ([1, 2, 6], 2)  # holder 0 leaves, holder 6 joins the root keys
    payload = repo.root_payload(2)
    assert trust.next_root(root, signed("root", payload, [1, 2])).version == 2
    refused("under its own keys", trust.next_root, root, signed("root", payload, [0, 1]))
    refused("under root 1", trust.next_root, root, signed("root", payload, [2, 6]))
    refused("does not follow 1", trust.next_root, root,
            signed("root", repo.root_payload(3), [1, 2]))
    refused("does not follow 1", trust.next_root, root,
            signed("root", Repo().root_payload(1), [0, 1]))


def test_an_expired_root_still_leads_to_a_newer_one(root: trust.Root) -> None:
    old = trust.first_root(signed("root", Repo().root_payload(1, expires=NOW - YEAR), [0, 1]))
    newer = signed("root", Repo().root_payload(2), [0, 1])
    assert trust.newest_root(old, [newer], NOW).version == 2
    refused("trust root 1 expired", trust.newest_root, old, [], NOW)


def test_a_first_root_must_carry_its_own_threshold() -> None:
    refused("1 valid root signature", trust.first_root,
            signed("root", Repo().root_payload(1), [0]))
    repo = Repo()
    repo.roles["release"] = ([3, 4], 3)
    refused("threshold 3 of 2 keys", trust.first_root, signed("root", repo.root_payload(1),
                                                               [0, 1]))


def test_golden_vector() -> None:
    """docs/signing.md's example, from a key whose seed is bytes 0..31: the prefix, the id and
    the signature are pinned so an accidental format change fails loudly."""
    payload = b'{"type":"release"}'
    assert env.pae("release", payload).hex() == (
        "636f616c6d696e652f76312f72656c65617365000000000000000012" + payload.hex())
    one = env.Envelope("release", payload, ()).signed_by([bytes(range(32))])
    assert one.encode() == (
        b'{"payload":"eyJ0eXBlIjoicmVsZWFzZSJ9","role":"release","signatures":[{"keyid":'
        b'"2e26f6a63fc40c77e9ed54550d0cbe11","sig":"AElgfSIs+zebc3yASszUZpJzgTYzcwc/6U5jNyJiI+WK'
        b'3ioAOHp3HgLseUQv9HPZU+4whTK4H86ffOXeyBBKAQ=="}]}\n')
