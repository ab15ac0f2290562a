"""The qemu-arm64 image boots under QEMU (TCG) and arms itself, seen only from the host.

The host runs the network side of a coalmine (console + unbound, from scripts/lab.py); the
guest gets coalmine.toml on its FAT partition like a defender would write it, pointing its
resolver at the host (10.0.2.2 in QEMU's user network).  The test reads the device key from
the serial console, enrolls it, then waits for a heartbeat and for a real OpenSSH login attempt
(through the port forward) to reach the console with its credentials.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.image import qemu
from scripts.lab import ZONE, Lab, free_port

pytestmark = pytest.mark.image
BOOT_TIMEOUT = 600  # TCG on a loaded 2-core CI machine; typical is ~1-2 minutes


@dataclass
class Booted:
    lab: Lab
    serial: Path
    started: float
    key_seen: float
    heartbeat_seen: float

    def log(self) -> str:
        return self.serial.read_text(errors="replace")


def wait_serial(serial: Path, pattern: str, proc: object, started: float) -> re.Match[str]:
    while time.monotonic() - started < BOOT_TIMEOUT:
        text = serial.read_text(errors="replace") if serial.exists() else ""
        m = re.search(pattern, text)
        if m:
            return m
        if proc.poll() is not None:  # type: ignore[attr-defined]
            pytest.fail(f"QEMU exited before {pattern!r}:\n{text[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {pattern!r} on the serial console after {BOOT_TIMEOUT}s:\n"
                + (serial.read_text(errors="replace")[-4000:] if serial.exists() else ""))


@pytest.fixture(scope="module")
def booted(qemu_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    work = tmp_path_factory.mktemp("qemu")
    with Lab(work / "lab", with_device=False) as lab:
        toml = work / "coalmine.toml"
        toml.write_text(
            f'[device]\nnode_name = "qemu-device"\n'
            f'[console]\nzone = "{ZONE}"\npublic_key = "{lab.console_key}"\n'
            f'resolver = "10.0.2.2:{lab.resolver_port}"\n'
            f"heartbeat_interval = 5\nmax_backoff = 2.0\n")
        img = qemu.working_copy(qemu_out, work / "disk.img", toml)
        lab.ssh_port = free_port()
        serial = work / "serial.log"
        proc = qemu.spawn(qemu.command(qemu_out, img, ssh_port=lab.ssh_port,
                                       serial=f"file:{serial}"), work / "qemu.out")
        started = time.monotonic()
        try:
            key = wait_serial(serial, r"coalmine: device public key (\S+)", proc, started)
            key_seen = time.monotonic()
            lab.enroll("qemu-device", key.group(1))
            lab.wait_for(lambda: "last_heartbeat=never" not in lab.console("devices"),
                         BOOT_TIMEOUT, "first heartbeat from the emulated device")
            heartbeat = time.monotonic()
            print(f"\nqemu: start -> device key {key_seen - started:.1f}s, "
                  f"-> first heartbeat {heartbeat - started:.1f}s")
            yield Booted(lab, serial, started, key_seen, heartbeat)
        finally:
            proc.terminate()
            proc.wait(30)


def test_heartbeat_reaches_console_through_user_network(booted: Booted) -> None:
    devices = booted.lab.console("devices")
    assert "qemu-device" in devices and "last_heartbeat=never" not in devices
    assert booted.heartbeat_seen - booted.started < BOOT_TIMEOUT


def test_real_ssh_login_attempt_reaches_console(booted: Booted) -> None:
    lab = booted.lab
    rc = lab.ssh_attempt("mallory", "correct-horse", timeout=120)
    assert rc != 0  # a honeypot never lets a login succeed
    event = lab.wait_event(lambda e: e["logtype"] == 4002
                           and e["logdata"].get("USERNAME") == "mallory", timeout=120)
    assert event["logdata"]["PASSWORD"] == "correct-horse"
    assert event["logdata"]["REMOTEVERSION"].startswith("SSH-2.0-OpenSSH")
    assert event["node_id"] == "qemu-device"
    assert event["dst_port"] == 22  # the guest's own port, behind QEMU's forward


def test_first_boot_provisioned_and_no_login_prompt(booted: Booted) -> None:
    log = booted.log()
    assert "imported coalmine.toml from the boot partition" in log
    assert "making the data filesystem" in log
    assert "coalmine-initramfs: slot a" in log
    assert not re.search(r"(?m)login: *$", log), "a login prompt must never appear"
    failed = [line for line in log.splitlines() if "FAILED" in line and "coalmine" in line]
    assert not failed, failed
