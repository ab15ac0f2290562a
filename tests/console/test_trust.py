"""The console never goes silent on an authentic message, and says when a device stops being
trustworthy: undecodable messages, health, silence, clones, restored databases, bad rows."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path
from typing import Any

from console.core import Console, Kind
from console.store import Store
from firmware.protocol.catalogue import EventCode
from firmware.protocol.messages import Body, FragmentAck, Heartbeat, Reply, Stale
from tests.console.conftest import ZONE, Rig
from tests.console.device import TXT, FakeDevice


def b(labels: list[str]) -> list[bytes]:
    return [x.encode() for x in labels]


def ask(rig: Rig, dev: FakeDevice, body: Body, **frame: int) -> Reply | None:
    """One query and the server's commit; returns the opened reply (or None for NODATA)."""
    header, sealed = dev.frame(body, **frame)
    answer = rig.console.handle(b(dev.labels(sealed)), TXT)
    assert rig.console.commit()
    return None if answer.kind is not Kind.TXT else dev.open(header, answer.txt)


def raised(rig: Rig, code: EventCode) -> list[dict[str, Any]]:
    rig.console.commit()
    rows = [r.record(mask_secrets=False) for r in rig.store.events()]
    return [r for r in rows if r["logtype"] == int(code)]


def raw_message(compact: dict[str, object]) -> bytes:
    """An event message built by hand, past every check an honest device makes."""
    return b"\x01" + zlib.compress(json.dumps(compact).encode())


def send_message(rig: Rig, message: bytes, msg_id: int) -> FragmentAck:
    from firmware.protocol.fragment import split
    from firmware.protocol.frame import body_size
    acks = [ask(rig, rig.device, frag) for frag in split(message, msg_id, body_size(ZONE))]
    last = acks[-1]
    assert all(isinstance(a, FragmentAck) for a in acks) and isinstance(last, FragmentAck)
    return last


def test_an_authentic_event_no_datetime_holds_is_recorded_and_acknowledged(rig: Rig) -> None:
    ack = send_message(rig, raw_message({"c": 4002, "t": 2**62, "sp": 1, "dp": 22}), 5)
    assert ack.complete, "the device's queue moves on"
    (event,) = raised(rig, EventCode.MESSAGE_UNDECODABLE)
    assert event["node_id"] == "pi-1" and "t" in str(event["logdata"]["REASON"])
    assert rig.console.stats["authentic_undecodable"] == 1
    assert rig.console.stats["undecodable"] == 0, "junk from strangers is counted apart"
    assert send_message(rig, raw_message({"c": 4002, "t": 2**62}), 5).complete  # once only
    assert len(raised(rig, EventCode.MESSAGE_UNDECODABLE)) == 1


def test_hosts_must_be_addresses_and_strings_are_made_inert_again(rig: Rig) -> None:
    send_message(rig, raw_message({"c": 4002, "t": 1, "sh": "<img src=x>", "sp": 1, "dp": 2}), 6)
    assert raised(rig, EventCode.MESSAGE_UNDECODABLE)
    send_message(rig, raw_message({"c": 4002, "t": 1, "sh": "192.0.2.5", "sp": 1, "dp": 2,
                                   "d": {"USERNAME": "\x1b]0;pwned\x07\u202e"}}), 7)
    (event,) = raised(rig, EventCode.SSH_LOGIN_ATTEMPT)
    assert event["logdata"]["USERNAME"] == "\\x1b]0;pwned\\x07\\u202e"


def test_wrong_frame_size_is_undecodable(rig: Rig) -> None:
    from firmware.protocol.frame import Header, seal
    from firmware.protocol.messages import encode_body
    header = Header(rig.device.device_id, 1, rig.device.next_counter())
    short = seal(rig.device.shared, header, encode_body(Heartbeat(1, 60), 40))
    assert rig.console.handle(b(rig.device.labels(short)), TXT).kind is Kind.NODATA
    assert rig.console.stats["undecodable"] == 1 and rig.console.stats["accepted"] == 0


def test_unhealthy_stalled_offline_and_online(rig: Rig) -> None:
    now = [1_000_000.0]
    rig.console.clock = lambda: now[0]
    assert ask(rig, rig.device, Heartbeat(1, 60))
    assert not raised(rig, EventCode.DEVICE_UNHEALTHY)
    ask(rig, rig.device, Heartbeat(2, 60, rejected=3, dropped=1))
    (sick,) = raised(rig, EventCode.DEVICE_UNHEALTHY)
    assert sick["logdata"] == {"REASONS": "rejected +3; dropped +1", "REJECTED": 3, "DROPPED": 1}
    ask(rig, rig.device, Heartbeat(3, 60, rejected=3, dropped=1, flags=0))  # receiver died
    assert len(raised(rig, EventCode.DEVICE_UNHEALTHY)) == 1, "one report per episode"
    ask(rig, rig.device, Heartbeat(4, 60, queue_depth=40, oldest_age=900, rejected=3,
                                   dropped=1))
    (stalled,) = raised(rig, EventCode.DEVICE_STALLED)
    assert stalled["logdata"] == {"QUEUE": 40, "OLDEST_AGE": 900}
    rig.console.flush()
    assert rig.store.devices()[0].status == "stalled"
    now[0] += 3 * 60 + 31
    rig.console.flush()
    (offline,) = raised(rig, EventCode.DEVICE_OFFLINE)
    assert offline["logdata"]["INTERVAL"] == 60
    assert "offline" in rig.store.devices()[0].status
    rig.console.flush()
    assert len(raised(rig, EventCode.DEVICE_OFFLINE)) == 1
    ask(rig, rig.device, Heartbeat(5, 60, rejected=3, dropped=1))
    (online,) = raised(rig, EventCode.DEVICE_ONLINE)
    assert online["logdata"]["SILENT_FOR"] == 3 * 60 + 31
    rig.console.flush()
    assert rig.store.devices()[0].status == "ok"


def test_offline_is_judged_by_the_devices_own_interval(rig: Rig) -> None:
    now = [1_000_000.0]
    rig.console.clock = lambda: now[0]
    slow = rig.enroll("slow")
    ask(rig, rig.device, Heartbeat(1, 60))
    ask(rig, slow, Heartbeat(1, 3600))
    now[0] += 600
    rig.console.flush()
    assert [e["node_id"] for e in raised(rig, EventCode.DEVICE_OFFLINE)] == ["pi-1"]


def test_restored_device_gets_stale_then_continues_and_a_clone_is_raised(rig: Rig) -> None:
    for _ in range(5):
        ask(rig, rig.device, Heartbeat(1, 60))
    rig.device.session, rig.device.seq = 0xBEEF, 0  # restored: old counters, a new session
    reply = ask(rig, rig.device, Heartbeat(1, 60))
    assert isinstance(reply, Stale) and reply.highest == rig.console._devices[
        rig.device.device_id].window.highest
    (cloned,) = raised(rig, EventCode.DEVICE_CLONED)
    assert cloned["logdata"]["SESSION"] == "0000beef"
    rig.device.epoch, rig.device.seq = (reply.highest >> 24) + 1, 0
    assert ask(rig, rig.device, Heartbeat(2, 60)) is not None  # accepted again


def test_a_replayed_frame_is_not_a_clone(rig: Rig) -> None:
    _, old = rig.device.frame(Heartbeat(1, 60))
    rig.console.handle(b(rig.device.labels(old)), TXT)
    for _ in range(5):
        ask(rig, rig.device, Heartbeat(1, 60))
    rig.restart()  # the answer cache is gone; sessions and floors are not
    assert rig.console.handle(b(rig.device.labels(old)), TXT).kind is Kind.NODATA
    assert rig.console.stats["replayed"] == 1
    assert not raised(rig, EventCode.DEVICE_CLONED)


def test_a_restored_database_does_not_reopen_recorded_traffic(rig: Rig, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    rig.console = Console(ZONE, rig.key, rig.store, state_dir=state)
    early = [rig.device.frame(Heartbeat(1, 60))[1] for _ in range(3)]
    backup = sqlite3.connect(tmp_path / "backup.db")
    rig.console.flush()
    rig.store._db.backup(backup)  # last week's backup, taken before these frames were seen
    backup.close()
    for sealed in early:
        assert rig.console.handle(b(rig.device.labels(sealed)), TXT).kind is Kind.TXT
    rig.console.close()
    rig.store.close()
    (tmp_path / "console.db").unlink()
    (tmp_path / "backup.db").rename(tmp_path / "console.db")
    rig.store = Store(tmp_path / "console.db")
    rig.console = Console(ZONE, rig.key, rig.store, state_dir=state)
    assert rig.console.restored == ["pi-1"]
    for sealed in early:  # recorded frames replayed after the restore
        assert rig.console.handle(b(rig.device.labels(sealed)), TXT).kind is Kind.NODATA
    assert rig.console.stats["accepted"] == 0


def test_one_bad_device_row_never_stops_the_others(rig: Rig) -> None:
    rig.store._db.execute(
        "INSERT INTO devices (device_id, name, public_key, enrolled) VALUES (?, ?, ?, 0)",
        (bytes(8), "low-order", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))
    late = rig.enroll("after-the-bad-one")
    console = Console(ZONE, rig.key, rig.store)
    assert console.stats["bad_device_rows"] == 1
    assert late.device_id in console._devices and rig.device.device_id in console._devices


def test_a_queue_reset_is_reported_once_per_agent_run(rig: Rig) -> None:
    from firmware.protocol.messages import HB_QUEUE_RESET, HB_RECEIVER_ALIVE
    flags = HB_QUEUE_RESET | HB_RECEIVER_ALIVE
    for i in range(4):  # the flag stays set in every heartbeat of that run
        ask(rig, rig.device, Heartbeat(i, 60, flags=flags))
    assert len(raised(rig, EventCode.DEVICE_UNHEALTHY)) == 1
    rig.console.flush()
    assert rig.store.devices()[0].status == "ok", "nothing new since the report"


def ask_raw(rig: Rig, raw: bytes) -> Reply | None:
    """One authentic frame whose body is ``raw`` (padded), past every check a device makes."""
    from firmware.protocol.frame import Header, body_size, seal
    dev = rig.device
    size = body_size(ZONE)
    header = Header(dev.device_id, dev.session, dev.next_counter())
    sealed = seal(dev.shared, header, raw + b"\x80" + bytes(size - len(raw) - 1))
    answer = rig.console.handle(b(dev.labels(sealed)), TXT)
    assert rig.console.commit()
    return None if answer.kind is not Kind.TXT else dev.open(header, answer.txt)


def test_an_authentic_body_that_does_not_decode_is_recorded_and_acknowledged(rig: Rig) -> None:
    import struct
    bad_fragment = b"\x02" + struct.pack(">QBB", 77, 9, 3) + b"data"  # index above count
    reply = ask_raw(rig, bad_fragment)
    assert isinstance(reply, FragmentAck) and reply.msg_id == 77 and reply.complete
    assert ask_raw(rig, b"\x7f unknown body type") is not None  # some ack: never silence
    reasons = [e["logdata"]["REASON"] for e in raised(rig, EventCode.MESSAGE_UNDECODABLE)]
    assert len(reasons) == 2 and all(r.startswith("body: ") for r in reasons)


def test_a_bug_after_authentication_is_recorded_and_acknowledged(rig: Rig, monkeypatch: Any
                                                                 ) -> None:
    import console.core

    def broken(*_: object) -> None:
        raise ValueError("a bug in the console")
    monkeypatch.setattr(console.core, "decode_message_text", broken)
    ack = send_message(rig, raw_message({"c": 4002, "t": 1, "sp": 1, "dp": 22}), 8)
    assert ack.complete and ack.msg_id == 8, "the device's queue moves on"
    (event,) = raised(rig, EventCode.MESSAGE_UNDECODABLE)
    assert event["logdata"]["REASON"] == "console error: ValueError"
    assert rig.console.stats["internal_errors"] == 1


def test_a_device_cannot_send_the_consoles_own_events(rig: Rig) -> None:
    for n, code in enumerate((EventCode.DEVICE_CLONED, EventCode.DEVICE_ONLINE,
                              EventCode.HEARTBEAT)):
        assert send_message(rig, raw_message({"c": int(code), "t": 1, "sp": 1, "dp": 2}),
                            100 + n).complete
    for code in (EventCode.DEVICE_CLONED, EventCode.DEVICE_ONLINE, EventCode.HEARTBEAT):
        assert raised(rig, code) == []
    assert len(raised(rig, EventCode.MESSAGE_UNDECODABLE)) == 3


def test_a_heartbeat_hears_whether_newer_settings_wait(rig: Rig) -> None:
    """The acknowledgement's flag compares the console's newest version with the one the
    heartbeat names: the device fetches (config mode) or reports its refusal (production)."""
    from firmware.protocol.messages import ACK_SETTINGS_PENDING, HeartbeatAck

    def flags(held: int) -> int:
        reply = ask(rig, rig.device, Heartbeat(1, 60, settings_version=held))
        assert isinstance(reply, HeartbeatAck)
        return reply.flags

    assert flags(0) == 0, "no settings at the console"
    rig.store.put_settings(rig.device.device_id, 3, b"signed", 0.0)
    assert flags(0) == ACK_SETTINGS_PENDING
    assert flags(2) == ACK_SETTINGS_PENDING
    assert flags(3) == 0 and flags(4) == 0
    other = Store(rig.path)  # `console settings` in another process, while the console serves
    try:
        other.put_settings(rig.device.device_id, 5, b"signed", 0.0)
    finally:
        other.close()
    rig.console.flush()  # each second: data_version moved, the versions are read again
    assert flags(4) == ACK_SETTINGS_PENDING and flags(5) == 0


def test_a_lying_acked_is_counted_and_raises_nothing(rig: Rig) -> None:
    """A compromised device cannot make the console cry "rolled back" at will."""
    for _ in range(3):
        ask(rig, rig.device, Heartbeat(1, 60, acked=2**48 - 1))
    assert rig.console.stats["bad_acked"] == 3
    assert not raised(rig, EventCode.CONSOLE_STATE_ROLLED_BACK)


def test_a_heartbeat_of_the_earlier_layout_is_still_read() -> None:
    import struct

    from firmware.protocol.frame import body_size
    from firmware.protocol.messages import decode_body, pad

    old = struct.pack(">BIHIIIIIBI", 1, 3600, 60, 2, 30, 0, 0, 0, 1, 3)  # before acked
    assert decode_body(pad(old, body_size(ZONE))) == Heartbeat(3600, 60, 2, 30, flags=1,
                                                               settings_version=3)
