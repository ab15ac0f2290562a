"""Two network namespaces joined by a veth pair, for tests that send real packets (nmap).

The target namespace holds the device's side (the port-scan detector), the other one the
scanner.  Addresses are TEST-NET-1 (192.0.2.0/24, RFC 5737) and a ULA prefix, on the veth pair
only; neither namespace has a default route, so nothing (replies to nmap's random decoys
included) can leave them.  Both namespaces are removed when the ``with`` block ends, whatever
happened inside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from types import TracebackType

TARGET_IP, SCANNER_IP = "192.0.2.1", "192.0.2.2"
TARGET_IP6, SCANNER_IP6 = "fd00:c0a1::1", "fd00:c0a1::2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class NetnsPair:
    def __init__(self, tag: str = "") -> None:
        suffix = f"{os.getpid() % 100000}{tag}"
        self.target, self.scanner = f"cm-t{suffix}", f"cm-s{suffix}"
        self.target_if, self.scanner_if = f"cmt{suffix}"[:15], f"cms{suffix}"[:15]

    def __enter__(self) -> NetnsPair:
        assert shutil.which("ip"), "iproute2 is missing"
        try:
            ip("netns", "add", self.target)
            ip("netns", "add", self.scanner)
            ip("link", "add", self.target_if, "netns", self.target, "type", "veth",
               "peer", "name", self.scanner_if, "netns", self.scanner)
            for ns, dev, v4, v6 in ((self.target, self.target_if, TARGET_IP, TARGET_IP6),
                                    (self.scanner, self.scanner_if, SCANNER_IP, SCANNER_IP6)):
                ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
                ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
                ip("-n", ns, "link", "set", dev, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()

    def remove(self) -> None:
        for ns in (self.target, self.scanner):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30,
                           check=False)

    def mac(self) -> str:
        """The target interface's MAC address (for frames sent to it by hand)."""
        out = subprocess.run(["ip", "-n", self.target, "-o", "link", "show", self.target_if],
                             check=True, capture_output=True, text=True, timeout=30).stdout
        return out.split("link/ether", 1)[1].split()[0]

    def in_target(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.target, *argv]

    def in_scanner(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.scanner, *argv]

    def nmap(self, *args: str, timeout: float = 120) -> str:
        """Run nmap in the scanner namespace (no host discovery: the target is known)."""
        path = shutil.which("nmap")
        assert path, "nmap is missing: `make deps` installs it (scripts/deps/apt-test.txt)"
        proc = subprocess.run(self.in_scanner(path, "-n", "-Pn", *args), capture_output=True,
                              text=True, timeout=timeout, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout


def wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
