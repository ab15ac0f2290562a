"""The replay floors, kept outside the database so that restoring a backup cannot lower them.

Each device's highest accepted counter is what stops recorded traffic from being accepted a
second time.  The database holds it too, but an operator who restores ``console.db`` from last
week's backup would roll it back and reopen a week of recorded frames to replay.  So the floors
are also written, atomically, to their own small file beside the database on every flush; at
start the console takes the higher of the two and reports any device whose database floor was
lower (a restored database).  With each floor goes the session of the device's newest epoch, so
frames recorded from that epoch are still recognised as replays after a database restore.  With
them goes the device's highest heartbeat counter: a device whose heartbeat names an acknowledged
heartbeat above it shows that the whole state directory went back (CONSOLE_STATE_ROLLED_BACK).
docs/console.md says what to back up and what never to restore.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from firmware.shared.atomic import write_atomic
from firmware.shared.errors import StorageError

log = logging.getLogger(__name__)
FILE = "floors"


# (highest counter, session of the newest epoch, highest heartbeat counter; -1: not known)
Floor = tuple[int, int, int]


def read(path: Path) -> dict[bytes, Floor]:
    """device id -> floor; a missing file is empty, a damaged line is skipped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}",
                           hint="check the state directory's permissions") from None
    out: dict[bytes, Floor] = {}
    for no, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        try:
            beat = int(fields[3]) if len(fields) > 3 else -1  # files before the column
            out[bytes.fromhex(fields[0])] = (int(fields[1]), int(fields[2], 16), beat)
        except (IndexError, ValueError):
            log.error("%s:%d: damaged line ignored", path, no)
    return out


def write(path: Path, floors: Mapping[bytes, Floor]) -> None:
    write_atomic(path, "".join(f"{d.hex()} {c} {s:08x} {h}\n"
                               for d, (c, s, h) in sorted(floors.items())).encode())


class Writer:
    """Writes the newest floors off the serving thread (two fsyncs must not stall answers).

    ``submit`` hands over a snapshot and returns at once; a newer snapshot replaces one not yet
    written.  ``close`` writes whatever is waiting and stops.  A failed write is logged and
    counted in ``failures`` (the next flush tries again).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failures = 0
        self._next: dict[bytes, Floor] | None = None
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="floors", daemon=True)
        self._thread.start()

    def submit(self, snapshot: Mapping[bytes, Floor]) -> None:
        with self._cond:
            self._next = dict(snapshot)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._next is None and not self._stop:
                    self._cond.wait()
                snapshot, self._next = self._next, None
                stopping = self._stop
            if snapshot is not None:
                try:
                    write(self.path, snapshot)
                except StorageError as exc:
                    self.failures += 1
                    log.error("%s (%s)", exc.message, exc.hint)
                except Exception:  # a bug must not end the writer silently
                    self.failures += 1
                    log.exception("writing %s failed", self.path)
            if stopping and snapshot is None:
                return
