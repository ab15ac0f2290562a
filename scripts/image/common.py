"""Shared helpers for the image build: one ``run()`` for every subprocess, paths, progress.

Every build step shells out to Debian tools (mmdebstrap, mksquashfs, mkfs.vfat, sfdisk ...).
Keeping the subprocess call, the logging of the exact command and the error translation in one
place means a failing step always tells the user which command failed and how, and the build
code itself stays a list of plain steps.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from firmware.cli import report
from firmware.errors import CoalmineError, ConfigError, ToolError, UsageError

REPO = Path(__file__).resolve().parents[2]
BOARD_DIR = REPO / "board"
LOCK_FILE = BOARD_DIR / "common" / "packages.lock"
SUITE = "trixie"
ARCH = "arm64"
COMPONENTS = "main non-free-firmware"
VERBOSE = os.environ.get("V", "") not in ("", "0")


def cache_dir() -> Path:
    """Download cache outside the checkout (like Buildroot's dl/): reused, never required."""
    env = os.environ.get("COALMINE_DL")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coalmine" / "dl"


def list_file(path: Path) -> list[str]:
    """Entries of a list file, in order: one per line, ``#`` comments and blank lines skipped."""
    return [w for line in path.read_text().splitlines() if (w := line.split("#", 1)[0].strip())]


def board_files(board: str, name: str) -> list[Path]:
    """board/common/<name> then board/<board>/<name>, those that exist."""
    return [p for p in (BOARD_DIR / "common" / name, BOARD_DIR / board / name) if p.is_file()]


def board_config(board: str) -> dict[str, Any]:
    """board/<board>/board.toml."""
    with (BOARD_DIR / board / "board.toml").open("rb") as f:
        return tomllib.load(f)


def boards() -> list[str]:
    """Every folder under board/ except common is a board."""
    return sorted(p.name for p in BOARD_DIR.iterdir() if p.is_dir() and p.name != "common")


def check_board(board: str) -> Path:
    """Return board/<board>/ or raise a usage error listing the boards."""
    known = boards()
    if board not in known:
        raise UsageError(
            f"unknown BOARD={board!r}; boards: {', '.join(known)}",
            hint=f"run: make image BOARD={known[0]}",
        )
    return BOARD_DIR / board


_T0 = time.monotonic()


def stage(message: str) -> None:
    """Progress line for each build stage, with elapsed wall time."""
    elapsed = time.monotonic() - _T0
    print(f"==> [{elapsed:6.1f}s] {message}", flush=True)


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    capture: bool = False,
    quiet: bool = False,
) -> str:
    """Run one command (argv list, checked); return its stdout when ``capture``."""
    out = run_bytes(argv, env=env, cwd=cwd, stdin=stdin, capture=capture, quiet=quiet)
    return out.decode(errors="replace")


def run_bytes(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    capture: bool = True,
    quiet: bool = False,
) -> bytes:
    """Like ``run`` but stdout is returned as bytes (cpio archives, binary listings)."""
    args = [str(a) for a in argv]
    if VERBOSE or not quiet:
        print(f"    $ {shlex.join(args)}", flush=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    out = subprocess.PIPE if capture or (quiet and not VERBOSE) else None
    proc = subprocess.run(
        args, env=full_env, cwd=cwd, input=stdin, stdout=out, stderr=out, check=False
    )
    if proc.returncode != 0:
        detail = ""
        if out is not None:
            detail = (proc.stderr or b"").decode(errors="replace")[-3000:]
        raise ToolError(
            f"command failed ({proc.returncode}): {shlex.join(args)}\n{detail}".rstrip(),
            hint="rerun with V=1 for the full output",
        )
    return (proc.stdout or b"") if capture else b""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH: from the environment, else the last commit, else a documented constant.

    The fallback (2025-01-01) is for source tarballs without git history: the build stays
    reproducible, only the timestamps are less meaningful.
    """
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        if not env.isdigit():
            raise ConfigError(f"SOURCE_DATE_EPOCH={env!r} is not a number of seconds")
        return int(env)
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
        if out.isdigit():
            return int(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    return 1735689600


def host_mirror() -> str:
    """The Debian mirror: $COALMINE_MIRROR, else the host's apt sources (read at run time)."""
    env = os.environ.get("COALMINE_MIRROR")
    if env:
        return env.rstrip("/")
    candidates: list[Path] = [Path("/etc/apt/sources.list")]
    sdir = Path("/etc/apt/sources.list.d")
    if sdir.is_dir():
        candidates += sorted(sdir.glob("*.list")) + sorted(sdir.glob("*.sources"))
    for path in candidates:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            for url in re.findall(r"(https?://\S+)", line.split("#", 1)[0]):
                if str(url).rstrip("/").endswith("/debian"):
                    return str(url).rstrip("/")
    raise ConfigError(
        "no Debian mirror found in the host's apt sources",
        hint="set COALMINE_MIRROR to a Debian mirror URL (the one ending in /debian)",
    )


def fail(exc: Exception) -> None:
    """Entry-point error printer: message, hint, exit code.  Unexpected errors keep their trace."""
    if isinstance(exc, CoalmineError):
        sys.exit(report(exc))
    if isinstance(exc, OSError):  # full disk, missing file, permission: the OS says it best
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        print("hint: free space in out/ and ~/.cache/coalmine (df -h), check permissions "
              "(the build runs as root), then rerun", file=sys.stderr)
        sys.exit(1)
    raise exc
