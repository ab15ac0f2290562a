"""The beacon agent's protocol core: frames out, authenticated replies in; no sockets.

``Beacon`` turns heartbeats and event messages into query names, sends them through a
``Transport`` and checks that every answer authenticates for the exact query it answers.
Messages are retransmitted fragment by fragment under fresh counters (fresh names, so no
cache or negative cache can answer them) until the console says the whole message arrived.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware.agent.storage import CounterSource
from firmware.agent.transport import Transport
from firmware.errors import InputError, TransportError
from firmware.protocol import frame, names
from firmware.protocol.catalogue import EventCode
from firmware.protocol.fragment import split
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import (
    Body,
    FragmentAck,
    Heartbeat,
    HeartbeatAck,
    Reply,
    decode_reply,
    encode_body,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Link:
    """Everything needed to talk to one console."""

    device_key: OwnPrivateKey
    console_key: PeerPublicKey
    zone: str

    def secret(self) -> bytes:
        return self.device_key.shared_key(self.console_key)


class Beacon:
    EMITS = frozenset({EventCode.HEARTBEAT})  # heartbeats travel as their own body type

    def __init__(self, link: Link, counters: CounterSource, transport: Transport,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.key = link.secret()
        self.device_id = link.device_key.public().device_id()
        self.zone = link.zone
        self.counters = counters
        self.transport = transport
        self.sleep = sleep
        self.body_room = names.max_frame_bytes(self.zone) - frame.OVERHEAD

    def exchange(self, body: Body) -> Reply:
        """One query under a fresh counter; the reply must authenticate for it."""
        header = frame.Header(self.device_id, self.counters.next())
        data = frame.seal(self.key, header.device_id, header.counter, encode_body(body))
        answer = self.transport.exchange(names.name_for(data, self.zone))
        try:
            return decode_reply(frame.open_reply(self.key, header, answer))
        except InputError as exc:
            raise TransportError(f"bad answer from console: {exc.message}") from None

    def heartbeat(self, uptime: int, queue_depth: int) -> HeartbeatAck:
        reply = self.exchange(Heartbeat(uptime, queue_depth))
        if not isinstance(reply, HeartbeatAck):
            raise TransportError("console answered a heartbeat with the wrong reply type")
        return reply

    def deliver(self, msg_id: int, message: bytes, *, rounds: int = 4) -> None:
        """Send ``message`` until the console reports it whole; raise TransportError if not."""
        frags = split(message, msg_id & 0xFFFFFFFF, self.body_room)
        todo = list(range(len(frags)))
        for _ in range(rounds):
            ack: FragmentAck | None = None
            for i in todo:
                reply = self.exchange(frags[i])
                if not isinstance(reply, FragmentAck) or reply.msg_id != frags[i].msg_id:
                    raise TransportError("console acknowledged another message")
                ack = reply
                if ack.complete:
                    return
            assert ack is not None
            todo = [i for i in range(len(frags)) if i not in ack.received]
            log.info("message %d: console lacks fragments %s, resending", msg_id, todo)
        raise TransportError(f"message {msg_id} still incomplete after {rounds} rounds")
