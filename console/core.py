"""The console's pure core: what one query name under the zone means, and what to answer.

No sockets here (pattern "pure core, thin I/O shell"): ``Console.handle`` takes the raw labels
of a query name and its type and returns an ``Answer``; the server turns that into DNS wire
bytes.  Everything the name carries came from the network, so every step can fail and every
failure ends as a counted rejection and a NODATA answer, never an exception.

Resolvers send the same frame more than once: QNAME minimisation asks ``A`` for the full name
before the ``TXT``, and retries or resolver pools repeat queries.  The frame is processed at its
first sighting (any type) and its answer cached by (device id, counter), so every later query
for it gets byte-identical TXT data and causes no second effect.  Rejections are counted only
for TXT queries; minimisation's ``A`` probes for partial names would drown them otherwise.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from console.store import DeviceRow, Progress, Store
from firmware.errors import (
    AuthenticationError,
    CoalmineError,
    DecodeError,
    InputError,
    StorageError,
)
from firmware.protocol.event import decode_message, to_opencanary
from firmware.protocol.fragment import Reassembler
from firmware.protocol.frame import Header, open_body, parse_header, seal_reply
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import (
    Fragment,
    FragmentAck,
    Heartbeat,
    HeartbeatAck,
    Reply,
    decode_body,
    encode_reply,
)
from firmware.protocol.names import decode_labels
from firmware.protocol.replay import ReplayWindow, Verdict

log = logging.getLogger(__name__)
TYPE_TXT = 16
STAT_NAMES = (
    "queries", "accepted", "duplicate", "replayed", "auth_failed", "unknown_device",
    "undecodable", "events_stored", "storage_failed",
)


class Kind(enum.Enum):
    TXT = "txt"  # answer with the TXT data
    NODATA = "nodata"  # NOERROR, no answer, SOA in authority
    REFUSED = "refused"  # not our zone
    APEX = "apex"  # the zone itself: SOA/NS as asked


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    txt: bytes = b""


NODATA = Answer(Kind.NODATA)
REFUSED = Answer(Kind.REFUSED)
APEX = Answer(Kind.APEX)


@dataclass(slots=True)
class Device:
    """An enrolled device as the hot path needs it: shared key cached, replay window."""

    name: str
    device_id: bytes
    key: bytes
    window: ReplayWindow
    last_heartbeat: float | None = None
    uptime: int | None = None
    queue_depth: int | None = None
    dirty: bool = False


@dataclass(slots=True)
class _Cached:
    frame: bytes
    txt: bytes | None  # None: the frame was authentic but earned no reply (NODATA)
    served_txt: bool


@dataclass
class Limits:
    answer_cache: int = 65536
    replay_window: int = 4096


@dataclass
class Console:
    """Device registry, replay windows, answer cache and statistics around one ``Store``."""

    zone: str
    private_key: OwnPrivateKey
    store: Store
    limits: Limits = field(default_factory=Limits)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._zone = [label.encode("ascii").lower() for label in self.zone.strip(".").split(".")]
        self._devices: dict[bytes, Device] = {}
        self._last_rowid = 0
        self._cache: OrderedDict[tuple[bytes, int], _Cached] = OrderedDict()
        self._reassembler = Reassembler()
        loaded = self.store.stats()
        self.stats = {name: loaded.get(name, 0) for name in STAT_NAMES}
        self._saved_stats = loaded  # what the store holds: flush writes only when this differs
        self.refresh_registry()

    # --- registry and persistence -------------------------------------------------------------

    def refresh_registry(self) -> None:
        """Pick up devices enrolled since the last call (the CLI enrolls while we serve)."""
        for row in self.store.devices(after_rowid=self._last_rowid):
            self._last_rowid = row.rowid
            self._add_device(row)

    def _add_device(self, row: DeviceRow) -> None:
        peer = PeerPublicKey.from_text(row.public_key)
        self._devices[row.device_id] = Device(
            row.name, row.device_id, self.private_key.shared_key(peer),
            ReplayWindow(floor=row.highest_counter, size=self.limits.replay_window),
        )

    def flush(self) -> None:
        """Persist highest counters, heartbeat info and statistics (call about once a second).

        An idle console writes nothing: no transaction when no device and no counter changed.
        """
        dirty = [d for d in self._devices.values() if d.dirty]
        if dirty or self.stats != self._saved_stats:
            progress = [
                Progress(d.device_id, d.window.highest, d.last_heartbeat, d.uptime, d.queue_depth)
                for d in dirty
            ]
            self.store.save_progress(progress, self.stats)
            self._saved_stats = dict(self.stats)
        for device in dirty:
            device.dirty = False
        self.refresh_registry()

    # --- the hot path -------------------------------------------------------------------------

    def handle(self, labels: Sequence[bytes], qtype: int) -> Answer:
        """Answer one query name (raw labels, any letter case); never raises for any input."""
        self.stats["queries"] += 1
        try:
            return self._handle(labels, qtype)
        except StorageError as exc:  # the device retransmits under a new counter later
            self.stats["storage_failed"] += 1
            log.error("%s (%s)", exc.message, exc.hint)
            return NODATA
        except CoalmineError:
            self._reject("undecodable", qtype)
            return NODATA

    def _handle(self, labels: Sequence[bytes], qtype: int) -> Answer:
        n, z = len(labels), len(self._zone)
        if n < z or [label.lower() for label in labels[n - z :]] != self._zone:
            return REFUSED
        if n == z:
            return APEX
        try:
            frame = decode_labels([label.decode("latin-1") for label in labels[: n - z]])
            header = parse_header(frame)
        except DecodeError:
            return self._reject("undecodable", qtype)
        device = self._devices.get(header.device_id)
        if device is None:
            return self._reject("unknown_device", qtype)
        key = (header.device_id, header.counter)
        cached = self._cache.get(key)
        if cached is not None:
            return self._from_cache(cached, key, frame, qtype)
        return self._fresh(device, header, frame, qtype)

    def _from_cache(
        self, cached: _Cached, key: tuple[bytes, int], frame: bytes, qtype: int
    ) -> Answer:
        if cached.frame != frame:  # same device and counter, different bytes: forged
            return self._reject("auth_failed", qtype)
        self._cache.move_to_end(key)
        if qtype != TYPE_TXT:
            return NODATA
        if cached.served_txt:
            self.stats["duplicate"] += 1
        cached.served_txt = True
        return NODATA if cached.txt is None else Answer(Kind.TXT, cached.txt)

    def _fresh(self, device: Device, header: Header, frame: bytes, qtype: int) -> Answer:
        verdict = device.window.check(header.counter)
        if verdict is Verdict.TOO_OLD:
            return self._reject("replayed", qtype)
        if verdict is Verdict.DUPLICATE:  # seen, but its answer left the cache
            return self._reject("duplicate", qtype)
        try:
            body = open_body(device.key, header, frame)
        except AuthenticationError:
            return self._reject("auth_failed", qtype)
        device.window.accept(header.counter)
        device.dirty = True
        self.stats["accepted"] += 1
        reply = self._process(device, body)
        txt = None if reply is None else seal_reply(device.key, header, encode_reply(reply))
        self._remember((header.device_id, header.counter), _Cached(frame, txt, qtype == TYPE_TXT))
        if qtype != TYPE_TXT or txt is None:
            return NODATA
        return Answer(Kind.TXT, txt)

    def _remember(self, key: tuple[bytes, int], entry: _Cached) -> None:
        self._cache[key] = entry
        if len(self._cache) > self.limits.answer_cache:
            self._cache.popitem(last=False)

    def _reject(self, reason: str, qtype: int) -> Answer:
        if qtype == TYPE_TXT:
            self.stats[reason] += 1
        return NODATA

    # --- what an authentic body means ---------------------------------------------------------

    def _process(self, device: Device, body: bytes) -> Reply | None:
        try:
            message = decode_body(body)
        except DecodeError:
            self.stats["undecodable"] += 1
            return None
        now = self.clock()
        if isinstance(message, Heartbeat):
            device.last_heartbeat, device.uptime = now, message.uptime
            device.queue_depth = message.queue_depth
            return HeartbeatAck(flags=0, console_time=int(now))
        return self._fragment(device, message, now)

    def _fragment(self, device: Device, frag: Fragment, now: float) -> Reply | None:
        everything = frozenset(range(frag.count))
        if self.store.has_message(device.device_id, frag.msg_id):
            return FragmentAck(frag.msg_id, True, everything, frag.count)
        try:
            whole, received = self._reassembler.add(device.device_id, frag, now)
        except InputError:
            self.stats["undecodable"] += 1
            return None
        if whole is None:
            return FragmentAck(frag.msg_id, False, received, frag.count)
        self._store_event(device, frag.msg_id, whole, now)
        return FragmentAck(frag.msg_id, True, received, frag.count)

    def _store_event(self, device: Device, msg_id: int, message: bytes, now: float) -> None:
        try:
            event = decode_message(message)
        except DecodeError:  # authentic but unreadable: acknowledge so the device drops it
            self.stats["undecodable"] += 1
            return
        record = to_opencanary(event, device.name, mask_secrets=False)
        text = json.dumps(record, sort_keys=True, ensure_ascii=False)
        if self.store.add_event(
            device.device_id, msg_id, logtype=int(event.code), event_json=text, received=now,
            highest_counter=device.window.highest,
        ):
            self.stats["events_stored"] += 1
