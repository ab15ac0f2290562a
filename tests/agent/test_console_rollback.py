"""A console whose whole state directory went back is noticed by the devices' heartbeats.

The real agent beacon talks to the real console core (tests/agent/fakes.py) with its state
directory on disk.  Restoring that directory from a backup (database and floors file together)
rolls the replay floors back; the next heartbeat names an acknowledged heartbeat the console no
longer remembers, and the console raises CONSOLE_STATE_ROLLED_BACK.  A console that merely
crashed before writing its newest floor must not raise it.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from console.core import Console
from console.store import Store
from firmware.agent.beacon import Beacon, Link
from firmware.agent.storage import CounterSource
from firmware.protocol.catalogue import EventCode
from firmware.protocol.keys import OwnPrivateKey
from firmware.protocol.messages import Heartbeat
from tests.agent.fakes import LoopbackConsole

ROLLED_BACK = int(EventCode.CONSOLE_STATE_ROLLED_BACK)


def device(tmp_path: Path, console: LoopbackConsole) -> Beacon:
    key = OwnPrivateKey.generate()
    console.enroll(key.public())
    return Beacon(Link(key, console.key.public(), console.zone), CounterSource(tmp_path / "dev"),
                  console)


def beat(beacon: Beacon, n: int = 1) -> None:
    for _ in range(n):
        beacon.heartbeat(Heartbeat(uptime=1, interval=60))


def reopen(console: LoopbackConsole, state: Path) -> None:
    """Stop the console (its last floors written or not) and start it again from ``state``."""
    console.core = Console(console.zone, console.key, Store(state / "console.db"),
                           state_dir=state, settings_key=console.settings_key)
    console.store = console.core.store


def test_a_restored_state_directory_is_raised(tmp_path: Path) -> None:
    state, backup = tmp_path / "state", tmp_path / "backup"
    console = LoopbackConsole(state)
    beacon = device(tmp_path, console)
    beat(beacon, 3)
    console.flush()
    backup.mkdir()
    with sqlite3.connect(backup / "console.db") as copy:  # last week's backup
        console.store._db.backup(copy)
    console.core.close()
    shutil.copy(state / "floors", backup / "floors")
    console.core.store.close()
    reopen(console, state)
    beat(beacon, 4)  # the week goes on
    console.core.close()
    console.store.close()
    for name in ("console.db", "floors"):  # the operator restores the whole directory
        shutil.copy(backup / name, state / name)
    reopen(console, state)
    assert not console.events(ROLLED_BACK)
    beat(beacon)
    raised = console.events(ROLLED_BACK)
    assert len(raised) == 1
    data = raised[0]["logdata"]
    assert data["ACKED"] > data["HELD"] >= 0
    beat(beacon, 3)  # once: the console holds the device's heartbeats again
    assert len(console.events(ROLLED_BACK)) == 1


def test_a_console_that_lost_only_its_last_write_raises_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    console = LoopbackConsole(state)
    beacon = device(tmp_path, console)
    beat(beacon, 3)
    console.flush()
    console.core.close()
    saved = (state / "floors").read_bytes()
    reopen(console, state)
    beat(beacon)  # answered, then the console host loses power before the floors are written
    (state / "floors").write_bytes(saved)
    console.core.close()
    console.store.close()
    (state / "floors").write_bytes(saved)
    reopen(console, state)
    beat(beacon, 3)
    assert not console.events(ROLLED_BACK)
