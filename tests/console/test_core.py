"""The pure console core: acceptance, rejections, duplicates, fragments, dedupe, restart."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.core import Kind
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.protocol.frame import Header, body_size, seal
from firmware.protocol.messages import FragmentAck, Heartbeat, HeartbeatAck, encode_body
from firmware.protocol.names import encode_frame
from tests.console.conftest import Rig
from tests.console.device import TXT, A, scramble_case

_RNG = random.Random(5)
PASSWORD = "".join(_RNG.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(400))
LOGIN = Event(EventCode.SSH_LOGIN_ATTEMPT, 1_700_000_000.5, "192.0.2.7", 40022, "10.0.0.2", 22,
              {"USERNAME": "root", "PASSWORD": PASSWORD, "REMOTEVERSION": "SSH-2.0-x"})


def b(labels: list[str]) -> list[bytes]:
    return [x.encode() for x in labels]


def test_heartbeat_is_answered_and_recorded(rig: Rig) -> None:
    header, labels = rig.device.heartbeat(uptime=77, queue_depth=3)
    answer = rig.console.handle(b(labels), TXT)
    assert answer.kind is Kind.TXT
    reply = rig.device.open(header, answer.txt)
    assert isinstance(reply, HeartbeatAck) and reply.flags == 0
    rig.console.flush()
    row = rig.store.devices()[0]
    assert (row.uptime, row.queue_depth, row.highest_counter) == (77, 3, header.counter)
    assert rig.console.stats["accepted"] == 1


def test_idle_flush_writes_nothing_and_changes_are_still_saved(rig: Rig) -> None:
    _, labels = rig.device.heartbeat(uptime=5, queue_depth=0)
    rig.console.handle(b(labels), TXT)
    rig.console.flush()
    writes = rig.store._db.total_changes
    rig.console.flush()  # nothing happened since
    assert rig.store._db.total_changes == writes
    rig.console.handle([b"junk"], TXT)  # only a counter moves
    rig.console.flush()
    assert rig.store._db.total_changes > writes
    rig.restart()
    assert rig.console.stats["accepted"] == 1 and rig.console.stats == rig.store.stats()


def test_minimisation_probe_then_txt_any_case(rig: Rig) -> None:
    header, frame = rig.device.frame(rig.device.fragments(LOGIN, msg_id=3)[0])
    labels = rig.device.labels(frame)
    assert len(labels) >= 5
    rng = random.Random(1)
    for i in range(1, len(labels) - 2):  # partial names: NODATA, nothing counted
        assert rig.console.handle(b(scramble_case(labels[-2 - i :], rng)), A).kind is Kind.NODATA
    assert rig.console.handle(b(scramble_case(labels, rng)), A).kind is Kind.NODATA
    first = rig.console.handle(b(scramble_case(labels, rng)), TXT)
    again = rig.console.handle(b(scramble_case(labels, rng)), TXT)
    assert first.kind is Kind.TXT and first == again
    assert isinstance(rig.device.open(header, first.txt), FragmentAck)
    s = rig.console.stats
    assert (s["accepted"], s["duplicate"], s["undecodable"]) == (1, 1, 0)


def test_out_of_zone_is_refused_and_apex_is_apex(rig: Rig) -> None:
    assert rig.console.handle([b"x", b"example", b"com"], TXT).kind is Kind.REFUSED
    assert rig.console.handle([b"test"], TXT).kind is Kind.REFUSED
    assert rig.console.handle([b"C", b"TEST"], TXT).kind is Kind.APEX


def test_tampered_frame_is_rejected_and_counted(rig: Rig) -> None:
    _, frame = rig.device.frame(Heartbeat(1, 60))
    bad = frame[:-1] + bytes((frame[-1] ^ 1,))
    labels = [*encode_frame(bad), "c", "test"]
    assert rig.console.handle(b(labels), TXT).kind is Kind.NODATA
    assert rig.console.stats["auth_failed"] == 1 and rig.console.stats["accepted"] == 0


def test_tampered_copy_of_a_cached_frame_is_rejected(rig: Rig) -> None:
    _, frame = rig.device.frame(Heartbeat(1, 60))
    assert rig.console.handle(b(rig.device.labels(frame)), TXT).kind is Kind.TXT
    bad = frame[:-1] + bytes((frame[-1] ^ 1,))
    assert rig.console.handle(b(rig.device.labels(bad)), TXT).kind is Kind.NODATA
    assert rig.console.stats["auth_failed"] == 1


def test_wrong_device_key_is_rejected(rig: Rig) -> None:
    other = rig.enroll("pi-2")
    header = Header(rig.device.device_id, 1, rig.device.next_counter())
    # a frame claiming pi-1's id, sealed under pi-2's shared key
    frame = seal(other.shared, header, encode_body(Heartbeat(1, 60), body_size("c.test")))
    assert rig.console.handle(b(rig.device.labels(frame)), TXT).kind is Kind.NODATA
    assert rig.console.stats["auth_failed"] == 1


def test_unknown_device_is_rejected(rig: Rig) -> None:
    from tests.console.device import FakeDevice
    stranger = FakeDevice("c.test", rig.key.public())
    _, labels = stranger.heartbeat()
    assert rig.console.handle(b(labels), TXT).kind is Kind.NODATA
    assert rig.console.handle(b(labels), A).kind is Kind.NODATA
    assert rig.console.stats["unknown_device"] == 1


def test_replayed_frame_below_the_window_is_rejected(rig: Rig) -> None:
    rig.console.limits.answer_cache = 1
    rig.console._cache.clear()
    _, old = rig.device.heartbeat()
    assert rig.console.handle(b(old), TXT).kind is Kind.TXT
    _, newer = rig.device.heartbeat()
    rig.console.handle(b(newer), TXT)  # evicts the first answer from the cache
    assert rig.console.handle(b(old), TXT).kind is Kind.NODATA
    assert rig.console.stats["duplicate"] == 1  # seen inside the window, answer gone
    rig.device.seq += 10_000
    for _ in range(2):
        rig.console.handle(b(rig.device.heartbeat()[1]), TXT)
    assert rig.console.handle(b(old), TXT).kind is Kind.NODATA
    assert rig.console.stats["replayed"] == 1


def test_rejections_of_a_probes_are_not_counted(rig: Rig) -> None:
    for junk in (["zz", "c", "test"], ["not-base32!", "c", "test"], ["0" * 63, "c", "test"]):
        assert rig.console.handle(b(junk), A).kind is Kind.NODATA
    assert rig.console.stats["undecodable"] == 0
    assert rig.console.handle(b(["zz", "c", "test"]), TXT).kind is Kind.NODATA
    assert rig.console.stats["undecodable"] == 1


def send_fragment(rig: Rig, frag: object) -> tuple[Header, FragmentAck]:
    header, frame = rig.device.frame(frag)  # type: ignore[arg-type]
    answer = rig.console.handle(b(rig.device.labels(frame)), TXT)
    assert rig.console.commit()  # what the server does after each round, before answering
    assert answer.kind is Kind.TXT
    reply = rig.device.open(header, answer.txt)
    assert isinstance(reply, FragmentAck)
    return header, reply


def test_fragments_out_of_order_and_duplicated(rig: Rig) -> None:
    frags = rig.device.fragments(LOGIN, msg_id=7)
    assert len(frags) >= 3
    order = [frags[-1], frags[0], frags[0], *frags[1:-1], frags[-1]]
    acks = [send_fragment(rig, f)[1] for f in order]
    assert [a.complete for a in acks[:-2]] == [False] * (len(acks) - 2)
    assert acks[-2].complete and acks[-1].complete
    assert acks[-1].received == frozenset(range(len(frags)))
    events = rig.store.events()
    assert len(events) == 1
    record = events[0].record(mask_secrets=False)
    assert record["logdata"]["PASSWORD"] == PASSWORD  # stored real, masked on display
    assert record["node_id"] == "pi-1" and record["logtype"] == 4002


def test_retransmitted_message_is_stored_once(rig: Rig) -> None:
    for _ in range(3):  # the whole message again under new counters
        for frag in rig.device.fragments(LOGIN, msg_id=42):
            _, ack = send_fragment(rig, frag)
    assert ack.complete
    assert len(rig.store.events()) == 1
    assert rig.console.stats["events_stored"] == 1


def test_single_fragment_message(rig: Rig) -> None:
    small = Event(EventCode.BOOT, 1_700_000_000.0)
    (frag,) = rig.device.fragments(small, msg_id=1)
    _, ack = send_fragment(rig, frag)
    assert ack.complete and ack.received == frozenset({0})
    assert rig.store.events()[0].logtype == 1000


def test_restart_keeps_the_floor_and_the_events(rig: Rig) -> None:
    _, old = rig.device.heartbeat()
    rig.console.handle(b(old), TXT)
    for frag in rig.device.fragments(LOGIN, msg_id=9):
        send_fragment(rig, frag)
    rig.restart()
    assert rig.console.handle(b(old), TXT).kind is Kind.NODATA
    assert rig.console.stats["replayed"] == 1
    _, fresh = rig.device.heartbeat()
    assert rig.console.handle(b(fresh), TXT).kind is Kind.TXT
    _, ack = send_fragment(rig, rig.device.fragments(LOGIN, msg_id=9)[0])
    assert ack.complete  # a fragment of a stored message: already complete
    assert len(rig.store.events()) == 1


def test_enrolled_while_running_is_picked_up_on_flush(rig: Rig) -> None:
    import time

    from tests.console.device import FakeDevice
    late = FakeDevice("c.test", rig.key.public())
    rig.store.enroll("late", late.public_text, late.device_id, time.time())
    _, labels = late.heartbeat()
    assert rig.console.handle(b(labels), TXT).kind is Kind.NODATA
    rig.console.flush()
    _, labels = late.heartbeat()
    assert rig.console.handle(b(labels), TXT).kind is Kind.TXT


SHARED = [HealthCheck.function_scoped_fixture]  # state accumulating across inputs is the point
labels_st = st.lists(st.binary(min_size=0, max_size=70), max_size=8)


@settings(max_examples=400, deadline=None, suppress_health_check=SHARED)
@given(labels=labels_st, qtype=st.integers(0, 65535), suffix=st.booleans())
def test_any_labels_never_raise(rig: Rig, labels: list[bytes], qtype: int, suffix: bool) -> None:
    if suffix:
        labels = [*labels, b"C", b"test"]
    answer = rig.console.handle(labels, qtype)
    assert answer.kind in (Kind.NODATA, Kind.REFUSED, Kind.APEX)


@settings(max_examples=200, deadline=None, suppress_health_check=SHARED)
@given(flip=st.integers(0, 10_000), value=st.integers(1, 255))
def test_any_corruption_of_a_valid_frame_is_rejected(rig: Rig, flip: int, value: int) -> None:
    _, frame = rig.device.frame(Heartbeat(1, 60))
    pos = flip % len(frame)
    bad = frame[:pos] + bytes((frame[pos] ^ value,)) + frame[pos + 1 :]
    assert rig.console.handle(b(rig.device.labels(bad)), TXT).kind is Kind.NODATA


@settings(max_examples=300, deadline=None, suppress_health_check=SHARED)
@given(rest=st.binary(max_size=140), full=st.booleans(), qtype=st.sampled_from([A, TXT]))
def test_random_frames_from_a_known_device_are_rejected(rig: Rig, rest: bytes, full: bool,
                                                        qtype: int) -> None:
    if full:  # exactly the size of a real frame, so it reaches decryption
        rest = (rest * 200)[:151 - 9] if rest else bytes(151 - 9)
    frame = b"\x02" + rig.device.device_id + rest
    assert rig.console.handle(b(rig.device.labels(frame)), qtype).kind is Kind.NODATA
    assert rig.console.stats["accepted"] == 0


def test_full_disk_fails_the_commit_and_nothing_is_acknowledged(rig: Rig) -> None:
    import pytest

    from console.store import NewEvent
    from firmware.shared.errors import StorageError

    rig.console.flush()
    pages = rig.store._db.execute("PRAGMA page_count").fetchone()[0]
    rig.store._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StorageError) as info:
        rig.store.add_events([NewEvent(rig.device.device_id, 1, 1, "x" * 100_000, 0.0)])
    assert "free disk space" in info.value.hint
    for i in range(10_000):  # fill what is left in the events table's pages
        try:
            rig.store.add_events([NewEvent(rig.device.device_id, 10_000 + i, 1, "{}", 0.0)])
        except StorageError:
            break
    frags = rig.device.fragments(LOGIN, msg_id=77)
    for frag in frags:
        _, frame = rig.device.frame(frag)
        labels = b(rig.device.labels(frame))
        answer = rig.console.handle(labels, TXT)  # never raises
    assert answer.durable, "the completing fragment's ack waits for the commit"
    assert not rig.console.commit()
    assert rig.console.stats["storage_failed"] == 1
    assert not rig.store.has_message(rig.device.device_id, 77)
    # a resolver's retry of the same query must not get the acknowledgement either
    assert rig.console.handle(labels, TXT).kind is Kind.NODATA
    rig.store._db.execute("PRAGMA max_page_count = 1000000")
    for frag in frags:  # the device retransmits under new counters
        _, ack = send_fragment(rig, frag)
    assert ack.complete and rig.store.has_message(rig.device.device_id, 77)


def test_duplicate_of_the_completing_fragment_is_identical_and_has_no_effect(rig: Rig) -> None:
    frags = rig.device.fragments(LOGIN, msg_id=21)
    for frag in frags[:-1]:
        send_fragment(rig, frag)
    _, frame = rig.device.frame(frags[-1])
    labels = rig.device.labels(frame)
    rng = random.Random(9)
    answers = [rig.console.handle(b(scramble_case(labels, rng)), qtype) for qtype in (A, TXT)]
    assert rig.console.commit()
    answers.append(rig.console.handle(b(scramble_case(labels, rng)), TXT))
    assert answers[0].kind is Kind.NODATA and answers[1].txt == answers[2].txt
    assert len(rig.store.events()) == 1 and rig.console.stats["events_stored"] == 1
    assert rig.console.stats["duplicate"] == 1
