"""The one way coalmine writes a file that must survive a power cut: whole or not at all.

Write a temporary file beside the target (created with its final mode, never wider), fsync it,
rename it over the target, then fsync the directory so the rename itself is durable.  A crash
leaves either the old or the new content, never a torn or empty file.  Keys, counters, settings
and the console's floors all go through here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from firmware.shared.errors import StorageError


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, dir_mode: int = 0o700) -> None:
    """Replace ``path`` with ``data`` durably; the file gets exactly ``mode`` (umask ignored)."""
    _replace(path, mode, dir_mode, lambda fd: _write_all(fd, data))


def copy_atomic(src: Path, path: Path, mode: int = 0o600) -> None:
    """Like :func:`write_atomic`, streamed from the file ``src`` (large files: cache entries)."""
    def fill(fd: int) -> None:
        with src.open("rb") as inp:
            for block in iter(lambda: inp.read(1 << 20), b""):
                _write_all(fd, block)

    _replace(path, mode, 0o700, fill)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _replace(path: Path, mode: int, dir_mode: int, fill: Callable[[int], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # the umask narrowed the mode given to open
            fill(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}",
                           hint="check that the disk is mounted, writable and not full") from None


def fsync_dir(directory: Path) -> None:
    """Make the directory entries under ``directory`` (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` if needed and set exactly ``mode``, whatever the umask or its old mode."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        os.chmod(path, mode)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}",
                           hint="check the path and its permissions") from None
    return path

