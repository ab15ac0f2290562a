"""Persistent state of the beacon agent on the data partition: device key and counter epoch.

Writes go through :func:`firmware.shared.atomic.write_atomic`, so a power cut leaves either
the old or the new file, never a torn one.  The counter epoch is bumped and made durable
*before* the first frame of a run is sent, so counters only grow across restarts; each run also
draws a random 32-bit session that goes into every nonce, so a data partition restored from a
backup (or a cloned card), whose epoch went back, still never repeats a nonce.  When the console
answers that a counter is stale (:class:`~firmware.protocol.messages.Stale`), ``jump`` moves the
epoch past the console's highest counter and persists it.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path

from firmware.protocol.frame import MAX_SESSION
from firmware.protocol.keys import OwnPrivateKey
from firmware.protocol.replay import MAX_EPOCH, MAX_SEQ, SEQ_BITS, make_counter
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import StorageError

KEY_FILE = "device.key"
EPOCH_FILE = "counter.epoch"
log = logging.getLogger(__name__)


def load_or_create_key(data_dir: Path) -> tuple[OwnPrivateKey, bool]:
    """The device's own key; created on first start.  Returns (key, created)."""
    path = data_dir / KEY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        key = OwnPrivateKey.generate()
        write_atomic(path, key.raw)
        return key, True
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) != 32:
        raise StorageError(f"{path} is {len(raw)} bytes, not a 32-byte key",
                           hint="the key file is corrupt: move it away to re-pair the device")
    return OwnPrivateKey(raw), False


def set_key_aside(data_dir: Path, why: str) -> Path:
    """Move the device key out of the way (kept for a person to look at): the next
    ``load_or_create_key`` makes a new one."""
    path = data_dir / KEY_FILE
    aside = data_dir / f"{KEY_FILE}.{why}-{int(time.time())}"
    try:
        path.replace(aside)
    except OSError as exc:
        raise StorageError(f"cannot move {path} aside: {exc.strerror}") from None
    return aside


class CounterSource:
    """Hands out (session, counter) pairs: a durable epoch per run plus an in-memory sequence."""

    def __init__(self, data_dir: Path, session: int | None = None) -> None:
        self.path = data_dir / EPOCH_FILE
        self.session = secrets.randbelow(MAX_SESSION + 1) if session is None else session
        self.epoch = self._read() + 1
        self._persist()
        self.seq = 0

    def next(self) -> int:
        if self.seq > MAX_SEQ:
            self.epoch += 1
            self._persist()
            self.seq = 0
        counter = make_counter(self.epoch, self.seq)
        self.seq += 1
        return counter

    def jump(self, highest: int) -> None:
        """Continue above ``highest`` (the console's floor for this device), durably."""
        epoch = (highest >> SEQ_BITS) + 1
        if epoch > self.epoch:
            self.epoch = epoch
            self._persist()
            self.seq = 0

    def _read(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageError(f"cannot read {self.path}: {exc.strerror}") from None
        if not text.isdigit():  # survivable: the session keeps nonces unique, the console
            log.error("%s is corrupt; starting at epoch 1 until the console says where to "
                      "continue", self.path)  # answers Stale and the device jumps ahead
            return 0
        return int(text)

    def _persist(self) -> None:
        if self.epoch > MAX_EPOCH:
            raise StorageError("counter epochs exhausted", hint="re-pair the device")
        write_atomic(self.path, f"{self.epoch}\n".encode())
