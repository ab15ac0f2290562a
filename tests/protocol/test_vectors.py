"""Golden byte vectors: they pin DNS protocol v1 so an accidental format change fails loudly."""

from firmware.protocol import frame, keys, messages, names

DEVICE = keys.OwnPrivateKey(bytes(range(1, 33)))
CONSOLE = keys.OwnPrivateKey(bytes(range(101, 133)))
COUNTER = (7 << 24) | 5
HB_FRAME = bytes.fromhex(
    "5d2365a10000070000057cffc83c4287d3eb65afb555bad97345acee153395ba4ece")
HB_NAME = "bkhmb880003g0005fjvsgf22gv9umpdfmlarlmbj8mmes59jimt4tjg.c.test."
HB_REPLY = bytes.fromhex("78a7e475e11f40b2497f330ed261d81c0c1dde79feda")


def test_public_keys_and_device_id():
    assert DEVICE.public().text() == "B6N8vBQgk8i3VdwbEOhstCY3StFqqFPtC9/AsrhtHHw="
    assert CONSOLE.public().text() == "VxR2nRFr92Q2rnS8eT0sMK0ZA8WaxSc4BcfiaYtBDDY="
    assert DEVICE.public().device_id().hex() == "5d2365a1"


def test_heartbeat_frame_and_name():
    key = DEVICE.shared_key(CONSOLE.public())
    body = messages.encode_body(messages.Heartbeat(3600, 2))
    assert body == bytes.fromhex("0100000e10000200")
    sealed = frame.seal(key, DEVICE.public().device_id(), COUNTER, body)
    assert sealed == HB_FRAME
    assert names.name_for(sealed, "c.test") == HB_NAME
    assert len(HB_NAME.split(".", maxsplit=1)[0]) <= 63  # heartbeats fit one label


def test_console_side_opens_and_replies():
    key = CONSOLE.shared_key(DEVICE.public())
    labels = names.split_name(HB_NAME.upper(), "C.TEST")
    assert labels is not None
    raw = names.decode_labels(labels)
    header = frame.parse_header(raw)
    assert header == frame.Header(bytes.fromhex("5d2365a1"), COUNTER)
    assert messages.decode_body(frame.open_body(key, header, raw)) == messages.Heartbeat(3600, 2)
    reply = messages.encode_reply(messages.HeartbeatAck(0, 1_800_000_000))
    assert frame.seal_reply(key, header, reply) == HB_REPLY


def test_capacity_with_twenty_character_zone():
    zone = "abcdefgh.example.com"
    assert len(zone) == 20
    payload = names.max_frame_bytes(zone) - frame.OVERHEAD - messages.FRAGMENT_HEADER_LEN
    assert payload >= 110
    biggest = bytes(names.max_frame_bytes(zone))
    assert len(names.name_for(biggest, zone)) <= 254
