"""Fixtures: a console core on a real SQLite store in tmp_path, and enrolled fake devices."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from console.core import Console
from console.handler import Responder
from console.store import Store
from firmware.protocol.keys import OwnPrivateKey
from tests.console.device import FakeDevice

ZONE = "c.test"


@dataclass
class Rig:
    path: Path
    key: OwnPrivateKey
    store: Store
    console: Console
    responder: Responder
    device: FakeDevice

    def enroll(self, name: str) -> FakeDevice:
        dev = FakeDevice(ZONE, self.key.public())
        self.store.enroll(name, dev.public_text, dev.device_id, time.time())
        self.console.refresh_registry()
        return dev

    def restart(self) -> None:
        """Flush and reopen everything from disk, as a console restart does."""
        self.console.close()
        self.store.close()
        self.store = Store(self.path)
        self.console = Console(ZONE, self.key, self.store)
        self.responder = Responder(self.console, ZONE, "ns." + ZONE, "hostmaster." + ZONE)


def make_rig(path: Path) -> Rig:
    key = OwnPrivateKey.generate()
    store = Store(path)
    console = Console(ZONE, key, store)
    responder = Responder(console, ZONE, "ns." + ZONE, "hostmaster." + ZONE)
    rig = Rig(path, key, store, console, responder, FakeDevice(ZONE, key.public()))
    rig.device = rig.enroll("pi-1")
    return rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = make_rig(tmp_path / "console.db")
    yield r
    r.store.close()
