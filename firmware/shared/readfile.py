"""The one way a device daemon reads a small file another unit wrote: bounded, never raising,
never blocking.

The device's daemons hand each other state through files in /run (the mode, the pairing state,
fetched settings, the time of the last console contact).  The writer may be a compromised
service, so a reader takes at most a fixed number of bytes, follows no symlink, reads only a
regular file (a FIFO put in its place would block the reader forever) and treats anything else,
a missing or an unreadable file as "nothing there".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file ``path``; nothing if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, limit)
    except OSError:
        return b""
    finally:
        os.close(fd)
