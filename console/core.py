"""The console's pure core: what one query name under the zone means, and what to answer.

No sockets here (pattern "pure core, thin I/O shell"): ``Console.handle`` takes the raw labels
of a query name and its type and returns an ``Answer``; the server turns that into DNS wire
bytes.  Everything the name carries came from the network, so every step can fail and every
failure ends as a counted rejection and a NODATA answer, never an exception.  Once a frame has
authenticated, every failure to understand it is stored as a MESSAGE_UNDECODABLE event for the
device and acknowledged, so a device's queue never sticks on a message the console cannot read.

Resolvers send the same frame more than once: QNAME minimisation asks ``A`` for the full name
before the ``TXT``, and retries or resolver pools repeat queries.  The frame is processed at its
first sighting (any type) and its answer cached by (device id, session, counter), so every later
query for it gets byte-identical TXT data and causes no second effect.  Rejections are counted
only for TXT queries; minimisation's ``A`` probes for partial names would drown them otherwise.

Events are kept in memory until ``commit`` writes the round's group in one durable
transaction; answers that acknowledge them are marked ``durable`` and the server sends them only
after the commit succeeded.  Authentic frames from a second counter stream under one key (an
epoch seen with another session, or counters the console already holds) mean a cloned card or a
restored data partition: the console raises DEVICE_CLONED and answers ``Stale`` with its floor,
so the device jumps ahead; an old frame of a known session is a replay and gets nothing.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import orjson  # parses an SSH event in ~1.9 us against json's ~10.5 (7% of an event's CPU)

from console import floors, health
from console.pairing import PairingLimits, Registrations
from console.store import DeviceRow, NewEvent, Progress, Store, console_event
from firmware.protocol.catalogue import CONSOLE_ONLY, EventCode
from firmware.protocol.event import Event, decode_message_text
from firmware.protocol.fragment import Reassembler
from firmware.protocol.frame import (
    HEADER_LEN,
    KIND_REGISTER,
    REGISTER_HEADER_LEN,
    Header,
    body_size,
    open_body,
    open_register,
    parse_header,
    parse_register,
    seal_reply,
    seal_reply_wire,
)
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import (
    ACK_SETTINGS_PENDING,
    FRAGMENT,
    REG_APPROVED,
    REG_REJECTED,
    SETTINGS_CHUNK,
    Fragment,
    FragmentAck,
    Heartbeat,
    HeartbeatAck,
    RegisterAck,
    Reply,
    SettingsGet,
    SettingsPart,
    Stale,
    decode_body,
    decode_register,
    encode_reply,
    unpad,
)
from firmware.protocol.names import decode_labels, max_frame_bytes
from firmware.protocol.replay import SEQ_BITS, ReplayWindow, Verdict
from firmware.protocol.text import inert
from firmware.shared.errors import (
    AuthenticationError,
    CoalmineError,
    DecodeError,
    StorageError,
)

log = logging.getLogger(__name__)
TYPE_TXT = 16
STAT_NAMES = (
    "queries", "accepted", "duplicate", "replayed", "auth_failed", "unknown_device",
    "undecodable", "events_stored", "storage_failed", "stale", "bad_device_rows",
    "floors_failed", "authentic_undecodable", "internal_errors", "revoked", "registrations",
    "registration_throttled", "registration_bad_key", "registration_replayed", "bad_acked",
)
CachedKey = bytes  # the frame's device id, session and counter, as sent


class Kind(enum.Enum):
    TXT = "txt"  # answer with the TXT data
    NODATA = "nodata"  # NOERROR, no answer, SOA in authority
    REFUSED = "refused"  # not our zone
    APEX = "apex"  # the zone itself: SOA/NS as asked
    SERVFAIL = "servfail"  # the console cannot answer now (storage failed): try again later


class Answer(NamedTuple):
    kind: Kind
    txt: bytes = b""
    durable: bool = False  # acknowledges something the next commit must make durable first


NODATA = Answer(Kind.NODATA)
REFUSED = Answer(Kind.REFUSED)
APEX = Answer(Kind.APEX)
SERVFAIL = Answer(Kind.SERVFAIL)


@dataclass(slots=True)
class Session:
    """The agent session (random per start) seen in one epoch, and its highest counter."""

    session: int
    highest: int


@dataclass(slots=True)
class Device:
    """An enrolled device as the hot path needs it: shared key cached, replay window."""

    name: str
    device_id: bytes
    key: bytes
    window: ReplayWindow
    sessions: OrderedDict[int, Session] = field(default_factory=OrderedDict)  # by epoch
    health: health.DeviceHealth = field(default_factory=health.DeviceHealth)
    changed_epochs: set[int] = field(default_factory=set)
    public: bytes = b""  # its X25519 public key: a registration under it means "paired"
    last_clone_report: float = 0.0
    clashes: int = 0
    dirty: bool = False
    beat_floor: int = -1  # its highest heartbeat counter accepted (-1: not known)
    rollback_reported: bool = False  # CONSOLE_STATE_ROLLED_BACK raised since this start


@dataclass(slots=True)
class _Revoked:
    """A revoked device: told so when it asks, its frames dropped (and replays of either)."""

    floor: int  # its highest counter: registrations at or below it are replays
    key: bytes | None = None  # the shared key, made when it first asks


@dataclass(slots=True)
class _Cached:
    frame: bytes
    txt: bytes
    served_txt: bool
    durable: bool = False


@dataclass
class Limits:
    answer_cache: int = 65536
    replay_window: int = 4096
    sessions_kept: int = 1024
    clone_report_every: float = 600.0
    health: health.HealthLimits = field(default_factory=health.HealthLimits)
    pairing: PairingLimits = field(default_factory=PairingLimits)


@dataclass
class Console:
    """Device registry, replay windows, answer cache and statistics around one ``Store``."""

    EMITS: ClassVar[frozenset[EventCode]] = frozenset({EventCode.MESSAGE_UNDECODABLE,
                                                       EventCode.DEVICE_CLONED,
                                                       EventCode.CONSOLE_STATE_ROLLED_BACK})

    zone: str
    private_key: OwnPrivateKey
    store: Store
    limits: Limits = field(default_factory=Limits)
    clock: Callable[[], float] = time.time
    state_dir: Path | None = None  # where the floors file lives (None: no floors file)
    settings_key: bytes = bytes(32)  # the Ed25519 key devices pin at pairing (settings.key)

    def __post_init__(self) -> None:
        self._zone = [label.encode("ascii").lower() for label in self.zone.strip(".").split(".")]
        self._zone_wire = b".".join(self._zone)
        self._frame_size = max_frame_bytes(self.zone)
        self._body_size = body_size(self.zone)
        self._devices: dict[bytes, Device] = {}
        self._last_rowid = 0
        self._cache: OrderedDict[CachedKey, _Cached] = OrderedDict()
        self._reassembler = Reassembler()
        self._pending: list[NewEvent] = []
        self._pending_msgs: set[tuple[bytes, int]] = set()
        self._stored: OrderedDict[tuple[bytes, int], None] = OrderedDict.fromkeys(
            self.store.recent_messages(self.limits.answer_cache))  # recently stored messages
        self._pending_cache: list[CachedKey] = []
        loaded = self.store.stats()
        self.stats = {name: loaded.get(name, 0) for name in STAT_NAMES}
        self._saved_stats = loaded  # what the store holds: flush writes only when this differs
        self._floors = floors.read(self._floors_path) if self._floors_path else {}
        self._floors_writer = floors.Writer(self._floors_path) if self._floors_path else None
        self.restored: list[str] = []  # devices whose database floor was below the floors file
        self._revoked: dict[bytes, _Revoked] = {}
        self.registrations = Registrations(self.private_key, self.store, self.limits.pairing)
        self._data_version = self.store.data_version()
        self.refresh_registry()

    @property
    def _floors_path(self) -> Path | None:
        return self.state_dir / floors.FILE if self.state_dir else None

    # --- registry and persistence -------------------------------------------------------------

    def refresh_registry(self) -> None:
        """Pick up devices enrolled since the last call (the CLI enrolls while we serve)."""
        for row in self.store.devices(after_rowid=self._last_rowid):
            self._last_rowid = row.rowid
            try:
                self._add_device(row)
            except CoalmineError as exc:  # one bad row never stops the others
                self.stats["bad_device_rows"] += 1
                log.error("device %r skipped: %s", inert(row.name, 64), exc.message)

    def _add_device(self, row: DeviceRow) -> None:
        if row.revoked is not None:
            self._revoked[row.device_id] = _Revoked(floor=row.highest_counter)
            return
        peer = PeerPublicKey.from_text(row.public_key)
        floor = row.highest_counter
        kept, session, beat = self._floors.get(row.device_id, (-1, 0, -1))
        if kept > floor:
            self.restored.append(row.name)
            log.warning("device %r: the database's replay floor %d is below the floors file's "
                        "%d (a restored database?); keeping %d", row.name, floor, kept, kept)
            floor = kept
        device = Device(row.name, row.device_id, self.private_key.shared_key(peer),
                        ReplayWindow(floor=floor, size=self.limits.replay_window),
                        public=peer.raw, beat_floor=beat)
        device.sessions.update((e, Session(s, h)) for e, s, h in self.store.sessions(row.device_id))
        newest = floor >> SEQ_BITS
        if floor >= 0 and newest not in device.sessions and kept >= floor:  # the db lost it
            device.sessions[newest] = Session(session, floor)
        if newest in device.sessions:  # its highest was saved when the epoch began: the floor
            device.sessions[newest].highest = max(device.sessions[newest].highest, floor)
        device.health.restore(row.status, row.last_heartbeat, row.interval, {
            "rejected": row.rejected or 0, "dropped": row.dropped or 0,
            "store_failed": row.store_failed or 0})
        self._devices[row.device_id] = device

    def flush(self) -> None:
        """Persist counters, health, sessions and statistics; raise offline events (each second).

        An idle console writes nothing: no transaction when no device and no counter changed.
        """
        now = self.clock()
        if self._floors_writer is not None:
            self.stats["floors_failed"] = self._floors_writer.failures
        for device in self._devices.values():
            for code, data in health.on_tick(device.health, now, self.limits.health):
                self._raise(device, code, data, now)
        self.commit()
        dirty = [d for d in self._devices.values() if d.dirty]
        if dirty or self.stats != self._saved_stats:
            self.store.save_progress([self._progress(d) for d in dirty], self.stats, [
                (d.device_id, e, d.sessions[e].session, d.sessions[e].highest)
                for d in dirty for e in sorted(d.changed_epochs) if e in d.sessions])
            self._saved_stats = dict(self.stats)
            if dirty and self._floors_writer is not None:
                self._floors.update({d.device_id: self._floor(d) for d in dirty})
                self._floors_writer.submit(self._floors)
        for device in dirty:
            device.dirty = False
            device.changed_epochs.clear()
        self.registrations.flush(now)
        version = self.store.data_version()
        if version != self._data_version:  # the operator decided something (another process)
            self._data_version = version
            self.store.forget_settings()  # `console settings` may have signed new ones
            self._take_decisions()
        self.refresh_registry()

    def _take_decisions(self) -> None:
        """Revocations and rejections made with the CLI while we serve (approvals enroll)."""
        for device_id in self.store.revoked_ids():
            if device_id not in self._revoked:
                gone = self._devices.pop(device_id, None)
                self._revoked[device_id] = _Revoked(floor=gone.window.highest if gone else -1)
                if gone is not None:
                    log.warning("device %r revoked: its beacons are dropped from now on",
                                inert(gone.name, 64))
        self.registrations.reload(self.store.pending_rows())

    def close(self) -> None:
        """Flush everything and wait for the floors file to be written (the end of serving)."""
        self.flush()
        if self._floors_writer is not None:
            self._floors_writer.close()

    @staticmethod
    def _floor(d: Device) -> floors.Floor:
        newest = d.sessions.get(d.window.highest >> SEQ_BITS)
        return d.window.highest, newest.session if newest else 0, d.beat_floor

    @staticmethod
    def _progress(d: Device) -> Progress:
        h, beat = d.health, d.health.beat
        if beat is None:
            return Progress(d.device_id, d.window.highest, h.status)
        return Progress(d.device_id, d.window.highest, h.status, h.last_heartbeat, beat.uptime,
                        beat.interval, beat.queue_depth, beat.oldest_age, beat.dropped,
                        beat.rejected, beat.store_failed, beat.flags)

    def commit(self) -> bool:
        """Make every event handled since the last call durable; False if that failed.

        On failure the answers that acknowledged them leave the cache (the server replaces
        them with SERVFAIL), so the device retransmits and nothing is lost.
        """
        if not self._pending:
            return True
        pending, self._pending = self._pending, []
        keys, self._pending_cache = self._pending_cache, []
        msgs, self._pending_msgs = self._pending_msgs, set()
        try:
            stored = self.store.add_events(pending)
        except StorageError as exc:
            self.stats["storage_failed"] += 1
            log.error("%s (%s)", exc.message, exc.hint)
            for key in keys:
                self._cache.pop(key, None)
            return False
        self.stats["events_stored"] += stored
        self._stored.update(dict.fromkeys(msgs))
        while len(self._stored) > self.limits.answer_cache:
            self._stored.popitem(last=False)
        for key in keys:
            cached = self._cache.get(key)
            if cached is not None:
                cached.durable = False
        return True

    # --- the hot path -------------------------------------------------------------------------

    def handle(self, labels: Sequence[bytes], qtype: int) -> Answer:
        """Answer one query name (raw labels, any letter case); never raises for any input."""
        self.stats["queries"] += 1
        try:
            return self._handle(labels, qtype)
        except StorageError as exc:  # the device retransmits under a new counter later
            self.stats["storage_failed"] += 1
            log.error("%s (%s)", exc.message, exc.hint)
            return SERVFAIL
        except CoalmineError:
            self._reject("undecodable", qtype)
            return NODATA

    def _handle(self, labels: Sequence[bytes], qtype: int) -> Answer:
        n, z = len(labels), len(self._zone)
        if n < z or b".".join(labels[n - z :]).lower() != self._zone_wire:
            return REFUSED
        if n == z:
            return APEX
        try:
            frame = decode_labels(labels[: n - z])
            if len(frame) != self._frame_size:
                raise DecodeError(f"frame of {len(frame)} bytes, not {self._frame_size}")
            if frame[0] == KIND_REGISTER:
                return self._registration(frame, qtype)
            header = parse_header(frame)
        except DecodeError:
            return self._reject("undecodable", qtype)
        device = self._devices.get(header.device_id)
        if device is None:
            return self._reject("revoked" if header.device_id in self._revoked
                                else "unknown_device", qtype)
        key = frame[1:HEADER_LEN]
        cached = self._cache.get(key)
        if cached is not None:
            return self._from_cache(cached, key, frame, qtype)
        return self._fresh(device, header, frame, qtype)

    def _from_cache(self, cached: _Cached, key: CachedKey, frame: bytes, qtype: int) -> Answer:
        if cached.frame != frame:  # same device, session and counter, other bytes: forged
            return self._reject("auth_failed", qtype)
        self._cache.move_to_end(key)
        if qtype != TYPE_TXT:
            return NODATA
        if cached.served_txt:
            self.stats["duplicate"] += 1
        cached.served_txt = True
        return Answer(Kind.TXT, cached.txt, cached.durable)

    def _fresh(self, device: Device, header: Header, frame: bytes, qtype: int) -> Answer:
        verdict = device.window.check(header.counter)
        try:
            body = open_body(device.key, header, frame)
        except AuthenticationError:
            return self._reject("auth_failed", qtype)
        now = self.clock()
        epoch = header.counter >> SEQ_BITS
        known = device.sessions.get(epoch)
        mine = known is not None and known.session == header.session
        reply: Reply
        if verdict is Verdict.NEW:
            if known is not None and not mine:  # a second stream inside this epoch
                self._stream_clash(device, header, now)
            else:
                self._session_seen(device, epoch, header)
            device.window.accept(header.counter)
            device.dirty = True
            self.stats["accepted"] += 1
            reply = self._process(device, body, now, header.counter)
        elif mine and known is not None and header.counter <= known.highest:
            # a frame this session sent before: a replay (or a resolver's late duplicate)
            return self._reject("replayed" if verdict is Verdict.TOO_OLD else "duplicate", qtype)
        else:  # authentic and new, but under counters we already hold: restored or cloned
            self._stream_clash(device, header, now)
            self.stats["stale"] += 1
            reply = Stale(device.window.highest)
        txt = seal_reply_wire(device.key, frame, encode_reply(reply))
        key = frame[1:HEADER_LEN]
        durable = bool(self._pending) and isinstance(reply, FragmentAck) and reply.complete
        self._remember(key, _Cached(frame, txt, qtype == TYPE_TXT, durable))
        if durable:
            self._pending_cache.append(key)
        if qtype != TYPE_TXT:
            return NODATA
        return Answer(Kind.TXT, txt, durable)

    def _registration(self, frame: bytes, qtype: int) -> Answer:
        """A device asks to be paired (docs/pairing.md): where its request stands."""
        public_key, header = parse_register(frame)
        key = frame[1:REGISTER_HEADER_LEN]
        cached = self._cache.get(key)
        if cached is not None:
            return self._from_cache(cached, key, frame, qtype)
        now = self.clock()
        device = self._devices.get(header.device_id)
        revoked = self._revoked.get(header.device_id)
        entry = None
        if device is not None and device.public == public_key:
            shared = device.key
        elif revoked is not None:
            shared = self._revoked_key(revoked, public_key)
        else:
            entry = self.registrations.lookup(header.device_id)
            if entry is None or entry.public_key != public_key:
                made = self.registrations.admit(public_key, header, now)
                if isinstance(made, str):
                    return self._reject(made, qtype)
                entry = made
            shared = entry.key
        try:
            register = decode_register(open_register(shared, header, frame))
        except AuthenticationError:
            return self._reject("auth_failed", qtype)
        except DecodeError:
            return self._reject("undecodable", qtype)
        ack: RegisterAck | str
        if entry is not None:
            ack = self.registrations.answer(entry, register.name, header, now)
        elif revoked is not None:  # the same counter stream as its device frames: no replays
            ack = "registration_replayed" if header.counter <= revoked.floor else \
                RegisterAck(REG_REJECTED, self.registrations.nonce(public_key))
            revoked.floor = max(revoked.floor, header.counter)
        elif device is not None and device.window.check(header.counter) is Verdict.NEW:
            device.window.accept(header.counter)
            device.dirty = True
            ack = RegisterAck(REG_APPROVED, settings_key=self.settings_key)
        else:
            ack = "registration_replayed"
        if isinstance(ack, str):
            return self._reject(ack, qtype)
        self.stats["registrations"] += 1
        txt = seal_reply(shared, header, encode_reply(ack))
        self._remember(key, _Cached(frame, txt, qtype == TYPE_TXT))
        return Answer(Kind.TXT, txt) if qtype == TYPE_TXT else NODATA

    def _revoked_key(self, revoked: _Revoked, public_key: bytes) -> bytes:
        """The shared key of a revoked device (to tell it so), computed once."""
        if revoked.key is None:
            revoked.key = self.registrations.shared_key(public_key) or bytes(32)  # opens nothing
        return revoked.key

    def _remember(self, key: CachedKey, entry: _Cached) -> None:
        self._cache[key] = entry
        if len(self._cache) > self.limits.answer_cache:
            self._cache.popitem(last=False)

    def _session_seen(self, device: Device, epoch: int, header: Header) -> None:
        """Record the session of ``epoch`` and the highest counter it used.

        Rows are written only when an epoch begins (once per agent start): the epoch before it
        is final then, and the newest epoch's highest counter is the device's floor anyway.
        """
        known = device.sessions.get(epoch)
        if known is not None:
            known.highest = max(known.highest, header.counter)
            return
        previous = next(reversed(device.sessions), None)
        device.sessions[epoch] = Session(header.session, header.counter)
        device.changed_epochs.add(epoch)
        if previous is not None:
            device.changed_epochs.add(previous)
        while len(device.sessions) > self.limits.sessions_kept:
            device.sessions.popitem(last=False)

    def _stream_clash(self, device: Device, header: Header, now: float) -> None:
        """A second counter stream under this key: report it (at most every few minutes)."""
        device.clashes += 1
        if now - device.last_clone_report < self.limits.clone_report_every:
            return
        device.last_clone_report = now
        self._raise(device, EventCode.DEVICE_CLONED, {
            "EPOCH": header.counter >> SEQ_BITS, "SESSION": f"{header.session:08x}",
            "HIGHEST": device.window.highest, "CLASHES": device.clashes}, now)
        device.clashes = 0

    def _reject(self, reason: str, qtype: int) -> Answer:
        if qtype == TYPE_TXT:
            self.stats[reason] += 1
        return NODATA

    # --- what an authentic body means ---------------------------------------------------------

    def _process(self, device: Device, body: bytes, now: float, counter: int) -> Reply:
        """The reply to an authentic body.  Whatever goes wrong in here, even a bug of ours, is
        stored as MESSAGE_UNDECODABLE and acknowledged: the device's queue never sticks."""
        try:
            return self._understand(device, body, now, counter)
        except CoalmineError as exc:
            self._undecodable(device, f"body: {exc.message}", now)
        except Exception as exc:  # a bug of ours must not mute a device forever
            log.exception("device %r: processing an authentic message failed",
                          inert(device.name, 64))
            self.stats["internal_errors"] += 1
            self._undecodable(device, f"console error: {type(exc).__name__}", now)
        return _acknowledge_anyway(body)

    def _understand(self, device: Device, body: bytes, now: float, counter: int) -> Reply:
        message = decode_body(body)
        if isinstance(message, Heartbeat):
            self._rolled_back(device, message.acked, counter, now)
            for code, data in health.on_heartbeat(device.health, message, now,
                                                  self.limits.health):
                self._raise(device, code, data, now)
            newer = self.store.settings_version(device.device_id) > message.settings_version
            return HeartbeatAck(flags=ACK_SETTINGS_PENDING if newer else 0,
                                console_time=int(now))
        if isinstance(message, SettingsGet):
            return self._settings_part(device, message.offset)
        return self._fragment(device, message, now)

    def _rolled_back(self, device: Device, acked: int, counter: int, now: float) -> None:
        """A heartbeat naming an acknowledged heartbeat above the floor we hold: our state went
        back.  Raised once per device and console start (a compromised device could otherwise
        raise it at will); an ``acked`` that is not below the frame's own counter is a lie."""
        if acked >= counter:
            self.stats["bad_acked"] += 1
        elif acked > device.beat_floor >= 0 and not device.rollback_reported:
            device.rollback_reported = True
            self._raise(device, EventCode.CONSOLE_STATE_ROLLED_BACK, {
                "ACKED": acked, "HELD": device.beat_floor}, now)
        device.beat_floor = max(device.beat_floor, counter)

    def _settings_part(self, device: Device, offset: int) -> SettingsPart:
        """A piece of the device's newest signed settings (it asks only in config mode)."""
        held = self.store.settings_of(device.device_id)
        if held is None:
            return SettingsPart(0, 0, 0, b"")
        version, wire = held
        offset = min(offset, len(wire))
        return SettingsPart(version, len(wire), offset, wire[offset:offset + SETTINGS_CHUNK])

    def _fragment(self, device: Device, frag: Fragment, now: float) -> Reply:
        key = (device.device_id, frag.msg_id)
        if key in self._pending_msgs or key in self._stored:
            return _complete(frag)
        # No database lookup for older messages (a retransmission after a lost acknowledgement,
        # beyond the recent ones): it is reassembled again and the commit's INSERT OR IGNORE
        # keeps one copy.  Saves a query per event; costs one round of fragments when it happens.
        try:
            whole, received = self._reassembler.add(device.device_id, frag, now)
            if whole is None:
                return FragmentAck(frag.msg_id, False, received, frag.count)
            event, text = decode_message_text(whole, orjson.loads)
            if event.code in CONSOLE_ONLY:
                raise DecodeError(f"event code {int(event.code)} is the console's own", offset=0)
        except CoalmineError as exc:  # authentic but unreadable: record it, let the device go on
            self._undecodable(device, exc.message, now, frag.msg_id)
            return _complete(frag)
        self._pending.append(NewEvent(device.device_id, frag.msg_id, int(event.code), text, now))
        self._pending_msgs.add(key)
        return _complete(frag)

    def _undecodable(self, device: Device, reason: str, now: float,
                     msg_id: int | None = None) -> None:
        self.stats["authentic_undecodable"] += 1  # "undecodable" counts unauthenticated junk
        self._raise(device, EventCode.MESSAGE_UNDECODABLE, {"REASON": reason}, now, msg_id)

    def _raise(self, device: Device, code: EventCode, data: dict[str, str | int], now: float,
               msg_id: int | None = None) -> None:
        """An event of the console's own about ``device`` (stored with the next commit)."""
        log.warning("%s: %s %s", inert(device.name, 64), code.name, data)
        device.dirty = True  # its status changed with it
        event = Event(code, now, data={k: inert(v) if isinstance(v, str) else v
                                       for k, v in data.items()})
        new = console_event(device.device_id, event, now, msg_id)
        self._pending.append(new)
        self._pending_msgs.add((device.device_id, new.msg_id))


def _acknowledge_anyway(body: bytes) -> Reply:
    """What lets a device move on from an authentic body the console could not use: the
    message id's completion if the body names one (a fragment), else a heartbeat's ack."""
    with contextlib.suppress(DecodeError):
        raw = unpad(body)
        if len(raw) >= 9 and raw[0] == FRAGMENT:
            return FragmentAck(int.from_bytes(raw[1:9], "big"), True, frozenset(), 0)
    return HeartbeatAck(flags=0, console_time=0)


def _complete(frag: Fragment) -> FragmentAck:
    """The acknowledgement that the whole message of ``frag`` is held."""
    return FragmentAck(frag.msg_id, True, _ALL[frag.count], frag.count)


_ALL = [frozenset(range(n)) for n in range(256)]  # every index of a message of n fragments
