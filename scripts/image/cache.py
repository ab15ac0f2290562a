"""Build caches that nobody but the builder can poison.

The build runs as root and runs what the stage cache holds (the base root filesystem's programs,
in a chroot), so whoever can write a cache owns the image and the build host.  Before a cache is
used, every directory from / down to the file must be a real directory (no symlink), owned by
root or the building user and writable by nobody else (OpenSSH's StrictModes rule), the cache's
own directory and files by the building user alone.  Anything else is refused with the fix,
never used.  Cached artifacts are keyed by their full inputs (the caller's key) and written through
:func:`firmware.shared.atomic.copy_atomic` (no symlink followed, whole or not at all); a stage
tarball carries a SHA-256 beside it, in the same protected directory, checked on every use, so
a torn or altered file is rebuilt instead of unpacked.  Every cache stays optional.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from firmware.shared.atomic import copy_atomic, write_atomic
from firmware.shared.errors import EnvironmentFault
from scripts.image.common import sha256_file

DIGEST_SUFFIX = ".sha256"


def _refuse(path: Path, why: str) -> EnvironmentFault:
    return EnvironmentFault(
        f"the cache path {path} {why}: a build as uid {os.geteuid()} would run what others "
        "can write there",
        hint="fix its owner or mode, remove it (every cache is optional: the next build makes "
             "it again), or point COALMINE_DL at a directory of your own")


def _check(path: Path, st: os.stat_result, *, leaf: bool) -> None:
    """OpenSSH's StrictModes rule: owned by root or this user, writable by nobody else (a
    sticky directory such as /tmp may be on the way, never be the cache itself)."""
    if st.st_uid not in (0, os.geteuid()) or (leaf and st.st_uid != os.geteuid()):
        raise _refuse(path, f"belongs to uid {st.st_uid}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and (leaf or not st.st_mode & stat.S_ISVTX):
        raise _refuse(path, f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})")


def trusted_dir(path: Path) -> Path:
    """``path`` (created 0700 if missing), checked from / down: real directories, owned by
    root or this user, writable by nobody else; the directory itself is this user's."""
    path = Path(os.path.abspath(path))
    for component in (*reversed(path.parents), path):  # checked before anything is made below
        if not os.path.lexists(component):
            with contextlib.suppress(FileExistsError):  # one level, below a checked parent
                os.mkdir(component, 0o700)
        st = os.lstat(component)
        if not stat.S_ISDIR(st.st_mode):  # lstat: a symlink is not a directory
            raise _refuse(component, "is not a plain directory (a symlink?)")
        _check(component, st, leaf=component == path)
    return path


def trusted_file(path: Path) -> bool:
    """Whether ``path`` exists as a regular file the builder alone can write (refused if it
    exists as anything else)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "is not a regular file (a symlink?)")
    _check(path, st, leaf=True)
    return True


def lookup(path: Path) -> bool:
    """A cached artifact that may be used: trusted, and its content matches its digest."""
    trusted_dir(path.parent)
    digest = path.with_name(path.name + DIGEST_SUFFIX)
    if not (trusted_file(path) and trusted_file(digest)):
        return False
    return digest.read_text().strip() == sha256_file(path)


def store(src: Path, path: Path) -> None:
    """Put ``src`` into the cache as ``path``, with its digest beside it."""
    trusted_dir(path.parent)
    copy_atomic(src, path, 0o600)
    write_atomic(path.with_name(path.name + DIGEST_SUFFIX),
                 (sha256_file(path) + "\n").encode())
