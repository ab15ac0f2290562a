"""The console's persistent state in SQLite: device registry, events, counters and statistics.

SQLite (WAL) because a console is one process on one machine and needs transactions, not a
server: an event and its device's highest counter are written in one transaction, and counters
of ordinary beacons are persisted in batches (``save_progress``, about once a second) so the hot
path never waits for a disk sync.  Every sqlite3 failure becomes a ``StorageError`` with a hint
(full disk, read-only file, corrupt database), so the CLI can say what to do.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from firmware.errors import StorageError, UsageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL UNIQUE,
    enrolled REAL NOT NULL,
    last_heartbeat REAL,
    uptime INTEGER,
    queue_depth INTEGER,
    highest_counter INTEGER NOT NULL DEFAULT -1
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    device_id BLOB NOT NULL REFERENCES devices(device_id),
    msg_id INTEGER NOT NULL,
    logtype INTEGER NOT NULL,
    event_json TEXT NOT NULL,
    received REAL NOT NULL,
    UNIQUE (device_id, msg_id)
);
CREATE TABLE IF NOT EXISTS stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class DeviceRow:
    rowid: int
    device_id: bytes
    name: str
    public_key: str
    enrolled: float
    last_heartbeat: float | None
    uptime: int | None
    queue_depth: int | None
    highest_counter: int


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    device: str
    msg_id: int
    logtype: int
    event_json: str
    received: float


@dataclass(frozen=True, slots=True)
class Progress:
    """What a batch flush persists for one device."""

    device_id: bytes
    highest_counter: int
    last_heartbeat: float | None
    uptime: int | None
    queue_depth: int | None


@contextlib.contextmanager
def _guard(path: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc)
        if "full" in text:
            hint = "free disk space on the state directory's file system"
        elif "readonly" in text or "read-only" in text:
            hint = "make the state directory writable by the console's user"
        elif "not a database" in text or "malformed" in text:
            hint = "the database is corrupt: restore it from a backup or move it aside"
        else:
            hint = "check the state directory and the database file"
        raise StorageError(f"database {path}: {text}", hint=hint) from None


class Store:
    """One SQLite connection; used from one thread at a time."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        with _guard(self.path):
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with _guard(self.path):
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with _guard(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite already rolled back on some errors (FULL)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- registry -----------------------------------------------------------------------------

    def enroll(self, name: str, public_key: str, device_id: bytes, now: float) -> None:
        with self._tx() as db:
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

    def devices(self, after_rowid: int = 0) -> list[DeviceRow]:
        with _guard(self.path):
            rows = self._db.execute(
                "SELECT rowid, device_id, name, public_key, enrolled, last_heartbeat, uptime,"
                " queue_depth, highest_counter FROM devices WHERE rowid > ? ORDER BY rowid",
                (after_rowid,),
            ).fetchall()
        return [DeviceRow(*row) for row in rows]

    # --- events -------------------------------------------------------------------------------

    def has_message(self, device_id: bytes, msg_id: int) -> bool:
        with _guard(self.path):
            row = self._db.execute(
                "SELECT 1 FROM events WHERE device_id = ? AND msg_id = ?", (device_id, msg_id)
            ).fetchone()
        return row is not None

    def add_event(
        self, device_id: bytes, msg_id: int, *, logtype: int, event_json: str, received: float,
        highest_counter: int,
    ) -> bool:
        """Store an event and its device's counter in one transaction; False if already stored."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO events (device_id, msg_id, logtype, event_json, received)"
                " VALUES (?, ?, ?, ?, ?)",
                (device_id, msg_id, logtype, event_json, received),
            )
            db.execute(
                "UPDATE devices SET highest_counter = MAX(highest_counter, ?) WHERE device_id = ?",
                (highest_counter, device_id),
            )
            return cur.rowcount == 1

    def events(self, limit: int | None = None) -> list[EventRow]:
        """The newest ``limit`` events (all when None), oldest first."""
        with _guard(self.path):
            rows = self._db.execute(
                "SELECT * FROM (SELECT e.id, d.name, e.msg_id, e.logtype, e.event_json, e.received"
                " FROM events e JOIN devices d ON d.device_id = e.device_id"
                " ORDER BY e.id DESC LIMIT ?) ORDER BY id",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [EventRow(*row) for row in rows]

    # --- batched progress and statistics ------------------------------------------------------

    def save_progress(self, progress: list[Progress], stats: dict[str, int]) -> None:
        """Persist counters (only ever upwards), heartbeat info and statistics in one go."""
        with self._tx() as db:
            db.executemany(
                "UPDATE devices SET highest_counter = MAX(highest_counter, ?),"
                " last_heartbeat = COALESCE(?, last_heartbeat), uptime = COALESCE(?, uptime),"
                " queue_depth = COALESCE(?, queue_depth) WHERE device_id = ?",
                [
                    (p.highest_counter, p.last_heartbeat, p.uptime, p.queue_depth, p.device_id)
                    for p in progress
                ],
            )
            db.executemany(
                "INSERT INTO stats (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                sorted(stats.items()),
            )

    def stats(self) -> dict[str, int]:
        with _guard(self.path):
            rows = self._db.execute("SELECT name, value FROM stats ORDER BY name").fetchall()
        return {name: int(value) for name, value in rows}

    def counts(self) -> tuple[int, int]:
        """(devices, events) currently stored."""
        with _guard(self.path):
            devices = self._db.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
            events = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return int(devices), int(events)
