"""The real console core behind the agent's ``Transport`` interface, for agent tests.

No DNS and no sockets: a query name goes straight into ``console.core.Console.handle`` (with a
commit, as the server does after each round), so agent tests exercise the real console end to
end.  ``down`` makes it fail like an unreachable resolver; every (session, counter) the agent
uses is recorded so a test can prove that no nonce is ever used twice.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from console.core import Console, Kind
from console.store import Store
from firmware.protocol import frame, names
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.settings import verify_key_of
from firmware.shared.errors import TransportError

TXT = 16


class LoopbackConsole:
    def __init__(self, state: Path, zone: str = "c.test") -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.key = OwnPrivateKey.generate()
        self.zone = zone
        self.store = Store(state / "console.db")
        self.settings_seed = os.urandom(32)
        self.settings_key = verify_key_of(self.settings_seed)
        self.core = Console(zone, self.key, self.store, state_dir=state,
                            settings_key=self.settings_key)
        self.lock = threading.Lock()
        self.down = False
        self.queries = 0
        self.nonces: list[tuple[bytes, int, int]] = []

    def enroll(self, public: PeerPublicKey, name: str = "dev") -> None:
        with self.lock:
            self.store.enroll(name, public.text(), public.device_id(), time.time())
            self.core.refresh_registry()

    def exchange(self, qname: str) -> bytes:
        with self.lock:
            self.queries += 1
            if self.down:
                raise TransportError("console unreachable (test)")
            labels = names.split_name(qname, self.zone)
            assert labels is not None, qname
            data = names.decode_labels(labels)
            header = (frame.parse_register(data)[1] if data[0] == frame.KIND_REGISTER
                      else frame.parse_header(data))
            self.nonces.append((header.device_id, header.session, header.counter))
            answer = self.core.handle([x.encode() for x in qname.rstrip(".").split(".")], TXT)
            committed = self.core.commit()
            if answer.kind is not Kind.TXT or (answer.durable and not committed):
                raise TransportError(f"console answered {answer.kind.value}")
            return answer.txt

    def flush(self) -> None:
        with self.lock:
            self.core.flush()

    def operator(self) -> Store:
        """A connection of its own, as the CLI (``console approve``) has."""
        return Store(self.store.path)

    def events(self, logtype: int | None = None) -> list[dict[str, Any]]:
        with self.lock:
            self.core.commit()
            rows = [r.record(mask_secrets=False) for r in self.store.events()]
        return [r for r in rows if logtype is None or r["logtype"] == logtype]

    def nonces_unique(self) -> bool:
        return len(set(self.nonces)) == len(self.nonces)
