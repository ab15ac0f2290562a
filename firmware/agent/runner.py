"""The beacon agent's I/O shell: event socket in, persistent queue, DNS beacons out.

Two threads: one receives events from services on the Unix socket and stores them durably; the
other sends heartbeats and queued events to the console, oldest first, backing off
exponentially (with jitter) while the console or the DNS path is down.  Nothing is removed from
the queue before the console has acknowledged the whole message.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from pathlib import Path

from firmware.agent.beacon import Beacon, Link
from firmware.agent.queue import EventQueue
from firmware.agent.storage import CounterSource, load_or_create_key
from firmware.agent.transport import DnsTransport, Transport
from firmware.config import DeviceConfig
from firmware.errors import ConfigError, InputError, StorageError, TransportError
from firmware.eventpath import decode_datagram
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event

log = logging.getLogger("coalmine.agent")
CLOCK_SKEW_WARN = 300


class Agent:
    EMITS = frozenset({EventCode.BOOT, EventCode.EVENTS_DROPPED})

    def __init__(self, cfg: DeviceConfig, transport: Transport | None = None) -> None:
        self.cfg = cfg
        key, created = load_or_create_key(cfg.data_dir)
        pub = key.public()
        print(f"coalmine: device public key {pub.text()}", flush=True)
        print(f"coalmine: device id {pub.device_id().hex()}{' (new key)' if created else ''}",
              flush=True)
        link = cfg.console
        if link.public_key is None or not link.zone:
            raise ConfigError("the device is not paired with a console",
                              problems=["console.public_key and console.zone must be set"],
                              hint="enroll the public key above at the console, then set them")
        self.queue = EventQueue(cfg.data_dir / "queue.db", cfg.limits.queue_max_events)
        self.beacon = Beacon(Link(key, link.public_key, link.zone), CounterSource(cfg.data_dir),
                             transport or DnsTransport(link.resolver, link.query_timeout))
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.started = time.monotonic()
        self.rejected = 0

    # -- event socket ------------------------------------------------------------------------

    def open_socket(self) -> socket.socket:
        path = self.cfg.event_socket
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        os.chmod(path, 0o660)
        sock.settimeout(0.5)
        return sock

    def receive_loop(self, sock: socket.socket) -> None:
        limit = self.cfg.limits.event_datagram_bytes
        while not self.stop.is_set():
            try:
                data = sock.recv(limit + 1)
            except TimeoutError:
                continue
            except OSError as exc:
                log.error("event socket failed: %s", exc)
                return
            self.accept_datagram(data, limit)

    def accept_datagram(self, data: bytes, limit: int) -> None:
        try:
            event = decode_datagram(data, limit)
        except InputError as exc:
            self.rejected += 1
            log.warning("rejected event datagram: %s", exc.message)
            return
        try:
            self.queue.put(event)
        except StorageError as exc:
            log.error("%s (%s)", exc.message, exc.hint)
            return
        self.wake.set()

    # -- sending -------------------------------------------------------------------------------

    def run(self) -> None:
        """Send until ``stop`` is set: heartbeats on schedule, queued events as they come."""
        self.queue.put(Event(EventCode.BOOT, time.time(), data={"NODE": self.cfg.node_name}))
        backoff, next_beat = 0.0, 0.0
        interval = self.cfg.console.heartbeat_interval
        while not self.stop.is_set():
            try:
                if time.monotonic() >= next_beat:
                    self.send_heartbeat()
                    next_beat = time.monotonic() + interval
                if self.send_one():
                    backoff = 0.0
                    continue
                backoff = 0.0
            except TransportError as exc:
                backoff = min(self.cfg.console.max_backoff, max(0.5, backoff * 2))
                log.warning("%s; retrying in %.1fs (%d queued)", exc.message, backoff,
                            self.queue.depth())
                self.stop.wait(backoff * random.uniform(0.8, 1.2))
                continue
            except StorageError as exc:
                log.error("%s (%s)", exc.message, exc.hint)
                self.stop.wait(5)
                continue
            self.wake.wait(max(0.0, next_beat - time.monotonic()))
            self.wake.clear()

    def send_heartbeat(self) -> None:
        ack = self.beacon.heartbeat(int(time.monotonic() - self.started), self.queue.depth())
        skew = ack.console_time - time.time()
        if abs(skew) > CLOCK_SKEW_WARN:
            log.warning("device clock differs from the console's by %.0f s", skew)

    def send_one(self) -> bool:
        """Deliver the oldest queued message; False when the queue is empty."""
        self.queue.report_drops()
        item = self.queue.oldest()
        if item is None:
            return False
        self.beacon.deliver(item.id, item.message)
        self.queue.remove(item.id)
        return True

    def serve(self) -> None:
        """Run both loops until ``stop``; the socket is removed on the way out."""
        sock = self.open_socket()
        receiver = threading.Thread(target=self.receive_loop, args=(sock,), daemon=True)
        receiver.start()
        try:
            self.run()
        finally:
            self.stop.set()
            receiver.join(timeout=2)
            self.close_socket(sock)
            self.queue.close()

    def close_socket(self, sock: socket.socket) -> None:
        """Stop taking events, then keep those already in the socket buffer (never lose them).

        Unlinking first makes services' later sends fail, so they keep those in their backlog
        for the next agent; what they sent before is still buffered here and is drained.
        """
        Path(self.cfg.event_socket).unlink(missing_ok=True)
        sock.setblocking(False)
        limit = self.cfg.limits.event_datagram_bytes
        kept = 0
        while True:
            try:
                data = sock.recv(limit + 1)
            except OSError:  # BlockingIOError: empty
                break
            self.accept_datagram(data, limit)
            kept += 1
        sock.close()
        if kept:
            log.info("kept %d events that arrived while stopping", kept)
