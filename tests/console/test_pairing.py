"""Pairing at the console: pending requests with a fingerprint, approval, rejection, revocation,
replays, impostors and floods (docs/pairing.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from console import pairing
from console.core import Kind
from console.pairing import PairingLimits
from console.store import Store
from firmware.protocol.catalogue import EventCode
from firmware.protocol.frame import Header, register_body_size, register_header, seal_register
from firmware.protocol.frame import open_reply as open_reply_frame
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import (
    REG_APPROVED,
    REG_PENDING,
    REG_REJECTED,
    Heartbeat,
    Register,
    RegisterAck,
    decode_reply,
    encode_register,
)
from firmware.protocol.names import encode_frame
from firmware.protocol.pairing import fingerprint
from firmware.protocol.replay import make_counter
from tests.console.conftest import ZONE, Rig
from tests.console.device import TXT, FakeDevice


@dataclass
class Stranger:
    """A device that registers: its own key, its own counter stream."""

    console_public: PeerPublicKey
    key: OwnPrivateKey = field(default_factory=OwnPrivateKey.generate)
    seq: int = 0
    session: int = 0x7777

    def frame(self, name: str = "nas", counter: int | None = None,
              signing_key: OwnPrivateKey | None = None) -> tuple[Header, bytes]:
        self.seq += 1
        header = register_header(self.key.public().raw, self.session,
                                 make_counter(1, self.seq) if counter is None else counter)
        shared = (signing_key or self.key).shared_key(self.console_public)
        body = encode_register(Register(name), register_body_size(ZONE))
        return header, seal_register(shared, self.key.public().raw, header, body)

    def ask(self, rig: Rig, **kw: object) -> RegisterAck | None:
        header, frame = self.frame(**kw)  # type: ignore[arg-type]
        labels = [x.encode() for x in [*encode_frame(frame), *ZONE.split(".")]]
        answer = rig.console.handle(labels, TXT)
        if answer.kind is not Kind.TXT:
            return None
        reply = decode_reply(open_reply_frame(self.key.shared_key(self.console_public), header,
                                              answer.txt))
        assert isinstance(reply, RegisterAck)
        return reply

    def as_device(self) -> FakeDevice:
        return FakeDevice(ZONE, self.console_public, key=self.key, seq=self.seq + 10)


def flush(rig: Rig) -> None:
    rig.console.flush()


def operator(rig: Rig) -> Store:
    """The CLI's own connection to the database, as `console approve` has it."""
    return Store(rig.path)


def test_a_request_is_pending_with_the_fingerprint_both_sides_compute(rig: Rig) -> None:
    dev = Stranger(rig.key.public())
    ack = dev.ask(rig, name="nas-1")
    assert ack is not None and ack.status == REG_PENDING
    code = fingerprint(rig.key.public().raw, dev.key.public().raw, ack.nonce)
    flush(rig)
    (row,) = rig.store.pending_rows()
    assert row.code == code and row.name == "nas-1" and row.state == "pending"
    again = dev.ask(rig)
    assert again is not None and again.nonce == ack.nonce, "the code stays while pending"


def test_nothing_from_a_pending_device_is_stored_until_approved(rig: Rig) -> None:
    dev = Stranger(rig.key.public())
    ack = dev.ask(rig)
    assert ack is not None
    device = dev.as_device()
    assert rig.console.handle([x.encode() for x in device.heartbeat()[1]], TXT).kind is \
        Kind.NODATA
    assert rig.console.stats["unknown_device"] == 1
    code = rig.store.pending_rows()[0].code
    name = pairing.approve(operator(rig), code, "nas-1", time.time())
    assert name == "nas-1" and rig.store.pending_rows() == []
    flush(rig)  # the serving console takes the decision
    approved = dev.ask(rig)
    assert approved is not None and approved.status == REG_APPROVED
    assert rig.console.handle([x.encode() for x in device.heartbeat()[1]], TXT).kind is Kind.TXT
    events = [r.record() for r in rig.store.events()]
    assert [(e["logtype"], e["node_id"]) for e in events] == [(int(EventCode.DEVICE_PAIRED),
                                                               "nas-1")]
    assert events[0]["logdata"] == {"FINGERPRINT": code}


def test_a_rejected_device_is_told_so(rig: Rig) -> None:
    dev = Stranger(rig.key.public())
    assert dev.ask(rig) is not None
    pairing.reject(operator(rig), rig.store.pending_rows()[0].code)
    flush(rig)
    ack = dev.ask(rig)
    assert ack is not None and ack.status == REG_REJECTED
    with pytest.raises(Exception, match="rejected"):
        pairing.approve(operator(rig), rig.store.pending_rows()[0].code, None, time.time())


def test_a_revoked_device_is_dropped_counted_and_told(rig: Rig) -> None:
    device = rig.device  # enrolled as pi-1
    assert rig.console.handle([x.encode() for x in device.heartbeat()[1]], TXT).kind is Kind.TXT
    pairing.revoke(operator(rig), "pi-1", time.time())
    flush(rig)
    assert rig.console.handle([x.encode() for x in device.heartbeat()[1]], TXT).kind is \
        Kind.NODATA
    assert rig.console.stats["revoked"] == 1
    again = Stranger(rig.key.public(), key=device.key, seq=device.seq + 5)
    ack = again.ask(rig)
    assert ack is not None and ack.status == REG_REJECTED
    logtypes = [r.logtype for r in rig.store.events()]
    assert logtypes.count(int(EventCode.DEVICE_REVOKED)) == 1
    rig.restart()  # still revoked after a restart
    assert rig.console.handle([x.encode() for x in device.heartbeat()[1]], TXT).kind is \
        Kind.NODATA


def test_replayed_and_impostor_registrations_are_refused(rig: Rig) -> None:
    dev = Stranger(rig.key.public())
    _, frame = dev.frame()
    labels = [x.encode() for x in [*encode_frame(frame), *ZONE.split(".")]]
    assert rig.console.handle(labels, TXT).kind is Kind.TXT
    rig.console._cache.clear()  # past the answer cache: a replay later on
    assert rig.console.handle(labels, TXT).kind is Kind.NODATA
    assert rig.console.stats["registration_replayed"] == 1
    # under another device's public key, without its private key: does not authenticate
    impostor = Stranger(rig.key.public(), key=dev.key)
    assert impostor.ask(rig, signing_key=OwnPrivateKey.generate()) is None
    assert rig.console.stats["auth_failed"] == 1
    assert len(rig.store.pending_rows()) == 1


def test_a_flood_of_strangers_is_bounded_and_the_real_device_keeps_its_place(rig: Rig) -> None:
    clock = [1000.0]
    rig.console.clock = lambda: clock[0]
    # room for more strangers than the bucket admits between two of the device's requests
    limits = PairingLimits(max_pending=16, new_per_second=2.0, new_burst=4)
    rig.console.registrations = pairing.Registrations(rig.key, rig.store, limits)
    real = Stranger(rig.key.public())
    assert real.ask(rig) is not None
    answered = throttled = 0
    for i in range(200):  # 200 strangers in 20 s, the real device asking every 5 s
        clock[0] += 0.1
        if i % 50 == 0:
            ack = real.ask(rig)
            assert ack is not None and ack.status == REG_PENDING, "the real device keeps its place"
        answered += Stranger(rig.key.public()).ask(rig) is not None
    throttled = rig.console.stats["registration_throttled"]
    assert answered <= 4 + 2 * 21 and throttled >= 200 - answered
    rig.console.flush()
    rows = rig.store.pending_rows()
    assert len(rows) <= 16 and real.key.public().raw in {r.public_key for r in rows}


def test_rejected_requests_cannot_squat_the_table(rig: Rig) -> None:
    clock = [1000.0]
    rig.console.clock = lambda: clock[0]
    limits = PairingLimits(max_pending=4, new_per_second=100, new_burst=100, pending_idle=60)
    rig.console.registrations = pairing.Registrations(rig.key, rig.store, limits)
    squatters = [Stranger(rig.key.public()) for _ in range(4)]
    for s in squatters:
        assert s.ask(rig) is not None
    for row in rig.store.pending_rows():
        pairing.reject(operator(rig), row.code)
    flush(rig)
    newcomer = Stranger(rig.key.public())
    ack = newcomer.ask(rig)
    assert ack is not None and ack.status == REG_PENDING, "a table of rejections takes no one"
    clock[0] += 61
    for s in squatters:  # told, and never pending again
        clock[0] += 1
        again = s.ask(rig)
        assert again is not None and again.status == REG_REJECTED
    flush(rig)
    states = {r.device_id: r.state for r in rig.store.pending_rows()}
    assert all(states[s.key.public().device_id()] == "rejected" for s in squatters)


def test_a_code_survives_eviction_and_restart(rig: Rig) -> None:
    limits = PairingLimits(max_pending=2, new_per_second=100, new_burst=100)
    rig.console.registrations = pairing.Registrations(rig.key, rig.store, limits)
    dev = Stranger(rig.key.public())
    first = dev.ask(rig)
    assert first is not None
    for _ in range(3):  # pushes the device out
        assert Stranger(rig.key.public()).ask(rig) is not None
    assert dev.key.public().device_id() not in {r.device_id for r in rig.store.pending_rows()}
    again = dev.ask(rig)
    assert again is not None and again.nonce == first.nonce, "same key, same code"
    rig.restart()
    after = dev.ask(rig)
    assert after is not None and after.nonce == first.nonce


def test_a_registration_frame_is_answered_once_whatever_happens_after(rig: Rig) -> None:
    """Replays after approval or revocation get nothing: never a second, different reply under
    the same (key, reply nonce)."""
    dev = Stranger(rig.key.public())
    _, frame = dev.frame()
    labels = [x.encode() for x in [*encode_frame(frame), *ZONE.split(".")]]
    assert rig.console.handle(labels, TXT).kind is Kind.TXT
    rig.console.flush()
    pairing.approve(operator(rig), rig.store.pending_rows()[0].code, "nas-1", time.time())
    rig.console.flush()
    rig.console._cache.clear()
    assert rig.console.handle(labels, TXT).kind is Kind.NODATA
    approved = dev.ask(rig)
    assert approved is not None and approved.status == REG_APPROVED
    pairing.revoke(operator(rig), "nas-1", time.time())
    rig.console.flush()
    rig.console._cache.clear()
    assert rig.console.handle(labels, TXT).kind is Kind.NODATA
    rejected = dev.ask(rig)
    assert rejected is not None and rejected.status == REG_REJECTED
    assert rig.console.stats["registration_replayed"] == 2


def test_an_enrolled_device_that_registers_is_approved_at_once(rig: Rig) -> None:
    dev = Stranger(rig.key.public(), key=rig.device.key)
    ack = dev.ask(rig)
    assert ack is not None and ack.status == REG_APPROVED


def test_heartbeat_bodies_in_a_registration_frame_are_refused(rig: Rig) -> None:
    from firmware.protocol.messages import encode_body
    dev = Stranger(rig.key.public())
    header = register_header(dev.key.public().raw, 1, make_counter(1, 1))
    body = encode_body(Heartbeat(1, 60), register_body_size(ZONE))
    frame = seal_register(dev.key.shared_key(rig.key.public()), dev.key.public().raw, header,
                          body)
    labels = [x.encode() for x in [*encode_frame(frame), *ZONE.split(".")]]
    assert rig.console.handle(labels, TXT).kind is Kind.NODATA
    assert rig.store.pending_rows() == []
