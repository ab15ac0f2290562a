"""The agent's bounded persistent event queue (SQLite on the data partition).

Events wait here until the console has acknowledged them, so neither an agent restart nor a
console outage of hours loses any.  When the bound is hit the oldest events are dropped, and
the drop itself becomes an event (1101) so the console learns that something was lost.
Queue row ids (AUTOINCREMENT, never reused) double as message ids on the wire, which is what
lets the console deduplicate a message retransmitted under new counters.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from firmware.errors import StorageError
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event, encode_message

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL DEFAULT 'event',
    message BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Queued:
    id: int
    message: bytes


class EventQueue:
    """FIFO of encoded event messages with a bound on the number of ordinary events."""

    EMITS = frozenset({EventCode.EVENTS_DROPPED})

    def __init__(self, path: Path, max_events: int) -> None:
        self.max_events = max_events
        self.lock = threading.Lock()  # the receiver and sender threads share this connection
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open event queue {path}: {exc}",
                               hint="check the data partition; move a corrupt queue away") from None

    def put(self, event: Event) -> int:
        """Store ``event`` durably; drop the oldest ordinary events past the bound."""
        try:
            with self._tx():
                cur = self.db.execute("INSERT INTO queue (message) VALUES (?)",
                                      (encode_message(event),))
                excess = self._count("event") - self.max_events
                if excess > 0:
                    self.db.execute("DELETE FROM queue WHERE id IN (SELECT id FROM queue WHERE "
                                    "kind = 'event' ORDER BY id LIMIT ?)", (excess,))
                    self.db.execute("INSERT INTO meta VALUES ('dropped', ?) ON CONFLICT(key) "
                                    "DO UPDATE SET value = value + excluded.value", (excess,))
                return int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot queue event: {exc}",
                               hint="the data partition may be full") from None

    def report_drops(self, now: float | None = None) -> None:
        """Turn the drop counter into one EVENTS_DROPPED event, unless one is still pending."""
        try:
            with self._tx():
                row = self.db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
                if not row or not row[0] or self._count("drop"):
                    return
                event = Event(EventCode.EVENTS_DROPPED, time.time() if now is None else now,
                              data={"COUNT": int(row[0])})
                self.db.execute("INSERT INTO queue (kind, message) VALUES ('drop', ?)",
                                (encode_message(event),))
                self.db.execute("UPDATE meta SET value = 0 WHERE key = 'dropped'")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot record dropped events: {exc}") from None

    def oldest(self) -> Queued | None:
        with self.lock:
            row = self.db.execute("SELECT id, message FROM queue ORDER BY id LIMIT 1").fetchone()
        return Queued(int(row[0]), bytes(row[1])) if row else None

    def remove(self, item_id: int) -> None:
        try:
            with self._tx():
                self.db.execute("DELETE FROM queue WHERE id = ?", (item_id,))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot remove delivered event: {exc}") from None

    def depth(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT count(*) FROM queue").fetchone()[0])

    def dropped(self) -> int:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _count(self, kind: str) -> int:
        return int(self.db.execute("SELECT count(*) FROM queue WHERE kind = ?",
                                   (kind,)).fetchone()[0])
