"""An in-memory console behind the agent's ``Transport`` interface, for agent unit tests.

It decodes frames with the real protocol code and answers like the console; ``down`` makes it
fail like an unreachable resolver, ``lose_partials`` like a console restart mid-message."""

from __future__ import annotations

import time

from firmware.errors import TransportError
from firmware.protocol import frame, names
from firmware.protocol.event import Event, decode_message
from firmware.protocol.fragment import Reassembler
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import (
    Fragment,
    FragmentAck,
    HeartbeatAck,
    decode_body,
    encode_reply,
)
from firmware.protocol.replay import ReplayWindow, Verdict


class FakeConsole:
    def __init__(self, zone: str = "c.test") -> None:
        self.key = OwnPrivateKey.generate()
        self.zone = zone
        self.devices: dict[bytes, bytes] = {}
        self.window: dict[bytes, ReplayWindow] = {}
        self.parts = Reassembler()
        self.events: dict[tuple[bytes, int], Event] = {}
        self.heartbeats = 0
        self.queries = 0
        self.down = False

    def enroll(self, device_public: PeerPublicKey) -> None:
        self.devices[device_public.device_id()] = self.key.shared_key(device_public)

    def exchange(self, qname: str) -> bytes:
        self.queries += 1
        if self.down:
            raise TransportError("console unreachable (fake)")
        labels = names.split_name(qname, self.zone)
        assert labels is not None
        raw = names.decode_labels(labels)
        header = frame.parse_header(raw)
        key = self.devices[header.device_id]
        window = self.window.setdefault(header.device_id, ReplayWindow())
        assert window.check(header.counter) is Verdict.NEW, "agent reused a counter"
        window.accept(header.counter)
        body = decode_body(frame.open_body(key, header, raw))
        if isinstance(body, Fragment):
            done = (header.device_id, body.msg_id) in self.events
            received = frozenset(range(body.count))
            if not done:
                message, received = self.parts.add(header.device_id, body, time.time())
                if message is not None:
                    self.events[(header.device_id, body.msg_id)] = decode_message(message)
                    done = True
            reply = encode_reply(FragmentAck(body.msg_id, done, received, body.count))
        else:
            self.heartbeats += 1
            reply = encode_reply(HeartbeatAck(0, int(time.time())))
        return frame.seal_reply(key, header, reply)
