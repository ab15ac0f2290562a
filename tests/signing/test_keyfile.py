"""Passphrase-protected holder keys: they open with the passphrase and nothing else, a damaged
or truncated file says so, and a crafted file cannot make the signer allocate without bound."""

from __future__ import annotations

import base64
import json
import time

import pytest
from nacl import pwhash

from firmware.shared.errors import AuthenticationError, DecodeError
from signing import keyfile

FAST = keyfile.KdfParams(pwhash.argon2id.OPSLIMIT_MIN, 8 << 20)  # tests only: 8 MiB
SEED = bytes(range(32))
PASS = "correct horse battery staple"


def sealed() -> bytes:
    return keyfile.seal(SEED, "release", "alice", PASS, FAST)


def test_the_passphrase_opens_the_key_and_the_file_says_whose_it_is() -> None:
    data = sealed()
    key, seed = keyfile.unseal(data, PASS)
    assert seed == SEED and (key.role, key.holder) == ("release", "alice")
    assert keyfile.describe(data) == key
    assert SEED.hex() not in data.decode() and "seed" not in json.loads(data)


def test_a_wrong_passphrase_and_an_altered_file_get_the_same_answer_after_the_same_work(
        ) -> None:
    data = sealed()
    doc = json.loads(data)
    sealed_bytes = bytearray(base64.b64decode(doc["sealed"]))
    sealed_bytes[-1] ^= 1
    doc["sealed"] = keyfile._b64(bytes(sealed_bytes))
    times = []
    for attempt, passphrase in ((data, "correct horse battery stapl"),
                                (json.dumps(doc).encode(), PASS)):
        start = time.perf_counter()
        with pytest.raises(AuthenticationError, match="wrong passphrase, or the key file"):
            keyfile.unseal(attempt, passphrase)
        times.append(time.perf_counter() - start)
    assert max(times) < 5 * min(times), "both run the whole derivation"


def test_relabelled_truncated_and_crafted_files_are_refused() -> None:
    doc = json.loads(sealed())
    doc["role"] = "root"  # a release key passed off as a root key
    with pytest.raises(AuthenticationError, match="labels do not match"):
        keyfile.unseal(json.dumps(doc).encode(), PASS)
    with pytest.raises(DecodeError, match="truncated or damaged"):
        keyfile.unseal(sealed()[:200], PASS)
    greedy = json.loads(sealed())
    greedy["kdf"]["memlimit"] = 1 << 40  # a crafted file asking for a terabyte
    with pytest.raises(DecodeError, match="outside what a signer accepts"):
        keyfile.unseal(json.dumps(greedy).encode(), PASS)
    with pytest.raises(ValueError, match="at least 12"):
        keyfile.seal(SEED, "release", "alice", "short", FAST)

