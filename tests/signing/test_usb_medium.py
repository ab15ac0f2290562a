"""The medium check against real disks: a removable USB stick is taken, anything else refused.

tests/signing/test_ceremony.py runs the whole ceremony against a fake of the pyudev interface
(loop devices cannot be marked removable and no USB exists here).  This test boots a small
x86-64 machine (tests/signing/vm.py: Debian trixie's kernel, python3-nacl and python3-pyudev)
with three FAT disks: a USB stick QEMU marks removable, a USB disk it does not, and a fixed
virtio disk holding the ceremony's work directory.  ``coalmine-sign keygen`` runs there with
its real pyudev backend, its passphrases on stdin; the machine has no network card, so the
offline check passes as it does on the signing laptop.  The key it wrote to the stick is read
back on the host with mtools and opened with the passphrase.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from signing import keyfile
from tests.signing import vm

pytestmark = pytest.mark.timeout(1800)  # a cold cache runs mmdebstrap first
PASSPHRASE = "correct horse battery staple"
STEPS = {  # name: (holder, mount point of its medium)
    "usb-removable": ("alice", "/media/stick"),
    "usb-not-removable": ("bob", "/media/usbhdd"),
    "fixed-disk": ("carol", "/media/work"),
    "not-a-mount-point": ("dave", "/media"),
}

INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /media/stick /media/usbhdd /media/work
mount -t tmpfs tmpfs /tmp
for m in {modules}; do modprobe "$m" || echo "== MODPROBE $m failed"; done
i=0
until [ -b /dev/sda ] && [ -b /dev/sdb ] && [ -b /dev/vda ]; do
  i=$((i + 1)); [ "$i" -gt 600 ] && echo "== DISKS missing" && break; sleep 0.1
done
for d in sda sdb; do  # which USB disk is which: by the kernel's removable flag
  if [ "$(cat /sys/block/$d/removable)" = 1 ]; then stick=$d; else usbhdd=$d; fi
done
echo "== DISKS stick=$stick usbhdd=$usbhdd"
mount -t vfat /dev/$stick /media/stick
mount -t vfat /dev/$usbhdd /media/usbhdd
mount -t vfat /dev/vda /media/work
cd /coalmine
{steps}
umount /media/stick /media/usbhdd /media/work
sync
echo "== DONE"
echo o > /proc/sysrq-trigger
sleep 30
"""
STEP = """echo "== STEP {name}"
printf '%s\\n%s\\n' '{pw}' '{pw}' | python3 -m signing --workdir /media/work/w keygen \\
  --role release --holder {holder} --medium {medium} --kdf-memory-mib 8 2>&1
echo "== RC {name} $?"
"""


def outputs(serial: str) -> dict[str, tuple[int, str]]:
    """Each step's exit status and output, from the serial console."""
    found = {}
    for m in re.finditer(r"== STEP (\S+)\n(.*?)== RC \1 (\d+)", serial, re.S):
        found[m.group(1)] = (int(m.group(3)), m.group(2))
    return found


def test_keys_go_only_to_a_removable_usb_medium_seen_through_the_real_kernel(
        tmp_path: Path) -> None:
    for tool in ("qemu-system-x86_64", "mmdebstrap", "mkfs.vfat", "mtype", "cpio"):
        assert shutil.which(tool), f"{tool} is not installed: run make deps"
    kernel, root = vm.base(tmp_path)
    steps = "".join(STEP.format(name=n, pw=PASSPHRASE, holder=h, medium=m)
                    for n, (h, m) in STEPS.items())
    init = INIT.format(modules=" ".join(vm.MODULES), steps=steps)
    disks = {name: vm.fat_disk(tmp_path / f"{name}.img", 32, name.upper())
             for name in ("stick", "usbhdd", "work")}
    serial = vm.boot(kernel, [root, vm.overlay(tmp_path, init)], tmp_path,
                     usb_removable=disks["stick"], usb_fixed=disks["usbhdd"],
                     fixed=disks["work"])
    assert "== DONE" in serial, serial[-4000:]
    assert "== DISKS stick=sd" in serial and "usbhdd=sd" in serial, serial[-4000:]
    got = outputs(serial)
    assert sorted(got) == sorted(STEPS), serial[-4000:]

    rc, text = got["usb-removable"]
    assert rc == 0, text
    assert re.search(r"making a release key for alice on /dev/sd[ab] \(QEMU", text), text
    rc, text = got["usb-not-removable"]
    assert rc != 0 and re.search(r"/dev/sd[ab] \(QEMU.*\) is not removable", text), text
    rc, text = got["fixed-disk"]
    assert rc != 0 and "/dev/vda" in text and "is not removable" in text, text
    rc, text = got["not-a-mount-point"]
    assert rc != 0 and "/media is not a mount point" in text, text

    sealed = vm.read_fat(disks["stick"], "coalmine-release-alice.key")
    holder, seed = keyfile.unseal(sealed, PASSPHRASE)
    pub = json.loads(vm.read_fat(disks["work"], "w/keys/release-alice.pub"))
    assert bytes(SigningKey(seed).verify_key) == base64.b64decode(pub["public"])
    assert holder.key_id == pub["keyid"]
    for other in ("usbhdd", "work"):
        listing = vm.list_fat(disks[other])
        assert ".key" not in listing, (other, listing)
