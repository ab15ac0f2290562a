"""The beacon agent's I/O shell: event sockets in, persistent queue, DNS beacons out.

Two threads and a watchdog.  The receiver takes datagrams from one socket per service, so it
knows who sent each one, validates every field into the ranges the console accepts, refuses
codes the sending service may not emit, and stores what passes durably; no datagram, however
malformed, can end it (each is handled inside its own ``try``, refusals are counted by reason).
The sender sends heartbeats and queued events to the console, oldest first, backing off
exponentially (with jitter) while the console or the DNS path is down; nothing leaves the queue
before the console acknowledged the whole message.  The main thread pings systemd's watchdog
only while both threads make progress, and heartbeats carry what an operator needs to trust
them: receiver alive, refusals, queue depth and age of its oldest event, drops, store failures.
"""

from __future__ import annotations

import collections
import logging
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from firmware.agent import listeners
from firmware.agent.beacon import Beacon, Link
from firmware.agent.flood import FloodControl
from firmware.agent.memory import MemoryWatch
from firmware.agent.pairing import Pairer
from firmware.agent.queue import EventQueue
from firmware.agent.settings import SettingsFetcher
from firmware.agent.storage import CounterSource, load_or_create_key, set_key_aside
from firmware.agent.transport import DnsTransport, Transport
from firmware.agent.watchdog import Liveness, Watchdog, watchdog_period
from firmware.config import DeviceConfig
from firmware.eventpath import decode_datagram
from firmware.protocol.catalogue import SOURCES, EventCode
from firmware.protocol.event import Event
from firmware.protocol.keys import PeerPublicKey
from firmware.protocol.messages import (
    ACK_SETTINGS_PENDING,
    HB_QUEUE_RESET,
    HB_RECEIVER_ALIVE,
    Heartbeat,
)
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import ConfigError, InputError, StorageError, TransportError
from firmware.shared.notify import Notify, systemd_notify
from firmware.shared.readfile import read_bounded

log = logging.getLogger("coalmine.agent")
CLOCK_SKEW_WARN = 300
MAX_WAIT = 5.0  # the sender wakes at least this often (watchdog liveness)
LISTENER_CHECK = 60.0
PAIRING_RETRY = 5.0  # the longest wait between registrations that got no answer
CONFIG_HEARTBEAT = 10.0  # in config mode: the applier waits for contact after a network change
MAX_REASONS = 32  # distinct refusal reasons counted by name; the rest under "other reasons"


class Agent:
    EMITS = frozenset({EventCode.BOOT, EventCode.LISTENERS, EventCode.NETWORK_INTERFACES,
                       EventCode.EVENTS_DROPPED, EventCode.MEMORY,
                       EventCode.AGENT_RESTARTED})

    def __init__(self, cfg: DeviceConfig, transport: Transport | None = None,
                 notify: Notify | None = None) -> None:
        self.cfg = cfg
        link = cfg.console
        if link.public_key is None or not link.zone:
            raise ConfigError("this device does not know its console",
                              problems=["console.public_key and console.zone must be set"],
                              hint="write them into coalmine.toml on the card's boot partition "
                                   "(console init prints both)")
        self.console_key: PeerPublicKey = link.public_key
        self.queue = EventQueue(cfg.data_dir / "queue.db", cfg.limits.queue_max_events)
        lim = cfg.limits
        self.flood = FloodControl(lim.flood_burst, lim.flood_window, lim.flood_sources)
        self.drop_counts = DropCounts()
        self.liveness = Liveness()
        self.counters = CounterSource(cfg.data_dir)
        self.transport = transport or DnsTransport(link.resolver, link.query_timeout)
        self.beacon = self._beacon()
        self.pairer = Pairer(cfg, self.beacon, self.put_own, self._rekey)
        self.fetcher = SettingsFetcher(cfg, self.pairer, self.put_own)
        self.watchdog = Watchdog(self.liveness, notify or systemd_notify(), watchdog_period())
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.started = time.monotonic()
        self.rejected: collections.Counter[str] = collections.Counter()
        self.store_failed = 0
        self.listening: dict[str, str] | None = None
        self.interfaces: dict[str, str] | None = None
        self.memory = MemoryWatch(cfg.limits.memory_report)
        self.receiver: threading.Thread | None = None

    def _beacon(self) -> Beacon:
        key, created = load_or_create_key(self.cfg.data_dir)
        pub = key.public()
        print(f"coalmine: device public key {pub.text()}", flush=True)
        print(f"coalmine: device id {pub.device_id().hex()}{' (new key)' if created else ''}",
              flush=True)
        return Beacon(Link(key, self.console_key, self.cfg.console.zone), self.counters,
                      self.transport, on_progress=lambda: self.liveness.tick("sender"))

    def _rekey(self) -> Beacon:
        """A new device key, the refused one kept aside: pairing starts over with it."""
        set_key_aside(self.cfg.data_dir, "refused")
        self.beacon = self._beacon()
        return self.beacon

    # -- event sockets -----------------------------------------------------------------------

    def open_sockets(self) -> dict[socket.socket, str]:
        """One datagram socket per service: the socket a datagram arrives on names its sender."""
        socks: dict[socket.socket, str] = {}
        for service in sorted(SOURCES):
            path = self.cfg.event_socket(service)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_socket():
                path.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            path.chmod(0o660)
            sock.setblocking(False)
            socks[sock] = service
        return socks

    def receive_loop(self, socks: dict[socket.socket, str]) -> None:
        limit = self.cfg.limits.event_datagram_bytes
        with selectors.DefaultSelector() as sel:
            for sock, service in socks.items():
                sel.register(sock, selectors.EVENT_READ, service)
            while not self.stop.is_set():
                self.liveness.tick("receiver")
                for key, _ in sel.select(0.5):
                    self._drain(key.fileobj, key.data, limit)  # type: ignore[arg-type]
                self.store(self.flood.due() + self.drop_counts.due())

    def _drain(self, sock: socket.socket, service: str, limit: int, burst: int = 256) -> int:
        """Take up to ``burst`` waiting datagrams from one service's socket."""
        taken = 0
        for _ in range(burst):
            try:
                data = sock.recv(limit + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.error("event socket of %s failed: %s", service, exc)
                break
            self.accept_datagram(service, data, limit)
            taken += 1
        return taken

    def accept_datagram(self, service: str, data: bytes, limit: int) -> None:
        """Validate and store one datagram; nothing in it can raise out of here."""
        try:
            event = decode_datagram(data, limit)
            if event.code == EventCode.EVENTS_DROPPED:  # a sender's own count, told as ours
                self.store(self.drop_counts.add(service, event))
                return
            if event.code not in SOURCES.get(service, ()):
                raise InputError(f"code {int(event.code)} is not one {service} may send")
        except InputError as exc:
            self._reject(service, exc.message)
            return
        except Exception as exc:  # a bug must cost one datagram, never the receiver
            log.exception("datagram from %s could not be read", service)
            self._reject(service, f"internal error: {type(exc).__name__}")
            return
        self.store(self.flood.admit(event))

    def store(self, events: list[Event]) -> None:
        """Queue what the receiver took (a failure is counted, never raised), wake the sender."""
        for event in events:
            try:
                self.queue.put(event)
            except StorageError as exc:
                self.store_failed += 1
                log.error("%s (%s)", exc.message, exc.hint)
            except Exception:
                self.store_failed += 1
                log.exception("event %d could not be stored", int(event.code))
        if events:
            self.wake.set()

    def _reject(self, service: str, reason: str) -> None:
        """Count a refusal by reason (a bounded set of reasons; a flood logs sparingly)."""
        reason = reason[:80]
        if reason not in self.rejected and len(self.rejected) >= MAX_REASONS:
            reason = "other reasons"
        self.rejected[reason] += 1
        seen = self.rejected[reason]
        if seen == 1 or seen % 1000 == 0:
            log.warning("rejected event datagram from %s (%d so far for this reason): %s",
                        service, seen, reason)

    # -- sending -------------------------------------------------------------------------------

    def run(self) -> None:
        """Send until ``stop`` is set: heartbeats on schedule, queued events as they come."""
        self.put_own(Event(EventCode.BOOT, time.time(), data={"NODE": self.cfg.node_name}))
        self.report_last_exit()
        self.fetcher.report_boot_refusal()
        backoff, next_beat, next_check = 0.0, 0.0, 0.0
        while not self.stop.is_set():
            self.liveness.tick("sender")
            try:
                if self.pairer.busy():  # nothing but registrations, in config mode only
                    self._sleep(self.pairer.step())
                    continue
                if self.fetcher.busy():  # config mode: the console's signed settings
                    self._sleep(self.fetcher.step())
                    continue
                if time.monotonic() >= next_check:
                    self.check_listeners()
                    self.check_memory()
                    next_check = time.monotonic() + min(LISTENER_CHECK,
                                                        self.cfg.limits.memory_report)
                if time.monotonic() >= next_beat:
                    self.send_heartbeat()
                    next_beat = time.monotonic() + self.heartbeat_interval()
                sent = self.send_one()
                backoff = 0.0  # only reached when every exchange above succeeded
                if sent:
                    continue
            except TransportError as exc:  # a person waits at the box while it pairs: 5 s at most
                most = self.cfg.console.max_backoff if self.pairer.paired else PAIRING_RETRY
                backoff = min(most, max(0.5, backoff * 2))
                log.warning("%s; retrying in %.1fs (%d queued)", exc.message, backoff,
                            self.queue.depth())
                self._sleep(backoff * random.uniform(0.8, 1.2))
                continue
            except StorageError as exc:
                log.error("%s (%s)", exc.message, exc.hint)
                self._sleep(5)
                continue
            except Exception:  # a bug: log it, keep the thread; the console sees the stall
                log.exception("sender failed; retrying in 5s")
                self._sleep(5)
                continue
            self.wake.wait(min(MAX_WAIT, max(0.0, next_beat - time.monotonic())))
            self.wake.clear()

    def _sleep(self, seconds: float) -> None:
        """Wait (interruptibly) without ever going quiet for longer than the watchdog allows."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.stop.wait(min(left, MAX_WAIT))
            self.liveness.tick("sender")

    def report_last_exit(self) -> None:
        """Say why the previous run ended when it did not end cleanly (systemd's words, written
        by the unit's ``ExecStopPost=``): a watchdog restart or a crash is never silent."""
        words = read_bounded(self.cfg.last_exit, 200).decode("utf-8", "replace").split()
        try:
            self.cfg.last_exit.unlink(missing_ok=True)
        except OSError as exc:  # reported again at the next start: better twice than never
            log.error("cannot remove %s: %s", self.cfg.last_exit, exc)
        result, code, status = ([w[:32] for w in words] + ["", "", ""])[:3]
        if result and result != "success":
            log.error("the previous run ended with %s (%s %s): restarted by systemd",
                      result, code, status)
            self.put_own(Event(EventCode.AGENT_RESTARTED, time.time(), data={
                "RESULT": result, "EXIT_CODE": code, "EXIT_STATUS": status}))

    def put_own(self, event: Event) -> None:
        """Queue an event of the agent's own; a failure is counted like any other."""
        try:
            self.queue.put(event)
        except StorageError as exc:
            self.store_failed += 1
            log.error("%s (%s)", exc.message, exc.hint)

    def health(self) -> Heartbeat:
        receiver_alive = self.receiver is not None and self.receiver.is_alive()
        flags = (HB_RECEIVER_ALIVE if receiver_alive else 0) | (
            HB_QUEUE_RESET if self.queue.reset_reason else 0)
        return Heartbeat(
            uptime=int(time.monotonic() - self.started),
            interval=round(self.cfg.console.heartbeat_interval), queue_depth=self.queue.depth(),
            oldest_age=int(self.queue.oldest_age()), dropped=self.queue.dropped(),
            rejected=sum(self.rejected.values()), store_failed=self.store_failed, flags=flags,
            settings_version=self.fetcher.in_effect())

    def heartbeat_interval(self) -> float:
        """The configured interval; at most CONFIG_HEARTBEAT in config mode."""
        interval = self.cfg.console.heartbeat_interval
        return min(interval, CONFIG_HEARTBEAT) if self.pairer.config else interval

    def send_heartbeat(self) -> None:
        sent = time.monotonic()
        ack = self.beacon.heartbeat(self.health())
        try:  # for the settings applier: a heartbeat sent then was answered (rollback check)
            write_atomic(self.cfg.contact_file, f"{sent:.3f}\n".encode(), 0o644,
                         dir_mode=0o755)
        except StorageError as exc:
            log.error("%s (%s)", exc.message, exc.hint)
        if ack.flags & ACK_SETTINGS_PENDING:
            self.fetcher.on_pending()
        skew = ack.console_time - time.time()
        if abs(skew) > CLOCK_SKEW_WARN:
            log.warning("device clock differs from the console's by %.0f s", skew)

    def send_one(self) -> bool:
        """Deliver the oldest queued message; False when the queue is empty."""
        self.queue.report_drops()
        item = self.queue.oldest()
        if item is None:
            return False
        self.beacon.deliver(item.msg_id, item.message)
        self.queue.remove(item.id)
        return True

    def check_listeners(self) -> None:
        """Report the device's listeners and interfaces at start and whenever they change."""
        now = listeners.read_listeners()
        if now != self.listening:
            self.listening = now
            self.put_own(Event(EventCode.LISTENERS, time.time(), data=now))
        interfaces = listeners.read_interfaces()
        if interfaces != self.interfaces:
            self.interfaces = interfaces
            self.put_own(Event(EventCode.NETWORK_INTERFACES, time.time(), data=interfaces))

    def check_memory(self) -> None:
        """Report what each coalmine unit holds when it is due (firmware.agent.memory)."""
        data = self.memory.check(time.monotonic())
        if data is not None:
            if data["OOM_KILLS"]:
                log.warning("memory: %s process(es) killed at their unit's limit (%s)",
                            data["OOM_KILLS"], data["UNITS"])
            self.put_own(Event(EventCode.MEMORY, time.time(), data=data))

    # -- the whole agent -------------------------------------------------------------------------

    def serve(self) -> None:
        """Run until ``stop``; the main thread keeps the watchdog; sockets removed at the end."""
        socks = self.open_sockets()
        self.liveness.register("receiver", 10.0)
        self.liveness.register("sender", 3 * MAX_WAIT + 3 * self.cfg.console.query_timeout)
        self.receiver = threading.Thread(target=self.receive_loop, args=(socks,),
                                         name="receiver", daemon=True)
        sender = threading.Thread(target=self.run, name="sender", daemon=True)
        self.receiver.start()
        sender.start()
        self.watchdog.ready(f"receiving on {len(socks)} event sockets")
        period = self.watchdog.period or 10.0
        threads = (self.receiver, sender)

        def dead() -> list[str]:
            return [t.name for t in threads if not t.is_alive()]

        try:
            while not self.stop.wait(min(period / 3, 2.0)):
                self.watchdog.check(dead)
        finally:
            self.stop.set()
            self.wake.set()
            self.receiver.join(timeout=2)
            sender.join(timeout=10)
            self.close_sockets(socks)
            self.store(self.flood.flush())
            self.drop_counts.every = 0.0  # stopping: every count still held goes now
            self.store(self.drop_counts.due())
            self.queue.close()

    def close_sockets(self, socks: dict[socket.socket, str]) -> None:
        """Stop taking events, then keep those already in the socket buffers (never lose them).

        Unlinking first makes services' later sends fail, so they keep those in their backlog
        for the next agent; what they sent before is still buffered here and is drained.
        """
        limit = self.cfg.limits.event_datagram_bytes
        kept = 0
        for sock, service in socks.items():
            Path(self.cfg.event_socket(service)).unlink(missing_ok=True)
            kept += self._drain(sock, service, limit, burst=1 << 20)
            sock.close()
        if kept:
            log.info("kept %d events that arrived while stopping", kept)


class DropCounts:
    """Services' counts of the events they had to drop (their buffer for the agent was full),
    told as the agent's own EVENTS_DROPPED naming the service: the count is all that is taken
    from a report, and at most one event per service per ``every`` seconds is stored (the
    counts between are added to the next), so a compromised service cannot flood the queue
    with reports."""

    EMITS = frozenset({EventCode.EVENTS_DROPPED})

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self.pending: collections.Counter[str] = collections.Counter()
        self.told: dict[str, float] = {}

    def add(self, service: str, report: Event) -> list[Event]:
        count = report.data.get("COUNT")
        if not isinstance(count, int) or not 0 < count < 1 << 31:
            raise InputError("a drop report without a count")
        self.pending[service] = min(self.pending[service] + count, (1 << 31) - 1)
        return self.due(service)

    def due(self, service: str | None = None) -> list[Event]:
        """The counts that may go out now (``service`` only, or every one)."""
        now, out = self.clock(), []
        for name in [service] if service else list(self.pending):
            if self.pending[name] and now - self.told.get(name, -self.every) >= self.every:
                self.told[name] = now
                out.append(Event(EventCode.EVENTS_DROPPED, time.time(),
                                 data={"COUNT": self.pending.pop(name), "SOURCE": name}))
        return out
