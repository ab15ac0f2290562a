"""Round trips, tampering, shape and bounds for the pure DNS protocol v2 codecs."""

import ipaddress
import json
import random
import string
import unicodedata

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.protocol import frame, keys, messages, names
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import (
    DICTIONARY,
    MAX_TIME_US,
    Event,
    decode_message,
    decode_message_text,
    encode_message,
    from_compact,
    to_opencanary,
)
from firmware.protocol.fragment import Reassembler, split
from firmware.protocol.replay import ReplayWindow, Verdict
from firmware.protocol.text import inert
from firmware.shared.errors import AuthenticationError, DecodeError, InputError

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


@given(st.binary(max_size=110), st.integers(0, frame.MAX_SESSION),
       st.integers(0, frame.MAX_COUNTER))
def test_frame_round_trip_and_reply_binding(body, session, counter):
    header = frame.Header(DID, session, counter)
    sealed = frame.seal(KEY, header, body)
    assert frame.parse_header(sealed) == header
    assert frame.open_body(KEY, header, sealed) == body
    reply = frame.seal_reply(KEY, header, b"ok")
    assert frame.open_reply(KEY, header, reply) == b"ok"
    for other in (frame.Header(DID, session, counter ^ 1), frame.Header(DID, session ^ 1, counter)):
        with pytest.raises(AuthenticationError):  # bound to this query's session and counter
            frame.open_reply(KEY, other, reply)


@given(st.integers(0, 60), st.integers(0, 7))
def test_tampered_frame_rejected(pos, bit):
    sealed = bytearray(frame.seal(KEY, frame.Header(DID, 9, 42), b"heartbeat body"))
    pos %= len(sealed)
    sealed[pos] ^= 1 << bit
    with pytest.raises(InputError):
        data = bytes(sealed)
        frame.open_body(KEY, frame.parse_header(data), data)


def test_wrong_key_rejected():
    other = keys.OwnPrivateKey.generate().shared_key(CON.public())
    sealed = frame.seal(other, frame.Header(DID, 1, 1), b"x")
    with pytest.raises(AuthenticationError):
        frame.open_body(KEY, frame.parse_header(sealed), sealed)


@pytest.mark.parametrize("raw", [bytes(32), bytes([1] + [0] * 31), bytes.fromhex(
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")])
def test_low_order_public_keys_are_refused(raw):
    with pytest.raises(DecodeError, match="low-order"):
        keys.PeerPublicKey(raw)


SIZE = frame.body_size("c.test")
bodies = st.one_of(
    st.builds(messages.Heartbeat, *(st.integers(0, 2**32 - 1) for _ in range(1)),
              st.integers(0, 65535), *(st.integers(0, 2**32 - 1) for _ in range(5)),
              st.integers(0, 255), st.integers(0, 2**32 - 1),
              acked=st.integers(0, frame.MAX_COUNTER)),
    st.integers(1, 255).flatmap(lambda n: st.builds(
        messages.Fragment, st.integers(0, 2**64 - 1), st.integers(0, n - 1), st.just(n),
        st.binary(min_size=1, max_size=SIZE - messages.FRAGMENT_HEADER_LEN - 1))),
)
replies = st.one_of(
    st.builds(messages.HeartbeatAck, st.integers(0, 255), st.integers(0, 2**32 - 1)),
    st.builds(messages.Stale, st.integers(0, frame.MAX_COUNTER)),
    st.integers(1, 255).flatmap(lambda n: st.builds(
        messages.FragmentAck, st.integers(0, 2**64 - 1), st.booleans(),
        st.frozensets(st.integers(0, n - 1)), st.just(n))),
)


def test_heartbeats_and_fragments_look_alike_on_the_wire():
    """Same label count and lengths, same answer size: the DNS path cannot tell them apart."""
    beat = messages.encode_body(messages.Heartbeat(1, 60), SIZE)
    frag = messages.encode_body(messages.Fragment(7, 0, 1, b"e" * 20), SIZE)
    shapes = [[len(label) for label in names.encode_frame(frame.seal(KEY, frame.Header(
        DID, 1, 1), body))] for body in (beat, frag)]
    assert shapes[0] == shapes[1] == [63, 63, 63, 53]
    acks = [messages.encode_reply(r) for r in (
        messages.HeartbeatAck(0, 1), messages.Stale(5),
        messages.FragmentAck(1, True, frozenset(range(255)), 255))]
    assert {len(a) for a in acks} == {messages.REPLY_SIZE}


@given(bodies)
def test_body_round_trip(body):
    encoded = messages.encode_body(body, SIZE)
    assert len(encoded) == SIZE
    assert messages.decode_body(encoded) == body


@given(replies)
def test_reply_round_trip(reply):
    assert messages.decode_reply(messages.encode_reply(reply)) == reply


@given(st.text(max_size=40))
def test_register_round_trip_cuts_the_name_on_a_character_boundary(name):
    size = frame.register_body_size("c.test")
    decoded = messages.decode_register(messages.encode_register(messages.Register(name), size))
    assert name.startswith(decoded.name) and len(decoded.name.encode()) <= messages.MAX_NAME_BYTES


@given(st.sampled_from(sorted(messages.REG_STATUSES)), st.binary(min_size=16, max_size=16))
def test_register_ack_round_trip_and_size(status, nonce):
    if status == messages.REG_APPROVED:  # carries the settings key instead of the nonce
        ack = messages.RegisterAck(status, settings_key=nonce * 2)
    else:
        ack = messages.RegisterAck(status, nonce)
    encoded = messages.encode_reply(ack)
    assert len(encoded) == messages.REPLY_SIZE
    assert messages.decode_reply(encoded) == ack


@given(st.binary(max_size=151))
def test_random_registration_frames_never_escape_other_errors(data):
    try:
        _, header = frame.parse_register(data)
        frame.open_register(KEY, header, data)
    except (DecodeError, AuthenticationError):
        pass


@given(st.binary(max_size=64))
def test_random_bodies_never_escape_other_errors(data):
    for decode in (messages.decode_body, messages.decode_reply, messages.decode_register):
        try:
            decode(data)
        except DecodeError:
            pass


def not_mapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not isinstance(ip, ipaddress.IPv6Address) or ip.ipv4_mapped is None


texts = st.text(max_size=300).map(inert)
hosts = st.one_of(st.just(""), st.ip_addresses(v=4).map(str),
                  st.ip_addresses(v=6).filter(not_mapped).map(str))
events = st.builds(
    Event, st.sampled_from(list(EventCode)), st.integers(0, MAX_TIME_US).map(
        lambda us: us / 1_000_000), hosts, st.integers(-1, 65535), hosts,
    st.integers(-1, 65535),
    st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True),
                    st.one_of(texts, st.integers(-(2**53) + 1, 2**53 - 1)), max_size=6))


@given(events)
def test_event_message_round_trip(event):
    back = decode_message(encode_message(event))
    assert back == event
    to_opencanary(back, "n")  # every accepted time renders, in any local time zone


@given(events)
def test_the_consoles_json_parser_reads_every_event_an_agent_sends_as_json_does(event):
    message = encode_message(event)
    assert decode_message_text(message, orjson.loads) == decode_message_text(message)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)
json_texts = st.one_of(
    json_values.map(json.dumps), json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    st.text(alphabet='{}[]":,.-+0123456789eEtrufalsn \\u\\d800', max_size=60),
    st.sampled_from(['"\\ud800"', '{"a":"\\udfff"}', "NaN", "1e999", str(2**64), "[" * 2000]))


@given(json_texts)
def test_orjson_never_takes_json_that_json_would_refuse(text):
    """The console stores the text orjson parsed; its views read it back with json."""
    try:
        fast = orjson.loads(text)
    except ValueError:
        return
    assert json.loads(text) == fast


@given(st.text(max_size=200))
def test_inert_is_idempotent_and_leaves_no_control_characters(text):
    once = inert(text)
    assert inert(once) == once
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in once)
    once.encode("utf-8")  # lone surrogates are escaped, so it always encodes


@pytest.mark.parametrize(("field", "value"), [
    ("t", 2**62), ("t", -1), ("t", 1.5), ("sh", "evil.example"), ("sh", "<script>"),
    ("dh", "10.0.0.1 "), ("sp", 70000), ("d", {"A": 2**60}), ("d", {"A": True}),
    ("d", {"a": "lower-case key"}), ("c", 4999),
])
def test_compact_fields_outside_what_the_console_accepts_are_refused(field, value):
    good = {"c": 4002, "t": 1_700_000_000_000_000, "sh": "192.0.2.1", "sp": 1, "dh": "",
            "dp": 22, "d": {"USERNAME": "root"}}
    from_compact(good)
    with pytest.raises(DecodeError):
        from_compact({**good, field: value})


def test_compact_strings_are_made_inert_and_hosts_normalised():
    ev = from_compact({"c": 4002, "t": 0, "sh": "::ffff:192.0.2.1", "sp": 1, "dp": 2,
                       "d": {"USERNAME": "a\x1b[31mb\u202e\ud800"}})
    assert ev.src_host == "192.0.2.1"
    assert ev.data["USERNAME"] == "a\\x1b[31mb\\u202e\\ud800"


# One SSH login attempt (USERNAME root, PASSWORD hunter2, REMOTEVERSION SSH-2.0-Go) as agents
# send it: raw DEFLATE against DICTIONARY, and as agents before 0x02 queued it (a zlib stream).
# Decoding fixed bytes pins the method and every byte of the dictionary, whatever zlib build
# compresses; the raw form is the zlib form less its 2-byte header, dictionary id and Adler-32.
GOLDEN_EVENT = Event(EventCode.SSH_LOGIN_ATTEMPT, 1764460000.25, "192.0.2.1", 40000,
                     "192.0.2.10", 22, {"USERNAME": "root", "PASSWORD": "hunter2",
                                        "REMOTEVERSION": "SSH-2.0-Go"})
GOLDEN_RAW = bytes.fromhex("02c3e56d2353346f1be819813d06f2b309442e0545ce80245f6700dd905a6484"
                           "c7f1c0f4505b0b00")
GOLDEN_ZLIB = bytes.fromhex("0178f982158026c3e56d2353346f1be819813d06f2b309442e0545ce80245f67"
                            "00dd905a6484c7f1c0f4505b0b005b4126ec")


def test_golden_event_messages_decode_in_both_forms():
    assert decode_message(GOLDEN_RAW) == decode_message(GOLDEN_ZLIB) == GOLDEN_EVENT
    assert encode_message(GOLDEN_EVENT)[0] == 0x02
    assert decode_message(encode_message(GOLDEN_EVENT)) == GOLDEN_EVENT
    assert len(GOLDEN_RAW) == len(GOLDEN_ZLIB) - 10


def test_raw_deflate_saves_ten_bytes_of_every_event_and_often_a_fragment():
    import zlib
    rnd, room = random.Random(5), frame.body_size("c.test")
    fragments = {"raw": 0, "zlib": 0}
    for _ in range(200):
        password = "".join(rnd.choice(string.ascii_letters + string.digits + string.punctuation)
                           for _ in range(40))
        when = rnd.randrange(1_790_000_000_000_000, 1_800_000_000_000_000) / 1_000_000
        ev = GOLDEN_EVENT._replace(time=when, src_port=rnd.randrange(65536),
                                   src_host=f"203.0.113.{rnd.randrange(1, 255)}", data={
            **GOLDEN_EVENT.data, "PASSWORD": password,
            "LOCALVERSION": "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
            "REMOTEVERSION": "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6"})
        raw = encode_message(ev)
        deflater = zlib.compressobj(9, zdict=DICTIONARY)
        old = b"\x01" + deflater.compress(json.dumps(
            ev.to_compact(), separators=(",", ":")).encode()) + deflater.flush()
        assert len(raw) == len(old) - 10 and decode_message(old) == decode_message(raw) == ev
        fragments["raw"] += len(split(raw, 1, room))
        fragments["zlib"] += len(split(old, 1, room))
    assert fragments["zlib"] == 400 and fragments["raw"] < 380  # two each, and fewer


@given(st.binary(max_size=300))
def test_random_event_messages_rejected_cleanly(data):
    for kind in (b"\x01", b"\x02", b"\x03"):
        try:
            decode_message(kind + data)
        except DecodeError:
            pass


def test_event_zip_bomb_rejected():
    import zlib
    text = b'{"c":4002,"d":{"A":"' + b"x" * 10_000_000 + b'"}}'
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    for bomb in (b"\x01" + zlib.compress(text), b"\x02" + raw.compress(text) + raw.flush()):
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
    frags = split(message, 9, SIZE)
    shuffled = frags + frags[: len(frags) // 2]
    rnd.shuffle(shuffled)
    r = Reassembler()
    done = [m for f in shuffled if (m := r.add(DID, f, 0.0)[0]) is not None]
    assert done and done[0] == message


def test_reassembler_is_bounded():
    r = Reassembler(max_partial_per_device=4)
    for msg_id in range(100):
        r.add(DID, messages.Fragment(msg_id, 0, 3, b"x"), 0.0)
    assert r.pending() == 4  # the newest four: the oldest partial goes first
    assert [m for m in range(100) if r.holds(DID, m)] == [96, 97, 98, 99]
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


def test_reassembler_sweeps_old_partials_and_keeps_new_ones():
    r = Reassembler(max_age=100)
    r.add(DID, messages.Fragment(1, 0, 2, b"old"), 1000.0)
    assert r.add(DID, messages.Fragment(2, 0, 2, b"a"), 1200.0) == (None, frozenset({0}))
    assert not r.holds(DID, 1), "swept: older than max_age"
    assert r.add(DID, messages.Fragment(2, 1, 2, b"b"), 1201.0)[0] == b"ab"
    assert r.pending() == 0


def test_a_key_with_bit_255_set_is_refused():
    """X25519 ignores bit 255: the same key with it set would get a second device id."""
    good = keys.OwnPrivateKey.generate().public().raw
    alias = good[:31] + bytes((good[31] | 0x80,))
    with pytest.raises(DecodeError, match="canonical"):
        keys.PeerPublicKey(alias)


@given(st.integers(0, 0xFFFF))
def test_settings_get_round_trip(offset):
    body = messages.encode_body(messages.SettingsGet(offset), SIZE)
    assert len(body) == SIZE and messages.decode_body(body) == messages.SettingsGet(offset)


@given(st.integers(0, 2**32 - 1), st.binary(max_size=messages.SETTINGS_MAX), st.data())
def test_settings_part_round_trip_and_size(version, wire, data):
    offset = data.draw(st.integers(0, len(wire)))
    part = messages.SettingsPart(version, len(wire), offset,
                                 wire[offset:offset + messages.SETTINGS_CHUNK])
    encoded = messages.encode_reply(part)
    assert len(encoded) == messages.REPLY_SIZE and messages.decode_reply(encoded) == part
