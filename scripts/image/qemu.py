"""``make qemu``: boot the qemu-arm64 image under qemu-system-aarch64 (TCG) with user networking.

The same command line serves the image tests (tests/image/) and the benchmark, so what a
developer watches on the terminal is what the tests check.  The kernel, initramfs and command
line come from out/qemu-arm64/boot/ (the build extracts them: no bootloader to emulate); the
disk is a working copy of the image so the built image stays pristine.  The honeypot's SSH port
is forwarded to 127.0.0.1:<port> on the host; the guest reaches the host's loopback as 10.0.2.2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from firmware.shared.cli import main_guard, module_command
from firmware.shared.errors import ConfigError
from firmware.shared.proc import run
from scripts.image import disk
from scripts.image.common import OS_HINT, REPO, stage

BOARD = "qemu-arm64"
QEMU = "qemu-system-aarch64"


def image_dir(debug: bool = False) -> Path:
    return REPO / "out" / (BOARD + ("-debug" if debug else ""))


def working_copy(src_dir: Path, dest: Path, provision: Path | None = None) -> Path:
    """A sparse copy of the built image, with ``provision`` written as coalmine.toml on p1."""
    img = src_dir / f"coalmine-{BOARD}.img"
    if not img.is_file():
        raise ConfigError(f"no image at {img}", hint=f"run: make image BOARD={BOARD}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "--sparse=always", img, dest], quiet=True)
    if provision is not None:
        boot = disk.partitions(dest)[0]
        run(["mcopy", "-o", "-i", f"{dest}@@{boot.start}", provision, "::coalmine.toml"],
            env={"MTOOLS_SKIP_CHECK": "1"}, quiet=True)
    return dest


DISK_ID = "card"  # the disk's device id, for QMP
NETDEV = "n0"  # the guest's own network (its forwards), for QMP


def command(src_dir: Path, disk_img: Path, *, ssh_port: int | None = None,
            serial: str = "mon:stdio", smp: int = 2, qmp: Path | None = None,
            second_nic: bool = False, forwards: dict[int, int] | None = None) -> list[str]:
    """The qemu-system-aarch64 argv for the virt machine booting ``disk_img``.

    ``qmp``: a Unix socket for QEMU's machine protocol, through which a test presses the
    board's button (``system_powerdown`` raises line 3 of the PL061 GPIO controller) or makes
    the card stop taking writes (``block_set_io_throttle`` on the disk ``DISK_ID``).
    ``second_nic``: a second network adapter (eth1), as if someone plugged one in: the device
    must keep it down and report it.  ``forwards``: more TCP ports, host port -> guest port (a
    honeypot moved to another port by signed settings).
    """
    boot = src_dir / "boot"
    net = f"user,id={NETDEV}"
    if ssh_port is not None:
        net += f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    for host_port, guest_port in (forwards or {}).items():
        net += f",hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"
    return [
        QEMU, "-M", "virt", "-cpu", "cortex-a72", "-smp", str(smp),
        "-m", "1024", "-display", "none", "-no-reboot", "-serial", serial,
        "-kernel", str(boot / "vmlinuz"), "-initrd", str(boot / "initrd.img"),
        "-append", (boot / "cmdline.txt").read_text().strip(),
        "-drive", f"if=none,id=d0,file={disk_img},format=raw",
        "-device", f"virtio-blk-pci,drive=d0,id={DISK_ID}",
        "-netdev", net, "-device", "virtio-net-pci,netdev=n0,romfile=",  # no PXE ROM: -kernel boot
        "-device", "virtio-rng-pci",
        *(["-qmp", f"unix:{qmp},server=on,wait=off"] if qmp else []),
        *(["-netdev", "user,id=n1,restrict=on", "-device", "virtio-net-pci,netdev=n1,romfile="]
          if second_nic else []),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=module_command("scripts.image.qemu"),
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--debug", action="store_true", help="boot the DEBUG=1 image")
    parser.add_argument("--provision", type=Path, metavar="coalmine.toml",
                        help="write this file as coalmine.toml onto the boot partition first")
    parser.add_argument("--ssh-port", type=int, default=2222,
                        help="host port forwarded to the honeypot's port 22 (default 2222)")
    args = parser.parse_args(argv)

    def work() -> None:
        if shutil.which(QEMU) is None:
            raise ConfigError("qemu-system-aarch64 is not installed",
                              hint="run as root: make image-deps")
        src = image_dir(args.debug)
        copy = working_copy(src, src / "qemu-run.img", args.provision)
        argv_q = command(src, copy, ssh_port=args.ssh_port)
        stage(f"qemu: booting {copy} (SSH honeypot on 127.0.0.1:{args.ssh_port}; "
              "Ctrl-a x quits)")
        os.execvp(argv_q[0], argv_q)  # noqa: S606 - argv list, no shell

    sys.exit(main_guard(work, os_hint=OS_HINT))


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start QEMU in the background (tests, benchmark); output goes to ``log``."""
    out = log.open("wb")
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT)


if __name__ == "__main__":
    main(sys.argv[1:])
