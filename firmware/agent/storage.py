"""Persistent state of the beacon agent on the data partition: device key and counter epoch.

Writes are atomic (temp file, fsync, rename, fsync the directory) so a power cut leaves either
the old or the new file, never a torn one.  The counter epoch is bumped and made durable
*before* the first frame of a run is sent, so counters never repeat across restarts.
"""

from __future__ import annotations

import os
from pathlib import Path

from firmware.errors import StorageError
from firmware.protocol.keys import OwnPrivateKey
from firmware.protocol.replay import MAX_EPOCH, MAX_SEQ, make_counter

KEY_FILE = "device.key"
EPOCH_FILE = "counter.epoch"


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}",
                           hint="check that the data partition is mounted and not full") from None


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


class CounterSource:
    """Hands out frame counters: a durable epoch per run plus an in-memory sequence."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / EPOCH_FILE
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

    def _read(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageError(f"cannot read {self.path}: {exc.strerror}") from None
        if not text.isdigit():
            raise StorageError(f"{self.path} is corrupt",
                               hint="remove it only together with device.key (re-pair)")
        return int(text)

    def _persist(self) -> None:
        if self.epoch > MAX_EPOCH:
            raise StorageError("counter epochs exhausted", hint="re-pair the device")
        write_atomic(self.path, f"{self.epoch}\n".encode())
