"""A small x86-64 machine for the signer's medium checks against a real removable USB disk.

The ceremony asks the kernel, through pyudev, whether the disk under a holder's mount point is
removable.  Nothing on the test machines can say yes (loop devices are never removable, there is
no USB), so tests/signing/test_usb_medium.py boots this: Debian trixie's kernel and an
initramfs holding trixie's python3, python3-nacl and python3-pyudev (the packages a signing
laptop carries) plus this checkout's signer, with QEMU's USB mass-storage device marked
removable (``usb-storage,removable=on``), one USB disk not so marked and a fixed virtio disk.
The test's ``/init`` runs the signer's real commands with the real pyudev backend and powers
the machine off; the test then reads the disks' FAT file systems with mtools.

The root file system comes from mmdebstrap once and is cached outside the checkout, keyed by
its recipe (``~/.cache/coalmine/signer-vm/``, beside the image build's caches;
``COALMINE_NO_VM_CACHE=1`` builds afresh).  The machine runs under TCG (about 15 s to
power-off): KVM inside these sandboxes fails on the kernel's first instructions (an emulation
failure), and TCG behaves the same on every host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path

from firmware.shared.proc import output, run
from scripts.image.common import SUITE, cache_dir, host_mirror

REPO = Path(__file__).resolve().parents[2]
RECIPE = 1  # bump when the way the base is made changes
PACKAGES = ("python3", "python3-nacl", "python3-pyudev", "kmod", "mount", "linux-image-amd64")
MODULES = ("xhci_pci", "usb_storage", "sd_mod", "virtio_pci", "virtio_blk", "vfat",
           "nls_cp437", "nls_ascii")
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
         "var/cache/apt", "var/lib/apt/lists", "usr/share/zoneinfo")
KEYRING = REPO / "board" / "common" / "archive-keys.asc"
CODE = ("signing", "firmware")  # what the initramfs carries of this checkout


def cache_root() -> Path:
    """Beside the image build's download and stage caches (scripts/image/common.cache_dir)."""
    return cache_dir().parent / "signer-vm"


def _args(out: Path, mirror: str) -> list[str]:
    return ["mmdebstrap", "--mode=root", "--variant=essential", "--arch=amd64", "--format=tar",
            "--aptopt=Acquire::Languages \"none\"", "--aptopt=APT::Install-Recommends \"false\"",
            f"--keyring={KEYRING}", "--include=" + ",".join(PACKAGES),
            *(f"--dpkgopt=path-exclude=/{p}/*" for p in PRUNE[:4]),
            SUITE, str(out), f"deb {mirror} {SUITE} main"]


def base(work: Path) -> tuple[Path, Path]:
    """(kernel, gzip'd cpio of the root file system): from the cache or made now."""
    key = hashlib.sha256(f"{RECIPE} {' '.join(_args(Path('X'), 'M'))} {MODULES}".encode())
    key.update(KEYRING.read_bytes())
    key.update(output(["mmdebstrap", "--version"]).encode())
    cached = cache_root() / key.hexdigest()[:20]
    kernel, initrd = cached / "vmlinuz", cached / "root.cpio.gz"
    if os.environ.get("COALMINE_NO_VM_CACHE") != "1" and kernel.is_file() and initrd.is_file():
        return kernel, initrd
    tar, root = work / "base.tar", work / "root"
    run(_args(tar, host_mirror()), timeout=1800, quiet=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with tarfile.open(tar) as t:
        t.extractall(root, filter="fully_trusted")  # our own mmdebstrap's output, as root
    tar.unlink()
    version = _prune(root)
    tmp = cached.with_name(cached.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(root / "boot" / f"vmlinuz-{version}", tmp / "vmlinuz")
    shutil.rmtree(root / "boot")
    pack(root, tmp / "root.cpio.gz")
    shutil.rmtree(root)
    shutil.rmtree(cached, ignore_errors=True)
    tmp.rename(cached)
    return kernel, initrd


def _prune(root: Path) -> str:
    """Drop what the machine never uses: docs, apt's state, every kernel module the disks do
    not need (the closure of MODULES, from modprobe's own dependency data).  The kernel's
    version string."""
    (version,) = [p.name for p in (root / "lib" / "modules").iterdir()]
    needed: set[Path] = set()
    for module in MODULES:
        text = output(["modprobe", "-d", str(root), "-S", version, "--show-depends", module])
        needed |= {Path(line.split()[1]).resolve() for line in text.splitlines()
                   if line.startswith("insmod ")}
    tree = root / "lib" / "modules" / version / "kernel"
    for path in sorted(tree.rglob("*.ko*")):
        if path.resolve() not in needed:
            path.unlink()
    for rel in PRUNE:
        shutil.rmtree(root / rel, ignore_errors=True)
    return version


def pack(root: Path, out: Path) -> None:
    """``root`` as a gzip'd newc cpio archive (what the kernel unpacks as its first root)."""
    names = run(["find", ".", "-print0"], cwd=root, capture=True, quiet=True).stdout
    archive = run(["cpio", "--null", "-o", "-H", "newc", "--quiet"], cwd=root, stdin=names,
                  capture=True, quiet=True).stdout
    out.write_bytes(run(["gzip", "-1"], stdin=archive, capture=True, quiet=True).stdout)


def overlay(work: Path, init: str) -> Path:
    """A second cpio (the kernel unpacks it over the first): ``/init`` and the signer's code."""
    root = work / "overlay"
    shutil.rmtree(root, ignore_errors=True)
    for top in CODE:
        for src in (REPO / top).rglob("*.py"):
            dest = root / "coalmine" / src.relative_to(REPO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
    (root / "init").write_text(init)
    (root / "init").chmod(0o755)
    out = work / "overlay.cpio.gz"
    pack(root, out)
    return out


def fat_disk(path: Path, mib: int, label: str) -> Path:
    """A disk whose whole device is one FAT file system, as many USB sticks come."""
    with path.open("wb") as f:
        f.truncate(mib << 20)
    run(["mkfs.vfat", "-n", label, str(path)], quiet=True)
    return path


def boot(kernel: Path, initrds: list[Path], work: Path, *, usb_removable: Path,
         usb_fixed: Path, fixed: Path, timeout: float = 300) -> str:
    """Boot until /init powers off; what it printed on the serial console."""
    initrd = work / "initrd.cpio.gz"
    initrd.write_bytes(b"".join(p.read_bytes() for p in initrds))
    serial = work / "serial.log"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "768", "-smp", "2",
            "-nodefaults", "-display", "none", "-no-reboot", "-nic", "none",
            "-serial", f"file:{serial}", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3",
            "-device", "qemu-xhci,id=xhci",
            "-drive", f"if=none,id=stick,format=raw,file={usb_removable}",
            "-device", "usb-storage,bus=xhci.0,drive=stick,removable=on",
            "-drive", f"if=none,id=usbhdd,format=raw,file={usb_fixed}",
            "-device", "usb-storage,bus=xhci.0,drive=usbhdd",
            "-drive", f"if=none,id=fixed,format=raw,file={fixed}",
            "-device", "virtio-blk-pci,drive=fixed"]
    run(argv, timeout=timeout, quiet=True)
    return serial.read_text(errors="replace")


def read_fat(disk: Path, name: str) -> bytes:
    """One file of a FAT disk image, read with mtools (no mount)."""
    return run(["mtype", "-i", str(disk), f"::{name}"], capture=True, quiet=True).stdout


def list_fat(disk: Path) -> str:
    """Every file of a FAT disk image, one path a line (mdir; an empty disk lists nothing)."""
    proc = run(["mdir", "-b", "-/", "-i", str(disk), "::"], capture=True, quiet=True,
               check=False)
    return (proc.stdout or b"").decode(errors="replace")
