"""Run a command under what coalmine-portscan.service's sandbox enforces, without systemd.

The host's tests have no systemd to start units with, so this applies the two restrictions that
could break scapy, then execs the command: ``MemoryDenyWriteExecute=yes`` as the kernel's own
``PR_SET_MDWE`` (no mapping may become writable and executable; stricter than systemd's seccomp
version, which trixie's systemd also prefers where the kernel has it) and
``RestrictAddressFamilies=`` as a seccomp filter refusing ``socket(2)`` for every other family
with EAFNOSUPPORT, as systemd does.  Users and capabilities are setpriv(1)'s job.

    python -m tests.services.sandbox AF_UNIX,AF_PACKET,AF_NETLINK -- argv...
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct
import sys

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_SET_MDWE = 38, 22, 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
SECCOMP_MODE_FILTER = 2
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
# (AUDIT_ARCH_*, the socket(2) system call number)
ARCHES = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}


def seccomp_program(families: list[int]) -> list[tuple[int, int, int, int]]:
    arch, nr = ARCHES[platform.machine()]
    ld_w, jeq, ret = 0x20, 0x15, 0x06
    n = len(families)
    prog = [(ld_w, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, RET_ERRNO | errno.ENOSYS),
            (ld_w, 0, 0, 0), (jeq, 0, n + 2, nr), (ld_w, 0, 0, 16)]
    prog += [(jeq, n - i, 0, fam) for i, fam in enumerate(families)]
    prog += [(ret, 0, 0, RET_ERRNO | errno.EAFNOSUPPORT), (ret, 0, 0, RET_ALLOW)]
    return prog


def restrict(families: list[int]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for args in ((PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0),
                 (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)):
        if libc.prctl(*args) != 0:
            raise OSError(ctypes.get_errno(), f"prctl{args}")
    prog = seccomp_program(families)
    buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in prog))
    fprog = ctypes.create_string_buffer(struct.pack("@HP", len(prog), ctypes.addressof(buf)))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main() -> None:
    families = [int(getattr(socket, name)) for name in sys.argv[1].split(",")]
    assert sys.argv[2] == "--"
    restrict(families)
    os.execv(sys.argv[3], sys.argv[3:])


if __name__ == "__main__":
    main()
