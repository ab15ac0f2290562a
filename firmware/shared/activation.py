"""Sockets handed over by systemd (socket activation, sd_listen_fds(3)), read in one place.

A service that systemd socket-activates needs no capability to bind a low port and no network
access of its own: the listener is made by a ``.socket`` unit and arrives as descriptors 3, 4,
... with ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES``.  Both the honeypot services and the
console take their sockets this way; the protocol is parsed here, without python3-systemd (the
console's host may lack it), and the variables are removed once read, so nothing the process
starts mistakes them for its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

LISTEN_FDS_START = 3


def passed_fds(environ: Mapping[str, str], pid: int) -> list[tuple[int, str]]:
    """``(fd, name)`` of the sockets passed to process ``pid`` (none when not meant for it).

    ``LISTEN_PID`` must name this process (children inherit the variables and must not take
    the sockets), ``LISTEN_FDS`` counts the descriptors from 3 on and ``LISTEN_FDNAMES``
    (optional) names them, colon-separated.
    """
    if environ.get("LISTEN_PID", "") != str(pid):
        return []
    count = environ.get("LISTEN_FDS", "")
    if not count.isdigit():
        return []
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    return [(LISTEN_FDS_START + i, names[i] if i < len(names) else "")
            for i in range(int(count))]


def pick_fd(fds: Sequence[tuple[int, str]], name: str) -> int | None:
    """The descriptor meant for ``name``: the one named after it, else the only one passed."""
    named = [fd for fd, fd_name in fds if fd_name == name]
    if named:
        return named[0]
    return fds[0][0] if len(fds) == 1 else None


def take_passed_fds() -> list[tuple[int, str]]:
    """The descriptors systemd passed this process, made close-on-exec; the variables go."""
    fds = passed_fds(os.environ, os.getpid())
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    for fd, _ in fds:
        try:
            os.set_inheritable(fd, False)  # systemd hands them over inheritable
        except OSError:
            continue  # not open: whoever uses it reports that
    return fds
