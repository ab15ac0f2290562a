"""Round trips, tampering and bounds for the pure DNS protocol v1 codecs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.errors import AuthenticationError, DecodeError, InputError
from firmware.protocol import frame, keys, messages, names
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event, decode_message, encode_message, to_opencanary
from firmware.protocol.fragment import Reassembler, split
from firmware.protocol.replay import ReplayWindow, Verdict

DEV = keys.OwnPrivateKey(bytes(range(1, 33)))
CON = keys.OwnPrivateKey(bytes(range(101, 133)))
KEY = DEV.shared_key(CON.public())
DID = DEV.public().device_id()


@given(st.binary(min_size=1, max_size=151))
def test_names_round_trip(data):
    name = names.name_for(data, "c.test")
    labels = names.split_name(name.swapcase(), "c.test")
    assert labels is not None
    assert names.decode_labels(labels) == data


@pytest.mark.parametrize("labels", [["0" * 62, "0"], ["zz"], ["0" * 3], ["1"], [""], ["0_0"],
                                    ["-10"], [" 10"]])
def test_names_reject_non_canonical(labels):
    with pytest.raises(DecodeError):
        names.decode_labels(labels)


@given(st.binary(max_size=110), st.integers(0, frame.MAX_COUNTER))
def test_frame_round_trip_and_reply_binding(body, counter):
    sealed = frame.seal(KEY, DID, counter, body)
    header = frame.parse_header(sealed)
    assert frame.open_body(KEY, header, sealed) == body
    reply = frame.seal_reply(KEY, header, b"ok")
    assert frame.open_reply(KEY, header, reply) == b"ok"
    with pytest.raises(AuthenticationError):  # bound to this query's counter
        frame.open_reply(KEY, frame.Header(DID, counter ^ 1), reply)


@given(st.integers(0, 40), st.integers(0, 7))
def test_tampered_frame_rejected(pos, bit):
    sealed = bytearray(frame.seal(KEY, DID, 42, b"heartbeat body"))
    pos %= len(sealed)
    sealed[pos] ^= 1 << bit
    with pytest.raises(InputError):
        data = bytes(sealed)
        frame.open_body(KEY, frame.parse_header(data), data)


def test_wrong_key_rejected():
    other = keys.OwnPrivateKey.generate().shared_key(CON.public())
    sealed = frame.seal(other, DID, 1, b"x")
    with pytest.raises(AuthenticationError):
        frame.open_body(KEY, frame.parse_header(sealed), sealed)


bodies = st.one_of(
    st.builds(messages.Heartbeat, st.integers(0, 2**32 - 1), st.integers(0, 65535),
              st.integers(0, 255)),
    st.integers(1, 255).flatmap(lambda n: st.builds(
        messages.Fragment, st.integers(0, 2**32 - 1), st.integers(0, n - 1), st.just(n),
        st.binary(min_size=1, max_size=110))),
)
replies = st.one_of(
    st.builds(messages.HeartbeatAck, st.integers(0, 255), st.integers(0, 2**32 - 1)),
    st.integers(1, 255).flatmap(lambda n: st.builds(
        messages.FragmentAck, st.integers(0, 2**32 - 1), st.booleans(),
        st.frozensets(st.integers(0, n - 1)), st.just(n))),
)


@given(bodies)
def test_body_round_trip(body):
    assert messages.decode_body(messages.encode_body(body)) == body


@given(replies)
def test_reply_round_trip(reply):
    assert messages.decode_reply(messages.encode_reply(reply)) == reply


@given(st.binary(max_size=64))
def test_random_bodies_never_escape_other_errors(data):
    for decode in (messages.decode_body, messages.decode_reply):
        try:
            decode(data)
        except DecodeError:
            pass


texts = st.text(max_size=300)
events = st.builds(
    Event, st.sampled_from(list(EventCode)), st.integers(0, 4_000_000_000_000_000).map(
        lambda us: us / 1_000_000), st.text(max_size=50), st.integers(-1, 65535),
    st.text(max_size=50), st.integers(-1, 65535),
    st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True),
                    st.one_of(texts, st.integers(-(2**31), 2**31)), max_size=6))


@given(events)
def test_event_message_round_trip(event):
    back = decode_message(encode_message(event))
    assert back == event


@given(st.binary(max_size=300))
def test_random_event_messages_rejected_cleanly(data):
    try:
        decode_message(b"\x01" + data)
    except DecodeError:
        pass


def test_event_zip_bomb_rejected():
    import zlib
    bomb = b"\x01" + zlib.compress(b'{"c":4002,"d":{"A":"' + b"x" * 10_000_000 + b'"}}')
    with pytest.raises(DecodeError):
        decode_message(bomb)


def test_opencanary_shape_and_masking():
    ev = Event(EventCode.SSH_LOGIN_ATTEMPT, 0.5, "10.0.0.9", 4444, "10.0.0.1", 22,
               {"USERNAME": "root", "PASSWORD": "pw"})
    out = to_opencanary(ev, "node-1")
    assert set(out) == {"src_host", "src_port", "dst_host", "dst_port", "node_id", "logtype",
                        "logdata", "utc_time", "local_time", "local_time_adjusted"}
    assert out["logtype"] == 4002 and out["utc_time"] == "1970-01-01 00:00:00.500000"
    assert out["logdata"] == {"USERNAME": "root", "PASSWORD": "********"}
    assert to_opencanary(ev, "n", mask_secrets=False)["logdata"]["PASSWORD"] == "pw"


@given(st.binary(min_size=1, max_size=3000), st.randoms())
def test_fragments_reassemble_in_any_order_with_duplicates(message, rnd):
    frags = split(message, 9, 117)
    shuffled = frags + frags[: len(frags) // 2]
    rnd.shuffle(shuffled)
    r = Reassembler()
    done = [m for f in shuffled if (m := r.add(DID, f, 0.0)[0]) is not None]
    assert done and done[0] == message


def test_reassembler_is_bounded():
    r = Reassembler(max_partial_per_device=4)
    for msg_id in range(100):
        r.add(DID, messages.Fragment(msg_id, 0, 3, b"x"), 0.0)
    assert r.pending() <= 4
    with pytest.raises(InputError):
        r2 = Reassembler(max_message_bytes=100)
        for i in range(3):
            r2.add(DID, messages.Fragment(1, i, 3, b"y" * 60), 0.0)


def test_replay_window():
    w = ReplayWindow(floor=10, size=64)
    assert w.check(10) is Verdict.TOO_OLD
    for c in (20, 15, 11):
        assert w.check(c) is Verdict.NEW
        w.accept(c)
        assert w.check(c) is Verdict.DUPLICATE
    assert w.check(12) is Verdict.NEW
    w.accept(500)
    assert w.check(20) is Verdict.TOO_OLD and w.highest == 500
