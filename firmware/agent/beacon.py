"""The beacon agent's protocol core: frames out, authenticated replies in; no sockets.

``Beacon`` turns heartbeats and event messages into query names, sends them through a
``Transport`` and checks that every answer authenticates for the exact query it answers.
Every frame is padded to the same size, whatever it carries.  Messages are retransmitted
fragment by fragment under fresh counters (fresh names, so no cache or negative cache can answer
them) until the console says the whole message arrived.  A ``Stale`` answer (the device's
counters went back: restored data, a cloned card) moves the counters past the console's floor
and the frame is sent again at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from firmware.agent.storage import CounterSource
from firmware.agent.transport import Transport
from firmware.protocol import frame, names
from firmware.protocol.catalogue import EventCode
from firmware.protocol.fragment import split
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import (
    Body,
    FragmentAck,
    Heartbeat,
    HeartbeatAck,
    Register,
    RegisterAck,
    Reply,
    Stale,
    decode_reply,
    encode_body,
    encode_register,
)
from firmware.shared.errors import InputError, TransportError

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
                 on_progress: Callable[[], None] = lambda: None) -> None:
        self.link = link
        self.key = link.secret()
        self.device_id = link.device_key.public().device_id()
        self.zone = link.zone
        self.counters = counters
        self.transport = transport
        self.on_progress = on_progress  # called after every exchange (watchdog liveness)
        self.body_size = frame.body_size(self.zone)
        self.stale_jumps = 0
        self.last_counter = 0  # of the newest frame sent
        self._acked = (0, 0)  # counters of the last two heartbeats the console acknowledged

    def exchange(self, body: Body) -> Reply:
        """One query under a fresh counter (two after a Stale answer); the reply must open."""
        for _ in range(2):
            reply = self._once(body)
            if not isinstance(reply, Stale):
                return reply
            self.stale_jumps += 1
            log.warning("console holds counters up to %d (restored or cloned data?); "
                        "continuing above them", reply.highest)
            self.counters.jump(reply.highest)
        raise TransportError("console keeps answering that the counter is stale")

    def _once(self, body: Body) -> Reply:
        header = frame.Header(self.device_id, self.counters.session, self.counters.next())
        self.last_counter = header.counter
        return self._ask(header, frame.seal(self.key, header, encode_body(body, self.body_size)))

    def _ask(self, header: frame.Header, data: bytes) -> Reply:
        """Send one frame; its reply, which must open for exactly this query."""
        try:
            answer = self.transport.exchange(names.name_for(data, self.zone))
        finally:
            self.on_progress()
        try:
            return decode_reply(frame.open_reply(self.key, header, answer))
        except InputError as exc:
            raise TransportError(f"bad answer from console: {exc.message}") from None

    def register(self, name: str) -> RegisterAck:
        """Ask the console to pair (config mode only): one registration frame, its reply."""
        public = self.link.device_key.public().raw
        header = frame.register_header(public, self.counters.session, self.counters.next())
        body = encode_register(Register(name), frame.register_body_size(self.zone))
        reply = self._ask(header, frame.seal_register(self.key, public, header, body))
        if not isinstance(reply, RegisterAck):
            raise TransportError("console answered a registration with the wrong reply type")
        return reply

    def heartbeat(self, beat: Heartbeat) -> HeartbeatAck:
        """Send ``beat`` with the counter of the heartbeat before the last acknowledged one:
        a console that holds a lower heartbeat floor lost its state (restored from a backup)
        and says so.  One heartbeat back, so a console that crashed before writing its last
        floor does not raise a false alarm."""
        reply = self.exchange(beat._replace(acked=self._acked[0]))
        if not isinstance(reply, HeartbeatAck):
            raise TransportError("console answered a heartbeat with the wrong reply type")
        self._acked = (self._acked[1], self.last_counter)
        return reply

    def deliver(self, msg_id: int, message: bytes, *, rounds: int = 4) -> None:
        """Send ``message`` until the console reports it whole; raise TransportError if not."""
        frags = split(message, msg_id, self.body_size)
        todo = list(range(len(frags)))
        for _ in range(rounds):
            received: frozenset[int] = frozenset()
            for i in todo:
                reply = self.exchange(frags[i])
                if not isinstance(reply, FragmentAck) or reply.msg_id != msg_id:
                    raise TransportError("console acknowledged another message")
                if reply.complete:
                    return
                received = reply.received
            todo = [i for i in range(len(frags)) if i not in received]
            log.info("message %d: console lacks fragments %s, resending", msg_id, todo)
        raise TransportError(f"message {msg_id} still incomplete after {rounds} rounds")
