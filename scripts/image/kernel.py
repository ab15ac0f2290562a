"""Kernel, modules and initramfs, made on the build host from unpacked Debian packages.

The kernel, busybox-static and the Pi firmware are never *installed* into the image: their
maintainer scripts (mkinitramfs above all) would run under emulation for many minutes and
produce a huge "most modules" initrd.  Instead they are unpacked with ``dpkg-deb -x`` and we
take exactly what the boards need: the kernel image, device trees, the firmware blobs and the
kernel modules named in board/*/modules*.txt (with their dependencies, resolved by depmod).
The initramfs is busybox plus board/common/initramfs/init, packed reproducibly.
"""

from __future__ import annotations

import lzma
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from firmware.shared.errors import ConfigError
from firmware.shared.proc import run
from scripts.image.common import BOARD_DIR, board_files, list_file, stage
from scripts.image.lock import Pin


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package: where its files are and its release string."""

    tree: Path
    release: str

    @property
    def image(self) -> Path:
        return self.tree / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.tree / "usr/lib/modules" / self.release

    @property
    def dtbs(self) -> Path:
        return self.tree / "usr/lib" / f"linux-image-{self.release}"


def unpack_host(pins: list[Pin], debs: Path, work: Path) -> dict[str, Path]:
    """dpkg-deb -x every ``host`` package into work/host/<name>; returns name -> tree."""
    trees: dict[str, Path] = {}
    base = work / "host"
    shutil.rmtree(base, ignore_errors=True)
    for pin in sorted((p for p in pins if p.role == "host"), key=lambda p: p.name):
        tree = base / pin.name
        tree.mkdir(parents=True)
        run(["dpkg-deb", "-x", debs / pin.deb, tree], quiet=True)
        trees[pin.name] = tree
    stage(f"kernel: unpacked {', '.join(trees)} on the host")
    return trees


def find_kernel(trees: dict[str, Path]) -> Kernel:
    for name, tree in sorted(trees.items()):
        mods = tree / "usr/lib/modules"
        if name.startswith("linux-image-") and mods.is_dir():
            releases = sorted(p.name for p in mods.iterdir())
            if len(releases) == 1:
                kernel = Kernel(tree, releases[0])
                # depmod -b looks in <base>/lib/modules; the package uses merged /usr.
                (tree / "lib").unlink(missing_ok=True)
                (tree / "lib").symlink_to("usr/lib")
                run(["depmod", "-b", tree, kernel.release], quiet=True)
                return kernel
    raise ConfigError("no linux-image package with modules in the lock", hint="run: make lock")


def module_list(board: str, name: str) -> list[str]:
    """Module names from board/common/<name> then board/<board>/<name>, in order, deduplicated."""
    words = (w.replace("-", "_") for path in board_files(board, name) for w in list_file(path))
    return list(dict.fromkeys(words))


def resolve(kernel: Kernel, names: list[str]) -> list[str]:
    """Module paths (relative to the modules dir), dependencies first, for ``names``."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_mod_name(path)] = path
    builtin = {_mod_name(line) for line in
               (kernel.modules / "modules.builtin").read_text().split()}
    ordered: list[str] = []
    missing: list[str] = []

    def visit(path: str) -> None:
        if path in ordered:
            return
        for dep in deps.get(path, []):
            visit(dep)
        ordered.append(path)

    for name in names:
        if name in by_name:
            visit(by_name[name])
        elif name not in builtin:
            missing.append(name)
    if missing:
        raise ConfigError(f"kernel {kernel.release} has no modules named: {', '.join(missing)}",
                          hint="fix board/*/modules*.txt")
    return ordered


def _mod_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def _decompressed(src: Path) -> bytes:
    data = src.read_bytes()
    return lzma.decompress(data) if src.name.endswith(".xz") else data


def install_modules(kernel: Kernel, board: str, root: Path) -> int:
    """Copy the board's modules (decompressed) into the root and run depmod for them."""
    paths = resolve(kernel, module_list(board, "modules.txt")
                    + module_list(board, "modules-initramfs.txt"))
    dest = root / "usr/lib/modules" / kernel.release
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for rel in paths:
        target = dest / rel.removesuffix(".xz")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_decompressed(kernel.modules / rel))
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        shutil.copyfile(kernel.modules / name, dest / name)
    run(["depmod", "-b", root, kernel.release], quiet=True)
    for junk in ("modules.builtin.alias.bin",):
        (dest / junk).unlink(missing_ok=True)
    return len(paths)


DEBUG_ONLY = "# @debug-only"


def init_script(debug: bool) -> str:
    """board/common/initramfs/init for this build: lines marked ``# @debug-only`` (the
    ``coalmine.debug`` switch and its shell) are kept only in DEBUG builds, so a production
    initramfs has no way to a shell, whatever the kernel command line says."""
    text = (BOARD_DIR / "common/initramfs/init").read_text()
    lines = text.splitlines(keepends=True)
    if debug:
        return "".join(line.replace(" " + DEBUG_ONLY, "") for line in lines)
    return "".join(line for line in lines if not line.rstrip().endswith(DEBUG_ONLY))


def initramfs(kernel: Kernel, trees: dict[str, Path], board: str, work: Path, sde: int,
              *, debug: bool = False) -> Path:
    """busybox + /init + the modules to reach the root slot, as a reproducible gzip'd cpio."""
    tree = work / "initramfs"
    shutil.rmtree(tree, ignore_errors=True)
    for d in ("bin", "dev", "proc", "sys", "run", "newroot", "lib/modules"):
        (tree / d).mkdir(parents=True)
    busybox = trees["busybox-static"] / "usr/bin/busybox"
    shutil.copyfile(busybox, tree / "bin/busybox")
    (tree / "bin/busybox").chmod(0o755)
    (tree / "bin/sh").symlink_to("busybox")
    (tree / "init").write_text(init_script(debug))
    (tree / "init").chmod(0o755)
    order: list[str] = []
    for rel in resolve(kernel, module_list(board, "modules-initramfs.txt")):
        name = Path(rel).name.removesuffix(".xz")
        (tree / "lib/modules" / name).write_bytes(_decompressed(kernel.modules / rel))
        order.append(name)
    (tree / "lib/modules/load.order").write_text("".join(f"{n}\n" for n in order))
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (sde, sde), follow_symlinks=False)
    listing = "".join(f"{p}\n" for p in sorted(
        str(p.relative_to(tree)) for p in tree.rglob("*")))
    cpio = run(["cpio", "--quiet", "-o", "-H", "newc", "--reproducible", "-R", "0:0"],
               cwd=tree, stdin=(".\n" + listing).encode(), capture=True, quiet=True).stdout
    out = work / "initrd.img"
    # gzip the program, from the locked tools (scripts/image/tools.py): Python's gzip module
    # compresses with the host's zlib, and Debian 12's and 13's zlib give other bytes
    out.write_bytes(run(["gzip", "-n", "-9", "-c"], stdin=cpio, capture=True, quiet=True).stdout)
    stage(f"initramfs: {len(order)} modules, {out.stat().st_size // 1024} KiB"
          f"{' (DEBUG: coalmine.debug gives a shell)' if debug else ''}")
    return out
