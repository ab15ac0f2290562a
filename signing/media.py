"""A key holder's removable medium, found and checked through udev's view of the machine.

A private key is written to, and read from, only a holder's own removable medium: the disk
under the mount point the holder names must say it is removable (the kernel's ``removable``
attribute) and must not be the disk the system runs from.  ``Udev`` is the small part of
pyudev this needs, so tests use a fake of exactly that interface (loop devices cannot be marked
removable, and the test machines run no udevd).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from firmware.shared.errors import ConfigError


@dataclass(frozen=True)
class Disk:
    devnode: str  # the whole disk (/dev/sdb), not the partition
    removable: bool
    model: str


class Udev(Protocol):
    def disk_of(self, device_number: int) -> Disk | None: ...


class PyudevBackend:
    """The real one: sysfs through pyudev (works without udevd; it needs no udev database)."""

    def __init__(self) -> None:
        import pyudev  # host-side only: the signer's own dependency
        self.pyudev = pyudev
        self.context = pyudev.Context()

    def disk_of(self, device_number: int) -> Disk | None:
        try:
            dev = self.pyudev.Devices.from_device_number(self.context, "block", device_number)
        except (self.pyudev.DeviceNotFoundError, ValueError):
            return None
        disk = dev if dev.device_type == "disk" else dev.find_parent("block", "disk")
        if disk is None:
            return None
        removable = disk.attributes.get("removable")
        model = disk.attributes.get("device/model") or b""
        return Disk(disk.device_node or disk.sys_name, removable == b"1",
                    model.decode(errors="replace").strip())


def check_medium(mount: Path, udev: Udev, system: Path = Path("/")) -> Disk:
    """The removable disk mounted at ``mount``; refused with what is wrong otherwise."""
    mount = mount.resolve()
    if not os.path.ismount(mount):
        raise ConfigError(f"{mount} is not a mount point",
                          hint="insert your medium, mount it, and give its mount point")
    here, root = os.stat(mount).st_dev, os.stat(system).st_dev
    disk, system_disk = udev.disk_of(here), udev.disk_of(root)
    if disk is None:
        raise ConfigError(f"{mount} is not on a disk this machine knows (a network or memory "
                          "file system?)", hint="use a USB stick or an SD card of your own")
    if system_disk is not None and disk.devnode == system_disk.devnode:
        raise ConfigError(f"{mount} is on the system disk {disk.devnode}",
                          hint="keys go only on the holder's own removable medium")
    if not disk.removable:
        raise ConfigError(f"{disk.devnode} ({disk.model or 'no model'}) is not removable",
                          hint="use a USB stick or an SD card of your own")
    return disk
