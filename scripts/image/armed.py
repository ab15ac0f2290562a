"""Boot the qemu-arm64 image against a host-side console and bring it to its armed state.

Shared by the image tests and the boot benchmark so both measure the same thing: the guest
gets coalmine.toml on its FAT partition (as a defender would write it) pointing its resolver
at unbound on the host (10.0.2.2 in QEMU's user network); the fresh card starts in config mode
and asks to pair, and the code on its serial console is approved at the console, as an operator
does it; armed = the console has its first heartbeat.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.shared.errors import EnvironmentFault
from scripts.image import qemu
from scripts.lab import Lab, device_toml, free_port

PULSE = 0.1  # seconds QEMU's gpio-key holds the line after each system_powerdown
RELEASED = 0.9  # seconds a press() leaves the button up before it returns


@dataclass
class Guest:
    proc: subprocess.Popen[bytes]
    serial: Path
    qmp: Path
    started: float = field(default_factory=time.monotonic)
    code_seen: float = 0.0  # the pairing code on the serial console
    pending: float = 0.0  # the pairing request listed at the console
    approved: float = 0.0
    armed: float = 0.0  # the first heartbeat at the console
    forwards: dict[int, int] = field(default_factory=dict)  # guest port -> host port
    argv: list[str] = field(default_factory=list)  # how QEMU was started (power_cycle)

    @contextlib.contextmanager
    def machine(self) -> Iterator[Callable[..., None]]:
        """A QMP session: ``execute(command, **arguments)``, refused commands raise."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as qmp:
            qmp.settimeout(10)
            qmp.connect(str(self.qmp))
            reader = qmp.makefile("rb")
            reader.readline()  # the greeting

            def execute(command: str, **arguments: object) -> None:
                qmp.sendall(json.dumps({"execute": command, "arguments": arguments}).encode()
                            + b"\n")
                while True:  # asynchronous events come in between: skip to the reply
                    reply = json.loads(reader.readline() or b"{}")
                    if "return" in reply:
                        return
                    if "event" not in reply:
                        raise EnvironmentFault(f"QEMU refused {command}: {reply}")

            execute("qmp_capabilities")
            yield execute

    def forward(self, guest_address: str, guest_port: int) -> int:
        """A new forward from a host port to ``guest_address`` (QEMU's forwards made at start
        name the address of the guest's first DHCP lease; a new MAC address gets another)."""
        port = free_port()
        with self.machine() as execute:
            rule = f"tcp:127.0.0.1:{port}-{guest_address}:{guest_port}"
            execute("human-monitor-command",
                    **{"command-line": f"hostfwd_add {qemu.NETDEV} {rule}"})
        return port

    def press(self, seconds: float) -> None:
        """Hold the board's button for ``seconds``: QEMU's power button is wired to GPIO line 3,
        each ``system_powerdown`` raises it for 100 ms, so repeating it every 50 ms holds it.
        Returns once the button has been let go for ``RELEASED`` seconds: a press begun
        sooner would only re-arm the last pulse, and two presses would be one long one (the
        guest also needs the low level to outlast its debounce, in the kernel and the daemon)."""
        with self.machine() as execute:
            end = time.monotonic() + seconds
            while True:
                execute("system_powerdown")
                if time.monotonic() >= end:
                    break
                time.sleep(0.05)
        time.sleep(PULSE + RELEASED)

    def card_writes(self, stalled: bool) -> None:
        """Make the card stop completing writes (one byte a second: a hung SD card) or heal it;
        reads go on, so what runs from the page cache and the read-only root keeps running.
        The throttle sits on the virtio device's block backend (its QOM path), not the PCI
        proxy that carries the id."""
        rate = 1 if stalled else 0
        backend = f"/machine/peripheral/{qemu.DISK_ID}/virtio-backend"
        with self.machine() as execute:
            execute("block_set_io_throttle", id=backend, bps=0, bps_rd=0, bps_wr=rate, iops=0,
                    iops_rd=0, iops_wr=rate)

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

    def power_cycle(self) -> None:
        """Pull the plug and power on again with the same card (what the boot before printed
        is kept beside the serial log as ``serial.log.1``)."""
        self.stop()
        self.serial.replace(self.serial.with_name(self.serial.name + ".1"))
        self.qmp.unlink(missing_ok=True)
        self.proc = qemu.spawn(self.argv, self.serial.with_name("qemu.out"))
        self.started = time.monotonic()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def provisioning(lab: Lab, node: str, heartbeat: float,
                 limits: dict[str, Any] | None = None) -> str:
    """coalmine.toml for a guest that talks to ``lab`` through QEMU's user network; it pairs
    over DNS in config mode, which a fresh card's first boot enters by itself."""
    return device_toml(lab, node=node, resolver=f"10.0.2.2:{lab.resolver_port}",
                       heartbeat=heartbeat, enrolled=False, limits=limits)


def boot(lab: Lab, src: Path, work: Path, *, node: str = "qemu-device",
         heartbeat: float = 5.0, card_extra: int = 64 << 20,
         guest_ports: tuple[int, ...] = (), limits: dict[str, Any] | None = None) -> Guest:
    """Provision a working copy of the image and start QEMU; SSH lands on lab.ssh_port, each
    of ``guest_ports`` on the host port ``Guest.forwards`` names.

    The guest has a second network adapter (eth1) that it must keep down and report.

    ``card_extra`` bytes are added to the disk, like a card larger than the image, so first
    boot has to grow the data partition.  ``limits``: a ``[limits]`` table for coalmine.toml.
    """
    toml = work / "coalmine.toml"
    toml.write_text(provisioning(lab, node, heartbeat, limits))
    img = qemu.working_copy(src, work / "disk.img", toml)
    with img.open("r+b") as f:
        f.truncate(img.stat().st_size + card_extra)
    lab.ssh_port = free_port()
    serial = work / "serial.log"
    serial.unlink(missing_ok=True)
    qmp = work / "qmp.sock"
    qmp.unlink(missing_ok=True)
    forwards = {free_port(): port for port in guest_ports}
    argv = qemu.command(src, img, ssh_port=lab.ssh_port, serial=f"file:{serial}", qmp=qmp,
                        second_nic=True, forwards=forwards)
    guest = Guest(qemu.spawn(argv, work / "qemu.out"), serial, qmp)
    guest.forwards = {guest_port: host_port for host_port, guest_port in forwards.items()}
    guest.argv = argv
    return guest


def arm(lab: Lab, guest: Guest, *, node: str = "qemu-device", timeout: float = 600) -> str:
    """Pair the guest as an operator does, then wait for its first heartbeat; the code.

    The fresh card's first boot puts it in config mode; it asks the console to pair and shows
    a code on its serial console; the console lists the same code; approve it.
    """
    shown = guest.wait_serial(r"coalmine: pairing code (\d{3}) (\d{3})", timeout)
    code = shown.group(1) + shown.group(2)
    guest.code_seen = time.monotonic()
    lab.wait_for(lambda: f"code={shown.group(1)} {shown.group(2)}" in lab.console("pending"),
                 60, "the pairing request at the console")
    guest.pending = time.monotonic()
    lab.console("approve", code, "--name", node)
    guest.approved = time.monotonic()
    lab.wait_for(lambda: "last_heartbeat=never" not in lab.console("devices"),
                 timeout, "the first heartbeat from the emulated device")
    guest.armed = time.monotonic()
    return code
