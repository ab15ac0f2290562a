"""Golden byte vectors: they pin DNS protocol v2 so an accidental format change fails loudly.

The constants were derived from docs/protocol.md with raw libsodium calls (crypto_box_beforenm,
crypto_secretbox, BLAKE2b), not with coalmine's code; ``test_independent_derivation`` repeats
that derivation so a reviewer can check the layout against the spec line by line.
"""

import base64
import hashlib
import struct

from nacl.bindings import crypto_box_beforenm, crypto_scalarmult_base, crypto_secretbox

from firmware.protocol import frame, keys, messages, names

DEVICE = keys.OwnPrivateKey(bytes(range(1, 33)))
CONSOLE = keys.OwnPrivateKey(bytes(range(101, 133)))
SESSION = 0x0A0B0C0D
COUNTER = (7 << 24) | 5
HEADER = frame.Header(bytes.fromhex("8e7ffcd18b764d6c"), SESSION, COUNTER)
BEAT = messages.Heartbeat(uptime=3600, interval=60, queue_depth=2, oldest_age=30,
                          settings_version=3, acked=(7 << 24) | 3)
HB_FRAME = bytes.fromhex(
    "028e7ffcd18b764d6c0a0b0c0d000007000005587c58d095d15435b64932a412ca36736149d2f1b8f51f21"
    "7969f258faab8393c093b1443e7b2b399daa919c34e20413fa3e285ef68aa33913aa0ee0ade0ea90dc7a09"
    "fcce4fcc742515dc28720e7859ba7cf1203ff90b1fbb74ebbce35eb45d77c0d5a80d53ec068360d8354d28"
    "74b140247676411c6cc0a505dc9b27e354675ed11318")
HB_NAME = ("0a77vv6hhdr4qr0a1c60q0000s0001aofhcd15ehagqrci9ikg9ckdjjc54t5sd."
           "oukfi2ub9u9cflas3if097ca47ptimectla8pod720g9vkfh8brr8l8pp2el0to."
           "5ds3l91n3q17ucsjucegihbn18e877gmdqfjoi0fvp1cfrmt7bnjhltd2tev0db."
           "a0dafm0d0r0r0qkqa3km5028tjm84e6pg550ne9m9v3ahjltk8j30.c.test.")
HB_REPLY = bytes.fromhex(
    "4293bf61e0585ef81a50f647652d7329621cb7c96ddf0ce3f4e9d4e584fad9f192796d1882efb40b0fc80c81"
    "0b50914c38ad5b63989025256f0d8a1793434b05")


def test_public_keys_and_device_id():
    assert DEVICE.public().text() == "B6N8vBQgk8i3VdwbEOhstCY3StFqqFPtC9/AsrhtHHw="
    assert CONSOLE.public().text() == "VxR2nRFr92Q2rnS8eT0sMK0ZA8WaxSc4BcfiaYtBDDY="
    assert DEVICE.public().device_id() == HEADER.device_id


def test_heartbeat_frame_and_name():
    key = DEVICE.shared_key(CONSOLE.public())
    sealed = frame.seal(key, HEADER, messages.encode_body(BEAT, frame.body_size("c.test")))
    assert sealed == HB_FRAME
    assert len(sealed) == names.max_frame_bytes("c.test") == 151
    assert names.name_for(sealed, "c.test") == HB_NAME


def test_console_side_opens_and_replies():
    key = CONSOLE.shared_key(DEVICE.public())
    labels = names.split_name(HB_NAME.upper(), "C.TEST")
    assert labels is not None
    raw = names.decode_labels(labels)
    header = frame.parse_header(raw)
    assert header == HEADER
    assert messages.decode_body(frame.open_body(key, header, raw)) == BEAT
    reply = messages.encode_reply(messages.HeartbeatAck(0, 1_800_000_000))
    assert frame.seal_reply(key, header, reply) == HB_REPLY


def test_independent_derivation():
    """The same bytes from the spec's layout and libsodium alone."""
    dev_sk, con_sk = bytes(range(1, 33)), bytes(range(101, 133))
    dev_pk, con_pk = crypto_scalarmult_base(dev_sk), crypto_scalarmult_base(con_sk)
    did = hashlib.blake2b(dev_pk, digest_size=8, person=b"coalmine-devid").digest()
    key = crypto_box_beforenm(con_pk, dev_sk)
    header = bytes([2]) + did + SESSION.to_bytes(4, "big") + COUNTER.to_bytes(6, "big")
    acked = (7 << 24) | 3
    beat = struct.pack(">BIHIIIIIBIHI", 1, 3600, 60, 2, 30, 0, 0, 0, 1, 3, acked >> 32,
                       acked & 0xFFFFFFFF)
    body = beat + b"\x80" + bytes(151 - 35 - len(beat) - 1)
    sealed = header + crypto_secretbox(body, bytes([1]) + header + bytes(4), key)
    assert sealed == HB_FRAME
    text = base64.b32hexencode(sealed).decode().rstrip("=").lower()
    assert ".".join([text[i:i + 63] for i in range(0, len(text), 63)]) + ".c.test." == HB_NAME
    ack = struct.pack(">BBI", 0x81, 0, 1_800_000_000)
    ack += b"\x80" + bytes(48 - len(ack) - 1)
    assert crypto_secretbox(ack, bytes([2]) + header + bytes(4), key) == HB_REPLY


def test_capacity_with_twenty_character_zone():
    zone = "abcdefgh.example.com"
    assert len(zone) == 20
    payload = frame.body_size(zone) - messages.FRAGMENT_HEADER_LEN - 1
    assert payload == 96  # 104 under c.test; docs/protocol.md lists both
    biggest = bytes(names.max_frame_bytes(zone))
    assert len(names.name_for(biggest, zone)) <= 254


REG_COUNTER = (7 << 24) | 6
REG_FRAME = bytes.fromhex(
    "0307a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c0a0b0c0d000007000006af1d"
    "ce7d2af912c81be62e214b66316138fabca421b8a20dbb03c19db2764055604593c4450fcd336d5df0277cd833"
    "8718f07a8387102d38600f48bbd3f2a727e6c2cb77d804aa3b16de1c1d9cd8ff67b1dcc6abcaf3b24bdf16af93"
    "29ad6e1f013bcfd0f94d40771bad5a98")
REG_NONCE = bytes(range(200, 216))
REG_REPLY = bytes.fromhex(
    "d259b08463e89fddaa272d216a3c393f17aaab20700560f0eeb70ae9e3cd3f158fb02d2b91290fcd266d167f"
    "3156c6c46366f8199f21eb2dd0e8d279ae8f62e3")


def test_registration_frame_reply_and_pairing_code():
    """Pairing (docs/pairing.md): derived with raw libsodium and BLAKE2b from the spec."""
    from firmware.protocol import pairing
    key = DEVICE.shared_key(CONSOLE.public())
    header = frame.register_header(DEVICE.public().raw, SESSION, REG_COUNTER)
    body = messages.encode_register(messages.Register("nas-1"), frame.register_body_size("c.test"))
    assert frame.seal_register(key, DEVICE.public().raw, header, body) == REG_FRAME
    public, parsed = frame.parse_register(REG_FRAME)
    assert public == DEVICE.public().raw and parsed == header
    assert messages.decode_register(frame.open_register(key, parsed, REG_FRAME)).name == "nas-1"
    ack = messages.encode_reply(messages.RegisterAck(messages.REG_PENDING, REG_NONCE))
    assert frame.seal_reply(key, header, ack) == REG_REPLY
    assert pairing.fingerprint(CONSOLE.public().raw, DEVICE.public().raw, REG_NONCE) == "110876"


def test_registration_independent_derivation():
    dev_sk, con_sk = bytes(range(1, 33)), bytes(range(101, 133))
    dev_pk, con_pk = crypto_scalarmult_base(dev_sk), crypto_scalarmult_base(con_sk)
    did = hashlib.blake2b(dev_pk, digest_size=8, person=b"coalmine-devid").digest()
    key = crypto_box_beforenm(con_pk, dev_sk)
    tail = SESSION.to_bytes(4, "big") + REG_COUNTER.to_bytes(6, "big")
    body = bytes([3, 5]) + b"nas-1"
    body += b"\x80" + bytes(151 - 43 - 16 - len(body) - 1)
    nonce_header = bytes([3]) + did + tail
    sealed = bytes([3]) + dev_pk + tail + crypto_secretbox(body, b"\x01" + nonce_header + bytes(4),
                                                           key)
    assert sealed == REG_FRAME
    ack = bytes([0x84, 1]) + REG_NONCE
    ack += b"\x80" + bytes(48 - len(ack) - 1)
    assert crypto_secretbox(ack, b"\x02" + nonce_header + bytes(4), key) == REG_REPLY
    code = hashlib.blake2b(con_pk + dev_pk + REG_NONCE, digest_size=8,
                           person=b"coalmine-pair").digest()
    assert f"{int.from_bytes(code, 'big') % 10**6:06d}" == "110876"
