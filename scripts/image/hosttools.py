"""Preflight for the image build: the host tools it runs, and arm64 emulation (binfmt).

A fresh Debian machine has none of them.  Rather than failing deep inside a stage with
"command not found", the build checks first and names the exact command that fixes it
(``make image-deps`` as root installs scripts/deps/apt-image.txt and enables binfmt).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from firmware.shared.errors import EnvironmentFault, ToolError
from firmware.shared.proc import output
from scripts.image.common import REPO, list_file

# tool -> Debian package that ships it
TOOLS = {
    # qemu-user itself is not run by name (trixie has no qemu-aarch64-static): the binfmt
    # handler is what runs arm64 programs, checked below
    "mmdebstrap": "mmdebstrap", "arch-test": "arch-test",
    "mksquashfs": "squashfs-tools", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
    "sfdisk": "fdisk", "xz": "xz-utils", "cpio": "cpio",
    "apt-ftparchive": "apt-utils", "depmod": "kmod", "dpkg-deb": "dpkg", "chroot": "coreutils",
}
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def which(tool: str) -> str | None:
    for d in ("/usr/sbin", "/sbin"):
        if os.access(f"{d}/{tool}", os.X_OK):
            return f"{d}/{tool}"
    return shutil.which(tool)


def apt_list() -> list[str]:
    return list_file(REPO / "scripts/deps/apt-image.txt")


def check_host() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if which(tool) is None})
    if missing:
        raise ToolError(
            f"the image build needs Debian packages that are not installed: {' '.join(missing)}",
            hint="run as root: make image-deps   (or: apt-get install -y --no-install-recommends "
                 + " ".join(apt_list()) + ")")
    if not BINFMT.exists() or "enabled" not in BINFMT.read_text():
        raise EnvironmentFault(
            "arm64 programs cannot run on this host (no qemu-aarch64 binfmt handler)",
            hint="run as root: make image-deps   (it mounts binfmt_misc and runs "
                 "update-binfmts --enable qemu-aarch64)")
    if os.geteuid() != 0:
        raise EnvironmentFault("the image build must run as root (mmdebstrap --mode=root, "
                               "files owned by the image's users)",
                               hint="run: sudo make image")


def tool_versions() -> dict[str, str]:
    """Debian package -> version of every host tool the build runs (and the libraries whose
    version changed bytes before: libzstd1 under mksquashfs), from dpkg's database."""
    wanted = {*TOOLS.values(), "libzstd1", "liblzma5", "zlib1g", "tar", "apt", "qemu-user",
              "qemu-user-static", "python3"}
    out = output(["dpkg-query", "-W", "-f", "${Package} ${Version}\n"])
    pairs = (line.split(" ", 1) for line in out.splitlines() if " " in line)
    return {name: version for name, version in sorted(pairs) if name in wanted}
