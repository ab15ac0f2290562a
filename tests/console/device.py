"""A test double that plays a coalmine device against the console, built on firmware.protocol.

Independent of the console package on purpose: it speaks the wire protocol (frames, names, DNS
queries) the way a device does, so console tests exercise the console from the outside.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import dns.message
import dns.rdatatype

from firmware.protocol.event import Event, encode_message
from firmware.protocol.fragment import split
from firmware.protocol.frame import Header, body_size, open_reply, seal
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import (
    Body,
    Fragment,
    Heartbeat,
    Reply,
    decode_reply,
    encode_body,
)
from firmware.protocol.names import encode_frame
from firmware.protocol.replay import make_counter

TXT = 16
A = 1


@dataclass
class FakeDevice:
    """A device with its own key; ``seq`` grows with every frame built."""

    zone: str
    console_public: PeerPublicKey
    key: OwnPrivateKey = field(default_factory=OwnPrivateKey.generate)
    epoch: int = 1
    seq: int = 0
    session: int = 0x5E55

    @property
    def public_text(self) -> str:
        return self.key.public().text()

    @property
    def device_id(self) -> bytes:
        return self.key.public().device_id()

    @property
    def shared(self) -> bytes:
        return self.key.shared_key(self.console_public)

    def next_counter(self) -> int:
        self.seq += 1
        return make_counter(self.epoch, self.seq)

    def frame(self, body: Body, counter: int | None = None,
              session: int | None = None) -> tuple[Header, bytes]:
        counter = self.next_counter() if counter is None else counter
        header = Header(self.device_id, self.session if session is None else session, counter)
        return header, seal(self.shared, header, encode_body(body, body_size(self.zone)))

    def labels(self, frame: bytes) -> list[str]:
        return [*encode_frame(frame), *self.zone.strip(".").split(".")]

    def heartbeat(self, uptime: int = 5, queue_depth: int = 0, **health: int
                  ) -> tuple[Header, list[str]]:
        header, frame = self.frame(Heartbeat(uptime, 60, queue_depth, **health))
        return header, self.labels(frame)

    def fragments(self, event: Event, msg_id: int) -> list[Fragment]:
        return split(encode_message(event), msg_id, body_size(self.zone))

    def open(self, header: Header, txt: bytes) -> Reply:
        return decode_reply(open_reply(self.shared, header, txt))


def scramble_case(labels: list[str], rng: random.Random) -> list[str]:
    """0x20 encoding, as a resolver with use-caps-for-id does it."""
    return ["".join(c.upper() if rng.random() < 0.5 else c for c in label) for label in labels]


def wire_query(labels: list[str], qtype: int = TXT, qid: int = 0x1234,
               edns: int | None = None) -> bytes:
    """A DNS query message built by hand (no console code, no dnspython slowness)."""
    name = b"".join(bytes((len(x),)) + x.encode("ascii") for x in labels) + b"\0"
    opt = b"\0" + struct.pack(">HHIH", 41, edns, 0, 0) if edns is not None else b""
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1 if opt else 0) + name + \
        struct.pack(">HH", qtype, 1) + opt


def txt_of(response: bytes) -> bytes | None:
    """The TXT data of a response (strings concatenated), parsed by dnspython; None if none."""
    msg = dns.message.from_wire(response)
    for rrset in msg.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            return b"".join(rrset[0].strings)
    return None
