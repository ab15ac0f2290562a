"""Boot the qemu-arm64 image against a host-side console and bring it to its armed state.

Shared by the image tests and the boot benchmark so both measure the same thing: the guest
gets coalmine.toml on its FAT partition (as a defender would write it) pointing its resolver
at unbound on the host (10.0.2.2 in QEMU's user network); its device key is read from the
serial console and enrolled; armed = the console has its first heartbeat.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware.shared.errors import EnvironmentFault
from scripts.image import qemu
from scripts.lab import Lab, device_toml, free_port


@dataclass
class Guest:
    proc: subprocess.Popen[bytes]
    serial: Path
    started: float = field(default_factory=time.monotonic)
    key_seen: float = 0.0
    armed: float = 0.0

    def log(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def wait_serial(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            if self.proc.poll() is not None:
                raise EnvironmentFault(f"QEMU exited ({self.proc.returncode}) before "
                                       f"{pattern!r}:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise EnvironmentFault(f"no {pattern!r} on the serial console after {timeout:.0f}s:\n"
                               + self.log()[-4000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def provisioning(lab: Lab, node: str, heartbeat: float) -> str:
    """coalmine.toml for a guest that talks to ``lab`` through QEMU's user network."""
    return device_toml(lab, node=node, resolver=f"10.0.2.2:{lab.resolver_port}",
                       heartbeat=heartbeat)


def boot(lab: Lab, src: Path, work: Path, *, node: str = "qemu-device",
         heartbeat: float = 5.0, card_extra: int = 64 << 20) -> Guest:
    """Provision a working copy of the image and start QEMU; SSH lands on lab.ssh_port.

    ``card_extra`` bytes are added to the disk, like a card larger than the image, so first
    boot has to grow the data partition.
    """
    toml = work / "coalmine.toml"
    toml.write_text(provisioning(lab, node, heartbeat))
    img = qemu.working_copy(src, work / "disk.img", toml)
    with img.open("r+b") as f:
        f.truncate(img.stat().st_size + card_extra)
    lab.ssh_port = free_port()
    serial = work / "serial.log"
    serial.unlink(missing_ok=True)
    argv = qemu.command(src, img, ssh_port=lab.ssh_port, serial=f"file:{serial}")
    return Guest(qemu.spawn(argv, work / "qemu.out"), serial)


def arm(lab: Lab, guest: Guest, *, node: str = "qemu-device", timeout: float = 600) -> None:
    """Read the device key from the serial console, enroll it, wait for the first heartbeat."""
    key = guest.wait_serial(r"coalmine: device public key (\S+)", timeout).group(1)
    guest.key_seen = time.monotonic()
    lab.enroll(node, key)
    lab.wait_for(lambda: "last_heartbeat=never" not in lab.console("devices"),
                 timeout, "the first heartbeat from the emulated device")
    guest.armed = time.monotonic()
