"""The console's persistent state in SQLite: device registry, events, sessions and statistics.

Events are kept in their validated compact form (what the device sent, after every check)
and rendered as OpenCanary JSON when shown, which keeps the console's hot path short.
SQLite (WAL, ``synchronous=FULL``) because a console is one process on one machine and needs
transactions, not a server.  Events are written in groups (``add_events``, one transaction per
round of queries) and only acknowledged to devices after that commit: a power cut of the console
host never loses an event a device was told is safe.  Counters and heartbeat health of ordinary
beacons are persisted in batches (``save_progress``, about once a second).  Every sqlite3 failure
becomes a ``StorageError`` with a hint (full disk, read-only file, corrupt database) through
:mod:`firmware.shared.sqlite`, so the CLI can say what to do.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from firmware.protocol.event import Event, from_compact, to_opencanary
from firmware.protocol.keys import PeerPublicKey
from firmware.shared.errors import DecodeError, StorageError, UsageError
from firmware.shared.sqlite import Database, hint_for

FORMAT = 3  # PRAGMA user_version of console.db
_MIGRATIONS = {2: ["ALTER TABLE devices ADD COLUMN revoked REAL"]}  # from format N to N + 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL UNIQUE,
    enrolled REAL NOT NULL,
    last_heartbeat REAL,
    uptime INTEGER,
    interval INTEGER,
    queue_depth INTEGER,
    oldest_age INTEGER,
    dropped INTEGER,
    rejected INTEGER,
    store_failed INTEGER,
    hb_flags INTEGER,
    status TEXT NOT NULL DEFAULT '',
    highest_counter INTEGER NOT NULL DEFAULT -1,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS pending (
    device_id BLOB PRIMARY KEY,
    public_key BLOB NOT NULL,
    nonce BLOB NOT NULL,
    code TEXT NOT NULL,
    name TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    state TEXT NOT NULL,
    highest INTEGER NOT NULL DEFAULT -1
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    device_id BLOB NOT NULL REFERENCES devices(device_id),
    msg_id INTEGER NOT NULL,
    logtype INTEGER NOT NULL,
    compact TEXT NOT NULL,
    received REAL NOT NULL,
    UNIQUE (device_id, msg_id)
);
CREATE TABLE IF NOT EXISTS sessions (
    device_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    session INTEGER NOT NULL,
    highest INTEGER NOT NULL,
    PRIMARY KEY (device_id, epoch)
);
CREATE TABLE IF NOT EXISTS stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (
    device_id BLOB PRIMARY KEY REFERENCES devices(device_id),
    version INTEGER NOT NULL,
    wire BLOB NOT NULL,
    changed REAL NOT NULL
);
"""
SESSIONS_KEPT = 1024  # per device: how far back a replayed frame is told from a restored device


@dataclass(frozen=True, slots=True)
class DeviceRow:
    rowid: int
    device_id: bytes
    name: str
    public_key: str
    enrolled: float
    last_heartbeat: float | None
    uptime: int | None
    interval: int | None
    queue_depth: int | None
    oldest_age: int | None
    dropped: int | None
    rejected: int | None
    store_failed: int | None
    hb_flags: int | None
    status: str
    highest_counter: int
    revoked: float | None = None


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A pairing request waiting for the operator (``state``: pending or rejected)."""

    device_id: bytes
    public_key: bytes
    nonce: bytes
    code: str
    name: str
    first_seen: float
    last_seen: float
    state: str
    highest: int = -1  # the highest counter heard: replays of older frames get no answer


@dataclass(frozen=True, slots=True)
class EventRow:
    """A stored event: its validated compact JSON (the wire form), rendered when shown."""

    id: int
    device: str
    msg_id: int
    logtype: int
    compact: str
    received: float

    def record(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        """OpenCanary's flat JSON, ``node_id`` from the registry (never from the device)."""
        try:
            obj = json.loads(self.compact)
        except (ValueError, RecursionError):
            raise DecodeError("stored event is not JSON", offset=0) from None
        event = from_compact(obj)  # validated again as it is shown (a newer console is stricter)
        return to_opencanary(event, self.device, mask_secrets=mask_secrets)


@dataclass(slots=True)  # not frozen: built for every event, and frozen costs ~3x to build
class NewEvent:
    """An event waiting for the next group commit."""

    device_id: bytes
    msg_id: int
    logtype: int
    compact: str
    received: float


def console_event(device_id: bytes, event: Event, now: float, msg_id: int | None = None
                  ) -> NewEvent:
    """An event the console raises itself about a device: negative message ids never meet a
    device's (non-negative) ones."""
    compact = json.dumps(event.to_compact(), separators=(",", ":"), ensure_ascii=False)
    return NewEvent(device_id, -1 - secrets.randbits(62) if msg_id is None else msg_id,
                    int(event.code), compact, now)


@dataclass(frozen=True, slots=True)
class Progress:
    """What a batch flush persists for one device (heartbeat fields None: unchanged)."""

    device_id: bytes
    highest_counter: int
    status: str
    last_heartbeat: float | None = None
    uptime: int | None = None
    interval: int | None = None
    queue_depth: int | None = None
    oldest_age: int | None = None
    dropped: int | None = None
    rejected: int | None = None
    store_failed: int | None = None
    hb_flags: int | None = None


_DEVICE_COLUMNS = ", ".join(f.name for f in fields(DeviceRow)[1:])  # all but rowid
_HEALTH = ("last_heartbeat", "uptime", "interval", "queue_depth", "oldest_age", "dropped",
           "rejected", "store_failed", "hb_flags")
# fixed column names; every value is bound as a parameter
_UPDATE_PROGRESS = (
    "UPDATE devices SET highest_counter = MAX(highest_counter, ?), status = ?, "  # noqa: S608
    + ", ".join(f"{c} = COALESCE(?, {c})" for c in _HEALTH) + " WHERE device_id = ?")


def sql_int(msg_id: int) -> int:
    """A 64-bit unsigned message id as SQLite's signed 64-bit integer."""
    return msg_id - (1 << 64) if msg_id >= 1 << 63 else msg_id


class Store:
    """One SQLite connection; used from one thread at a time."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.database = Database(path, schema=_SCHEMA, synchronous="FULL")
        self._db = self.database.db
        self._tx = self.database.transaction
        self._versions: dict[bytes, int] | None = None  # settings_version's memory
        with self._tx() as db:  # one writer at a time: a CLI and `serve` may start together
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                version = FORMAT
            while version in _MIGRATIONS:
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
                version += 1
            db.execute(f"PRAGMA user_version = {version}")
        if version != FORMAT:
            self.database.close()
            raise StorageError(f"database {self.path} has format {version}, not {FORMAT}",
                               hint="it was made by another coalmine version; start a new "
                                    "state directory with `console init`")

    def close(self) -> None:
        self.database.close()

    # --- registry -----------------------------------------------------------------------------

    def enroll(self, name: str, public_key: str, device_id: bytes, now: float) -> None:
        with self._tx() as db:
            self._enroll(db, name, public_key, device_id, now)

    @staticmethod
    def _enroll(db: sqlite3.Connection, name: str, public_key: str, device_id: bytes,
                now: float) -> None:
        clash = db.execute(
            "SELECT name FROM devices WHERE name = ? OR public_key = ? OR device_id = ?",
            (name, public_key, device_id),
        ).fetchone()
        if clash:
            raise UsageError(
                f"device {name!r} clashes with enrolled device {clash[0]!r}",
                hint="names, public keys and device ids must be unique; "
                "list them with `devices`",
            )
        db.execute(
            "INSERT INTO devices (device_id, name, public_key, enrolled) VALUES (?, ?, ?, ?)",
            (device_id, name, public_key, now),
        )

    def device_id_of(self, name: str) -> bytes:
        rows = self.database.rows("SELECT device_id FROM devices WHERE name = ?", (name,))
        if not rows:
            raise UsageError(f"no device named {name!r}", hint="list them with `devices`")
        return bytes(rows[0][0])

    def revoke(self, device_id: bytes, now: float, event: NewEvent) -> None:
        """Mark the device revoked (its beacons are dropped from now on) and record it."""
        with self._tx() as db:
            cur = db.execute("UPDATE devices SET revoked = ? WHERE device_id = ? "
                             "AND revoked IS NULL", (now, device_id))
            if cur.rowcount:  # revoked now, not before
                self._insert_events(db, [event])

    def revoked_ids(self) -> set[bytes]:
        rows = self.database.rows("SELECT device_id FROM devices WHERE revoked IS NOT NULL")
        return {bytes(r[0]) for r in rows}

    def data_version(self) -> int:
        """Changes whenever another connection (the CLI) committed: time to reload the registry."""
        return int(self.database.rows("PRAGMA data_version")[0][0])

    # --- signed settings ------------------------------------------------------------------------

    def settings_of(self, device_id: bytes) -> tuple[int, bytes] | None:
        """(version, signed wire form) of the device's newest settings, if it has any."""
        rows = self.database.rows("SELECT version, wire FROM settings WHERE device_id = ?",
                                  (device_id,))
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def settings_version(self, device_id: bytes) -> int:
        """The version of the device's newest settings (0: none), held in memory: every heartbeat
        asks, and a query each took a quarter of a heartbeat's CPU (bench/console_ingest).
        This connection's ``put_settings`` shows at once, another process's after
        ``forget_settings`` (the console calls it when ``data_version`` moves)."""
        if self._versions is None:
            self._versions = {bytes(d): int(v) for d, v in self.database.rows(
                "SELECT device_id, version FROM settings")}
        return self._versions.get(device_id, 0)

    def forget_settings(self) -> None:
        """Read the settings versions again at the next ``settings_version``."""
        self._versions = None

    def put_settings(self, device_id: bytes, version: int, wire: bytes, now: float) -> None:
        self._versions = None
        with self._tx() as db:
            db.execute("INSERT INTO settings VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE"
                       " SET version = excluded.version, wire = excluded.wire, "
                       "changed = excluded.changed WHERE excluded.version > settings.version",
                       (device_id, version, wire, now))

    # --- pairing requests ---------------------------------------------------------------------

    def pending_rows(self) -> list[PendingRow]:
        rows = self.database.rows("SELECT * FROM pending ORDER BY first_seen")
        return [PendingRow(bytes(r[0]), bytes(r[1]), bytes(r[2]), *r[3:]) for r in rows]

    def add_pending(self, row: PendingRow) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (row.device_id, row.public_key, row.nonce, row.code, row.name,
                        row.first_seen, row.last_seen, row.state, row.highest))

    def remove_pending(self, device_id: bytes) -> None:
        """Forget a request (evicted or idle): a rejection the CLI wrote meanwhile stays."""
        with self._tx() as db:
            db.execute("DELETE FROM pending WHERE device_id = ? AND state = 'pending'",
                       (device_id,))

    def touch_pending(self, seen: Sequence[tuple[bytes, float, int]]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE pending SET last_seen = ?, highest = MAX(highest, ?) "
                           "WHERE device_id = ?", [(t, h, d) for d, t, h in seen])

    def reject_pending(self, device_id: bytes) -> None:
        with self._tx() as db:
            db.execute("UPDATE pending SET state = 'rejected' WHERE device_id = ?", (device_id,))

    def approve_pending(self, row: PendingRow, name: str, now: float, event: NewEvent) -> None:
        """Enroll the device of a pairing request and record the approval, in one transaction."""
        with self._tx() as db:
            still = db.execute("SELECT highest FROM pending WHERE device_id = ? AND code = ? "
                               "AND state = 'pending'", (row.device_id, row.code)).fetchone()
            if still is None:
                raise UsageError("that pairing request is gone or was rejected meanwhile",
                                 hint="list them again with `console pending`")
            self._enroll(db, name, PeerPublicKey(row.public_key).text(), row.device_id, now)
            # its registrations so far stay replays: the replay floor starts above them
            db.execute("UPDATE devices SET highest_counter = ? WHERE device_id = ?",
                       (still[0], row.device_id))
            db.execute("DELETE FROM pending WHERE device_id = ?", (row.device_id,))
            self._insert_events(db, [event])

    def devices(self, after_rowid: int = 0) -> list[DeviceRow]:
        rows = self.database.rows(
            f"SELECT rowid, {_DEVICE_COLUMNS} FROM devices "  # noqa: S608 - fixed column names
            "WHERE rowid > ? ORDER BY rowid", (after_rowid,))
        return [DeviceRow(*row) for row in rows]

    def sessions(self, device_id: bytes) -> list[tuple[int, int, int]]:
        """(epoch, session, highest counter) of the newest epochs seen, oldest first."""
        rows = self.database.rows(
            "SELECT * FROM (SELECT epoch, session, highest FROM sessions WHERE device_id = ?"
            " ORDER BY epoch DESC LIMIT ?) ORDER BY epoch", (device_id, SESSIONS_KEPT))
        return [(int(e), int(s), int(h)) for e, s, h in rows]

    # --- events -------------------------------------------------------------------------------

    def has_message(self, device_id: bytes, msg_id: int) -> bool:
        """On the hot path (once per new message): one indexed lookup, no helper layers."""
        try:
            return self._db.execute("SELECT 1 FROM events WHERE device_id = ? AND msg_id = ?",
                                    (device_id, sql_int(msg_id))).fetchone() is not None
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path}: {exc}", hint=hint_for(str(exc))) from None

    def recent_messages(self, limit: int) -> list[tuple[bytes, int]]:
        """(device id, message id) of the newest ``limit`` stored events, oldest first."""
        rows = self.database.rows(
            "SELECT device_id, msg_id FROM (SELECT id, device_id, msg_id FROM events "
            "ORDER BY id DESC LIMIT ?) ORDER BY id", (limit,))
        return [(bytes(d), m + (1 << 64) if m < 0 else m) for d, m in rows]

    def add_events(self, events: Sequence[NewEvent]) -> int:
        """Store a group of events in one durable transaction; returns how many were new."""
        with self._tx() as db:
            before = db.total_changes
            self._insert_events(db, events)
            return db.total_changes - before

    @staticmethod
    def _insert_events(db: sqlite3.Connection, events: Sequence[NewEvent]) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO events (device_id, msg_id, logtype, compact, received)"
            " VALUES (?, ?, ?, ?, ?)",
            [(e.device_id, sql_int(e.msg_id), e.logtype, e.compact, e.received) for e in events])

    def events(self, limit: int | None = None) -> list[EventRow]:
        """The newest ``limit`` events (all when None), oldest first."""
        rows = self.database.rows(
            "SELECT * FROM (SELECT e.id, d.name, e.msg_id, e.logtype, e.compact, e.received"
            " FROM events e JOIN devices d ON d.device_id = e.device_id"
            " ORDER BY e.id DESC LIMIT ?) ORDER BY id",
            (-1 if limit is None else limit,))
        return [EventRow(*row) for row in rows]

    # --- batched progress and statistics ------------------------------------------------------

    def save_progress(self, progress: Sequence[Progress], stats: dict[str, int],
                      sessions: Sequence[tuple[bytes, int, int, int]] = ()) -> None:
        """Persist counters (only ever upwards), health, new sessions and statistics in one go."""
        with self._tx() as db:
            db.executemany(
                _UPDATE_PROGRESS,
                [(p.highest_counter, p.status, *(getattr(p, c) for c in _HEALTH), p.device_id)
                 for p in progress])
            db.executemany("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)", sessions)
            for device_id in {s[0] for s in sessions}:
                db.execute(
                    "DELETE FROM sessions WHERE device_id = ? AND epoch NOT IN (SELECT epoch "
                    "FROM sessions WHERE device_id = ? ORDER BY epoch DESC LIMIT ?)",
                    (device_id, device_id, SESSIONS_KEPT))
            db.executemany(
                "INSERT INTO stats (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                sorted(stats.items()))

    def stats(self) -> dict[str, int]:
        rows = self.database.rows("SELECT name, value FROM stats ORDER BY name")
        return {name: int(value) for name, value in rows}

    def counts(self) -> tuple[int, int]:
        """(devices, events) currently stored."""
        devices = self.database.rows("SELECT COUNT(*) FROM devices")[0][0]
        events = self.database.rows("SELECT COUNT(*) FROM events")[0][0]
        return int(devices), int(events)
