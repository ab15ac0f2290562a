"""Giving a file the root oneshots write to the one service group that may read it.

The SSH host key and the HTTPS certificate are made by root before their honeypot starts and
only read by it: root owns them, the service's group reads them, nobody else sees them.  Both
oneshots use these two helpers so the rule is written once.
"""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

from firmware.shared.errors import ConfigError, StorageError


def group_id(group: str) -> int:
    """The id of ``group``; a missing group is a configuration error naming where it comes from."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"no group named {group!r}",
                          hint="the image's sysusers.d creates the service groups") from None


def own(path: Path, gid: int, mode: int, *, directory: bool = False) -> None:
    """Give ``path`` to this user and ``gid`` with exactly ``mode`` (a directory is made).

    Only what differs is changed: on the device tmpfiles.d has already made the directory
    2750 root:<service group>, and the oneshot's sandbox (RestrictSUIDSGID=) may not set a
    setgid bit itself.
    """
    try:
        if directory:
            path.mkdir(parents=True, exist_ok=True, mode=0o750)
        st = path.stat()
        if (st.st_uid, st.st_gid) != (os.getuid(), gid):
            os.chown(path, os.getuid(), gid)
        if stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
    except OSError as exc:
        raise StorageError(f"cannot set owner and mode of {path}: {exc.strerror or exc}",
                           hint="run it as root (on the device the service's root oneshot, "
                                "e.g. coalmine-ssh-hostkey.service, does)") from None
