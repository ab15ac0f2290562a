"""The one SQLite helper: private database files, transactions, and errors a person can act on.

The device's event queue and the console's store both keep their state in SQLite (WAL).  Both
need the same three things, done once here: the file is created 0600 whatever the umask (the
console's holds passwords attackers typed; WAL and SHM files inherit the mode), every
transaction is ``BEGIN IMMEDIATE`` ... ``COMMIT`` with a rollback that never hides the original
error (SQLite has already rolled back after a full disk), and every ``sqlite3.Error`` becomes a
``StorageError`` whose hint says what to do (free space, fix permissions, restore a backup).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from firmware.shared.errors import StorageError


def hint_for(text: str) -> str:
    """What to do about an SQLite error message."""
    if "full" in text:
        return "free disk space on the file system that holds the database"
    if "readonly" in text or "read-only" in text:
        return "make the database and its directory writable by this program's user"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return "the database is corrupt: restore it from a backup or move it aside"
    if "locked" in text or "busy" in text:
        return "another program holds the database; stop it or try again"
    return "check the database file and its directory"


class Database:
    """One connection shared by the threads of one process (serialised by ``lock``)."""

    def __init__(self, path: Path | str, *, schema: str, synchronous: str = "FULL",
                 mode: int = 0o600) -> None:
        self.path = str(path)
        self.lock = threading.RLock()
        with self.guard():
            if self.path != ":memory:":
                _create_private(Path(self.path), mode)
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                if self.path != ":memory:":
                    self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute(f"PRAGMA synchronous={synchronous}")
                self.db.execute("PRAGMA busy_timeout=5000")
                self.db.executescript(schema)
            except sqlite3.Error:
                self.db.close()
                raise

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn any SQLite failure inside the block into a ``StorageError`` with a hint."""
        try:
            yield
        except sqlite3.Error as exc:
            text = str(exc)
            raise StorageError(f"database {self.path}: {text}", hint=hint_for(text)) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls back and propagates."""
        with self.lock, self.guard():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:  # SQLite already rolled back after FULL/IOERR
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error:
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read-only query outside any transaction."""
        with self.lock, self.guard():
            return self.db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self.lock, self.guard():
            self.db.close()


def _create_private(path: Path, mode: int) -> None:
    """Create the database file with ``mode`` before SQLite does (it would use the umask)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise sqlite3.OperationalError(f"unable to open database file: {exc.strerror}") from None
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
