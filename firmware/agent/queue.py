"""The agent's bounded persistent event queue (SQLite on the data partition).

Events wait here until the console has acknowledged them, so neither an agent restart nor a
console outage of hours loses any.  Each event gets a random 63-bit message id when it is queued:
ids never repeat across queue generations (a queue moved aside, a restored backup), so the
console never mistakes a new event for one it already holds.

At the bound, events are dropped oldest first, but the first queued event of every source (the
attacker's address) is kept while any other can go, so a flood from one address cannot push out
the only event of another; the drop itself becomes an event (1101).  A queue that cannot be
opened at start is moved aside and a new one begun, and that too is reported (1102): a device
never loses events in silence.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event, encode_message
from firmware.shared.atomic import private_dir
from firmware.shared.errors import StorageError
from firmware.shared.sqlite import Database

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id INTEGER NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'event',
    source TEXT NOT NULL DEFAULT '',
    first INTEGER NOT NULL DEFAULT 0,
    queued REAL NOT NULL,
    message BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_source ON queue (source);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
MSG_ID_BITS = 63
FORMAT = 2  # PRAGMA user_version of the queue file


@dataclass(frozen=True)
class Queued:
    id: int
    msg_id: int
    message: bytes


class EventQueue:
    """FIFO of encoded event messages with a bound on the number of ordinary events."""

    EMITS = frozenset({EventCode.EVENTS_DROPPED, EventCode.QUEUE_RESET})

    def __init__(self, path: Path, max_events: int) -> None:
        self.max_events = max_events
        self.reset_reason = ""
        private_dir(path.parent)
        try:
            self.database = _open(path)
        except StorageError as exc:  # corrupt: keep it for a person to look at, start anew
            self.reset_reason = exc.message
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            log.error("%s; moving it to %s and starting a new queue", exc.message, aside)
            for suffix in ("", "-wal", "-shm"):
                old = Path(f"{path}{suffix}")
                if old.exists():
                    old.replace(Path(f"{aside}{suffix}"))
            self.database = _open(path)
            self.db = self.database.db
            self.put(Event(EventCode.QUEUE_RESET, time.time(),
                           data={"REASON": self.reset_reason, "MOVED_TO": aside.name}),
                     kind="reset")
        self.db = self.database.db

    def put(self, event: Event, *, kind: str = "event") -> int:
        """Store ``event`` durably; past the bound drop others (see the module docstring)."""
        source = event.src_host if kind == "event" else ""
        with self.database.transaction() as db:
            first = bool(source) and db.execute(
                "SELECT 1 FROM queue WHERE source = ? LIMIT 1", (source,)).fetchone() is None
            msg_id = secrets.randbits(MSG_ID_BITS)
            db.execute("INSERT INTO queue (msg_id, kind, source, first, queued, message) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (msg_id, kind, source, int(first), time.time(), encode_message(event)))
            excess = self._count("event") - self.max_events
            if excess > 0:
                self._drop(excess)
            return msg_id

    def _drop(self, n: int) -> None:
        """Drop ``n`` ordinary events: oldest first, first-of-their-source last."""
        self.db.execute("DELETE FROM queue WHERE id IN (SELECT id FROM queue WHERE kind = "
                        "'event' ORDER BY first, id LIMIT ?)", (n,))
        self.db.execute("INSERT INTO meta VALUES ('dropped', ?) ON CONFLICT(key) "
                        "DO UPDATE SET value = value + excluded.value", (n,))
        self.db.execute("INSERT INTO meta VALUES ('dropped_total', ?) ON CONFLICT(key) "
                        "DO UPDATE SET value = value + excluded.value", (n,))

    def report_drops(self, now: float | None = None) -> None:
        """Turn the drop counter into one EVENTS_DROPPED event, unless one is still pending."""
        with self.database.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
            if not row or not row[0] or self._count("drop"):
                return
            event = Event(EventCode.EVENTS_DROPPED, time.time() if now is None else now,
                          data={"COUNT": int(row[0])})
            db.execute("INSERT INTO queue (msg_id, kind, queued, message) VALUES (?, 'drop', ?, ?)",
                       (secrets.randbits(MSG_ID_BITS), time.time(), encode_message(event)))
            db.execute("UPDATE meta SET value = 0 WHERE key = 'dropped'")

    def oldest(self) -> Queued | None:
        rows = self.database.rows("SELECT id, msg_id, message FROM queue ORDER BY id LIMIT 1")
        return Queued(int(rows[0][0]), int(rows[0][1]), bytes(rows[0][2])) if rows else None

    def remove(self, item_id: int) -> None:
        with self.database.transaction() as db:
            db.execute("DELETE FROM queue WHERE id = ?", (item_id,))

    def depth(self) -> int:
        return int(self.database.rows("SELECT count(*) FROM queue")[0][0])

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds the oldest queued event has waited (0 when the queue is empty)."""
        rows = self.database.rows("SELECT min(queued) FROM queue")
        if not rows or rows[0][0] is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - float(rows[0][0]))

    def dropped(self) -> int:
        """Events dropped at the bound over the queue's life (what heartbeats report)."""
        rows = self.database.rows("SELECT value FROM meta WHERE key = 'dropped_total'")
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        self.database.close()

    def _count(self, kind: str) -> int:
        return int(self.db.execute("SELECT count(*) FROM queue WHERE kind = ?",
                                   (kind,)).fetchone()[0])


def _open(path: Path) -> Database:
    """Open (or create) the queue; an unreadable file or another format raises StorageError."""
    database = Database(path, schema=_SCHEMA, synchronous="FULL")
    try:
        with database.guard():
            check = database.db.execute("PRAGMA quick_check").fetchone()
            if check and check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check[0]}")
            version = database.db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                database.db.execute(f"PRAGMA user_version = {FORMAT}")
            elif version != FORMAT:
                raise sqlite3.DatabaseError(f"queue format {version}, expected {FORMAT}")
    except StorageError:
        database.close()
        raise
    return database
