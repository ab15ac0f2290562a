"""The console's side of pairing: pending requests, bounded and rate-limited, and the operator's
decisions (approve, reject, revoke).

A registration frame opens with the key it carries, so anyone who knows the console's public key
can send one: the console must not let strangers fill its memory, its disk or its CPU with them.
Pending requests are held in memory and in the ``pending`` table (so ``console pending`` and
``console approve`` in another process see them), at most ``max_pending`` of them; one that is
not repeated for ``pending_idle`` seconds is forgotten, and when the table is full the request
heard from longest ago makes room, so a device that keeps asking (every few seconds in config
mode) keeps its place.  Keys the console has not seen cost an X25519 operation each, so they are
admitted at ``new_per_second`` at most (a token bucket); known keys are answered from the cached
shared key.  Until the operator approves, nothing a pending device sends is stored.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

from console.store import NewEvent, PendingRow, Store, console_event
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.protocol.frame import Header
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import (
    PAIRING_NONCE_LEN,
    REG_PENDING,
    REG_REJECTED,
    RegisterAck,
)
from firmware.protocol.pairing import fingerprint
from firmware.protocol.text import inert
from firmware.shared.errors import DecodeError, UsageError

log = logging.getLogger(__name__)
EMITS = frozenset({EventCode.DEVICE_PAIRED, EventCode.DEVICE_REVOKED})


@dataclass(frozen=True)
class PairingLimits:
    max_pending: int = 64
    pending_idle: float = 600.0  # seconds a request is kept without being repeated
    new_per_second: float = 2.0  # unseen keys admitted per second (X25519 each)
    new_burst: int = 10


@dataclass(slots=True)
class Pending:
    device_id: bytes
    public_key: bytes
    key: bytes  # the shared key, computed once
    nonce: bytes
    code: str
    name: str
    first_seen: float
    last_seen: float
    highest: int  # highest counter heard: older registration frames are replays
    rejected: bool = False
    touched: bool = False  # last_seen changed since the last flush


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), -1.0

    def take(self, now: float) -> bool:
        if self.last >= 0:  # a clock stepped back adds nothing and takes nothing
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Registrations:
    """Pending pairing requests of one console (owned by the serving thread).

    The pairing nonce of a key is a keyed hash of it under a secret only this console holds:
    unpredictable to a stranger (so nobody grinds a key for a wanted code), yet the same every
    time that key asks, so a device that had to ask again (after an eviction or a restart)
    keeps its code, and a registration frame is never answered with two different nonces.
    """

    def __init__(self, private_key: OwnPrivateKey, store: Store,
                 limits: PairingLimits = PairingLimits()) -> None:
        self.private_key = private_key
        self.console_public = private_key.public().raw
        self._nonce_key = hashlib.blake2b(private_key.raw, digest_size=32,
                                          person=b"coalmine-pairkey").digest()
        self.store = store
        self.limits = limits
        self.bucket = TokenBucket(limits.new_per_second, limits.new_burst)
        self.pending: OrderedDict[bytes, Pending] = OrderedDict()  # least recently heard first
        self.rejected: dict[bytes, Pending] = {}  # refused for good: outside the bounded table
        self.reload(store.pending_rows())

    def nonce(self, public_key: bytes) -> bytes:
        return hashlib.blake2b(public_key, key=self._nonce_key,
                               digest_size=PAIRING_NONCE_LEN).digest()

    def shared_key(self, public_key: bytes) -> bytes | None:
        """The key shared with ``public_key`` (one X25519), None for a key that is no key."""
        try:
            return self.private_key.shared_key(PeerPublicKey(public_key))
        except DecodeError:
            return None

    def lookup(self, device_id: bytes) -> Pending | None:
        """A known request (pending or rejected), its shared key made if it was not yet."""
        entry = self.pending.get(device_id) or self.rejected.get(device_id)
        if entry is not None and not entry.key:
            entry.key = self.shared_key(entry.public_key) or bytes(32)  # 0s: opens nothing
        return entry

    def admit(self, public_key: bytes, header: Header, now: float) -> Pending | str:
        """A pending entry for an unseen key, or why not (a counted reason)."""
        if not self.bucket.take(now):
            return "registration_throttled"
        key = self.shared_key(public_key)
        if key is None:
            return "registration_bad_key"
        nonce = self.nonce(public_key)
        return Pending(header.device_id, public_key, key, nonce,
                       fingerprint(self.console_public, public_key, nonce), "", now, now, -1)

    def answer(self, entry: Pending, name: str, header: Header, now: float) -> RegisterAck | str:
        """The reply to an authentic registration from ``entry`` (new or known)."""
        if header.counter <= entry.highest:
            return "registration_replayed"
        if entry.rejected:  # for good: it never takes a place in the table again
            entry.highest, entry.touched = header.counter, True
            return RegisterAck(REG_REJECTED, entry.nonce)
        if entry.device_id not in self.pending:
            self._make_room(now)
            entry.name = inert(name, 32)
            self.pending[entry.device_id] = entry
            self.store.add_pending(self._row(entry))
            log.warning("pairing requested by device %s (suggests %r), code %s",
                        entry.device_id.hex(), entry.name, entry.code)
        entry.highest, entry.touched, entry.last_seen = header.counter, True, now
        self.pending.move_to_end(entry.device_id)
        return RegisterAck(REG_PENDING, entry.nonce)

    def _make_room(self, now: float) -> None:
        """Room for one more: the idle expire, then the request heard from longest ago goes."""
        self.expire(now)
        if len(self.pending) >= self.limits.max_pending:
            self.forget(next(iter(self.pending)))

    def expire(self, now: float) -> None:
        for entry in [e for e in self.pending.values()
                      if now - e.last_seen > self.limits.pending_idle]:
            self.forget(entry.device_id)

    def forget(self, device_id: bytes) -> None:
        if self.pending.pop(device_id, None) is not None:
            self.store.remove_pending(device_id)

    def flush(self, now: float) -> None:
        """Persist when requests were last heard and their counters (batched); forget idle ones."""
        entries = [*self.pending.values(), *self.rejected.values()]
        touched = [(e.device_id, e.last_seen, e.highest) for e in entries if e.touched]
        if touched:
            self.store.touch_pending(touched)
            for e in entries:
                e.touched = False
        self.expire(now)

    def reload(self, rows: list[PendingRow]) -> None:
        """Take the operator's decisions: approved requests left the table, rejected ones move
        out of it (kept, so the device is told, and never admitted again)."""
        by_id = {r.device_id: r for r in rows}
        for device_id in [d for d in self.pending if d not in by_id]:
            del self.pending[device_id]
        for row in rows:
            if row.state == "rejected":
                entry = self.pending.pop(row.device_id, None) or self.rejected.get(row.device_id)
                entry = entry or self._from_row(row)
                entry.rejected = True
                self.rejected[row.device_id] = entry
            elif row.device_id not in self.pending:
                self.pending[row.device_id] = self._from_row(row)

    @staticmethod
    def _from_row(row: PendingRow) -> Pending:
        """Its shared key is made when the device next asks (``lookup``)."""
        return Pending(row.device_id, row.public_key, b"", row.nonce, row.code, row.name,
                       row.first_seen, row.last_seen, row.highest)

    @staticmethod
    def _row(e: Pending) -> PendingRow:
        return PendingRow(e.device_id, e.public_key, e.nonce, e.code, e.name, e.first_seen,
                          e.last_seen, "rejected" if e.rejected else "pending", e.highest)


# --- the operator's decisions (the CLI, another process than `serve`) ---------------------------


def approve(store: Store, code: str, name: str | None, now: float) -> str:
    """Enroll the pending device whose code is ``code``; returns the name it got."""
    row = _find(store, code)
    if row.state == "rejected":
        raise UsageError(f"the request with code {code} was rejected",
                         hint="the device must ask again with a new key (config mode)")
    chosen = name or _default_name(row)
    event = _event(row.device_id, EventCode.DEVICE_PAIRED, {"FINGERPRINT": row.code}, now)
    store.approve_pending(row, chosen, now, event)
    return chosen


def reject(store: Store, code: str) -> None:
    store.reject_pending(_find(store, code).device_id)


def revoke(store: Store, name: str, now: float) -> None:
    device_id = store.device_id_of(name)
    store.revoke(device_id, now, _event(device_id, EventCode.DEVICE_REVOKED, {}, now))


def _find(store: Store, code: str) -> PendingRow:
    digits = "".join(c for c in code if not c.isspace())
    matches = [r for r in store.pending_rows() if r.code == digits]
    if not matches:
        raise UsageError(f"no pending pairing request with code {code!r}",
                         hint="list them with `console pending`; the device shows its code on "
                              "its serial console and as an LED blink code")
    if len(matches) > 1:  # two strangers' codes coincide: refuse rather than guess
        raise UsageError(f"{len(matches)} pending requests have code {digits}",
                         hint="reject both, and let the device ask again (it gets a new code)")
    return matches[0]


def _default_name(row: PendingRow) -> str:
    suggestion = "".join(c for c in row.name if c.isascii() and (c.isalnum() or c in "-_."))[:32]
    return f"{suggestion or 'device'}-{row.device_id.hex()[:6]}"


def _event(device_id: bytes, code: EventCode, data: dict[str, str | int], now: float
           ) -> NewEvent:
    return console_event(device_id, Event(code, now, data=data), now)
