"""Signed settings: accepted only from the pinned key, for this device, newer, and valid."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from firmware.protocol import settings as s
from firmware.shared.errors import AuthenticationError, DecodeError

SEED = bytes(range(32))
KEY = s.verify_key_of(SEED)
DEV = bytes.fromhex("8e7ffcd18b764d6c")
GOOD = {"services.ssh.port": 2222, "device.hostname": "files-2"}


def wire(values: dict[str, object] = GOOD, version: int = 2, device: bytes = DEV,
         seed: bytes = SEED) -> bytes:
    return s.sign(seed, s.Settings(device, version, values))


def test_signed_settings_round_trip() -> None:
    got = s.verify(KEY, wire(), DEV, current_version=1)
    assert got.version == 2 and dict(got.values) == GOOD


@pytest.mark.parametrize(("story", "data", "error"), [
    ("signed by another key (a stranger, or another console)",
     wire(seed=bytes(32)), AuthenticationError),
    ("settings the console made for another device", wire(device=bytes(8)), DecodeError),
    ("an older version replayed", wire(version=1), DecodeError),
    ("empty", b"", DecodeError),
    ("endless data", b"\0" * (64 + s.MAX_BYTES + 1), DecodeError),
])
def test_refusals(story: str, data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        s.verify(KEY, data, DEV, current_version=1)


@given(st.integers(0, 200), st.integers(0, 7))
def test_any_flipped_bit_is_refused(pos: int, bit: int) -> None:
    data = bytearray(wire())
    data[pos % len(data)] ^= 1 << bit
    with pytest.raises((AuthenticationError, DecodeError)):
        s.verify(KEY, bytes(data), DEV, current_version=1)


def test_the_signature_covers_the_domain_prefix() -> None:
    """A signature the same key made over the bare body (some other protocol) does not count."""
    body = s.Settings(DEV, 2, GOOD).body()
    bare = bytes(SigningKey(SEED).sign(body).signature) + body
    with pytest.raises(AuthenticationError):
        s.verify(KEY, bare, DEV, current_version=1)


def test_every_problem_at_once() -> None:
    problems = s.validate({"services.ssh.port": 70000, "device.hostname": "Bad_Name",
                           "network.mode": "static", "network.address": "10.0.0.5/24"})
    joined = "\n".join(problems)
    assert "services.ssh.port" in joined and "device.hostname" in joined
    assert "network.gateway: needed" in joined and "network.dns: needed" in joined
    assert s.validate({"shell": "/bin/sh"})[0].startswith("shell: not a setting")
    assert s.validate({"network.mode": "static", "network.address": "10.0.0.5/24",
                       "network.gateway": "192.0.2.1", "network.dns": ["10.0.0.1"]}) == [
        "network.gateway: 192.0.2.1 is outside 10.0.0.0/24"]


def test_signed_but_invalid_settings_are_refused() -> None:
    """Even the console's own key cannot make the device take a setting that does not exist."""
    with pytest.raises(DecodeError, match="not a setting"):
        s.verify(KEY, wire({"services.ssh.port": 22, "shell": "yes"}), DEV, current_version=1)


@pytest.mark.parametrize("bad", [
    {"network.dns": [167772161]}, {"network.dns": [True]},
    {"network.dns": ["10.0.2.3\nDNS=1.1.1.1"]}, {"network.address": "10.0.2.15/255.255.255.0"},
    {"network.address": "10.0.2.15/0.0.0.255"}, {"network.address": "10.0.2.15/24\n[Match]"},
    {"network.gateway": "10.0.2.02"}, {"network.dns": ["010.0.2.3"]},
])
def test_network_values_that_would_not_be_written_verbatim_are_refused(bad: dict[str, object]
                                                                       ) -> None:
    """What the applier writes into networkd's files is exactly what was signed: anything but
    the canonical dotted forms (integers, masks, newlines, leading zeros) is refused."""
    base = {"network.mode": "static", "network.address": "10.0.2.15/24",
            "network.gateway": "10.0.2.2", "network.dns": ["10.0.2.3"]}
    assert not s.validate(base)
    assert s.validate({**base, **bad}), bad
