"""Shared helpers for the image build: paths, boards, progress lines, the build's epoch.

Every build step shells out to Debian tools (mmdebstrap, mksquashfs, mkfs.vfat, sfdisk ...)
through :func:`firmware.shared.proc.run`, so a failing step always says which command failed and
how; entry points wrap their work in :func:`firmware.shared.cli.main_guard` with ``OS_HINT``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import tomllib
from pathlib import Path
from typing import Any

from firmware.shared.errors import ConfigError, ToolError, UsageError
from firmware.shared.proc import output

REPO = Path(__file__).resolve().parents[2]
BOARD_DIR = REPO / "board"
LOCK_FILE = BOARD_DIR / "common" / "packages.lock"
SUITE = "trixie"
ARCH = "arm64"
COMPONENTS = "main non-free-firmware"


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


OS_HINT = ("free space in out/ and ~/.cache/coalmine (df -h), check permissions (the build "
           "runs as root), then rerun")
_T0 = time.monotonic()


def stage(message: str) -> None:
    """Progress line for each build stage, with elapsed wall time."""
    elapsed = time.monotonic() - _T0
    print(f"==> [{elapsed:6.1f}s] {message}", flush=True)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_state() -> tuple[str | None, bool]:
    """(commit, dirty): the checkout's HEAD and whether anything differs from it (tracked or
    untracked files, ignored ones aside); (None, False) outside a git checkout."""
    if not (REPO / ".git").exists():
        return None, False
    try:
        commit = output(["git", "-C", REPO, "rev-parse", "HEAD"], timeout=60).strip()
        changes = output(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=all"],
                         timeout=60)
    except ToolError as exc:  # a checkout git refuses to read must not pass for no checkout
        raise ConfigError(f"cannot read the commit of {REPO}: {exc.message}",
                          hint="install git; as root on another user's checkout: git config "
                               f"--global --add safe.directory {REPO}") from None
    return commit, bool(changes.strip())


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
        out = output(["git", "-C", REPO, "log", "-1", "--format=%ct"], timeout=60).strip()
        if out.isdigit():
            return int(out)
    except ToolError:
        pass
    return 1735689600


def host_mirror(suffix: str = "/debian") -> str:
    """The Debian mirror: $COALMINE_MIRROR, else the host's apt sources (read at run time).
    ``suffix="/debian-security"`` finds the host's security mirror the same way."""
    env = os.environ.get("COALMINE_MIRROR")
    if env and suffix == "/debian":
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
                if str(url).rstrip("/").endswith(suffix):
                    return str(url).rstrip("/")
    raise ConfigError(
        "no Debian mirror found in the host's apt sources",
        hint="set COALMINE_MIRROR to a Debian mirror URL (the one ending in /debian)",
    )
