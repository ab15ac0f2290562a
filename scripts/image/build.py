"""``python3 -m scripts.image.build --board qemu-arm64``: build one board's SD-card image.

The entry point of ``make image``: checks the host, then runs the stages in order (each prints
a progress line) and writes into out/<board>/: coalmine-<board>.img, .img.xz, .bmap, the SPDX
SBOM, SHA256SUMS, and for qemu-arm64 the boot files QEMU loads directly (boot/).  Stage
directories live under out/work/<board>/ (gitignored) and are rebuilt every time; only the
rootfs base tarball is reused from the stage cache (see rootfs.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from firmware.protocol import trust
from firmware.shared.cli import main_guard, module_command
from firmware.shared.errors import ConfigError, UsageError
from firmware.shared.proc import run
from scripts.image import bmap as block_map
from scripts.image import disk, kernel, layer, rootfs, sbom, tools
from scripts.image.archive import stamp
from scripts.image.common import (
    BOARD_DIR,
    OS_HINT,
    REPO,
    board_config,
    boards,
    check_board,
    sha256_file,
    source_date_epoch,
    source_state,
    stage,
)
from scripts.image.hosttools import check_host, tool_versions
from scripts.image.lock import (
    Pin,
    fetch,
    lock_path,
    package_list_for,
    private_copies,
    read_full,
)

OUT = REPO / "out"
TRUST_ROOT = REPO / "signing" / "trust-root.json"  # committed after the first ceremony
BUILD_ENV = "build-env.txt"  # the host's tool versions: diagnostics, not a reproducible output
DPKG_STATUS = "dpkg-status"  # dpkg's database of the root, kept in the work dir for the SBOM


def version(commit: str | None, dirty: bool) -> str:
    """``0.1.0+g<commit>``, ``.dirty`` when the tree had uncommitted changes."""
    with (REPO / "pyproject.toml").open("rb") as f:
        base = str(tomllib.load(f)["project"]["version"])
    if commit is None:  # not a git checkout, or no git
        return base
    return f"{base}+g{commit[:12]}" + (".dirty" if dirty else "")


def work_dir(out: Path) -> Path:
    """Where a build into ``out`` keeps its stage files when run through ``command``."""
    return out.parent / f"work-{out.name}"


def command(board: str, out: Path, *extra: str) -> list[str]:
    """The build as a separate process (tests and benchmarks), into ``out``."""
    return [sys.executable, "-m", "scripts.image.build", "--board", board, "--out", str(out),
            "--work", str(work_dir(out)), *extra]


def used_pins(pins: list[Pin], board: str) -> list[Pin]:
    """Root packages, the host packages this board uses (common + its own list) and the build
    tools of this builder's architecture."""
    wanted = set(package_list_for(board, "host-packages.txt"))
    arch = tools.builder_arch()
    return [p for p in pins if p.role == "root"
            or (p.role == "host" and (p.name in wanted or p.name.startswith("linux-image-")))
            or (p.role == "build" and arch is not None and p.arch in (arch, "all"))]


def render(template: Path, **values: str) -> str:
    return template.read_text().format(**values)


@dataclass(frozen=True)
class Plan:
    """What one build needs before any stage runs: checked board, epoch, version, packages."""

    board: str
    debug: bool
    sde: int
    version: str
    pins: list[Pin]
    debs: Path
    trust_root: Path | None = None  # the ceremony's first root, pinned in the image
    commit: str | None = None  # the source commit (None: not a git checkout)
    dirty: bool = False  # the tree had changes not in that commit
    lock_sha256: str = ""  # of the package lock the pins come from
    archive: str = "unknown"  # the archive state it was made from: suite@date ...

    def source(self) -> str:
        """What the image was made from, for the SBOM: commit, dirty state, lock, archive."""
        return (f"source commit {self.commit or 'unknown'}"
                f"{' with uncommitted changes' if self.dirty else ''}; package lock "
                f"{lock_path().name} sha256 {self.lock_sha256}; archive state {self.archive}")

    def build_info(self) -> str:
        pinned = sha256_file(self.trust_root) if self.trust_root else "none"
        return (f"version={self.version}\nboard={self.board}\ndebug={int(self.debug)}\n"
                f"commit={self.commit or 'unknown'}\ndirty={int(self.dirty)}\n"
                f"source_date_epoch={self.sde}\nlock_sha256={self.lock_sha256}\n"
                f"trust_root_sha256={pinned}\n")


def write_build_env(path: Path) -> None:
    """The build host's tool versions, for diagnosis.  Outside SHA256SUMS and the SBOM on
    purpose: builders differ in them while the bytes must not (make check-repro)."""
    path.write_text("# host tools of this build (not part of the reproducible outputs)\n"
                    + "".join(f"{n} {v}\n" for n, v in tool_versions().items()))


def plan(board: str, debug: bool, trust_root: Path | None = None, *,
         release: bool = False) -> Plan:
    """Check the board and the host, pin the environment, fetch the locked packages.
    A ``release`` build refuses a tree with uncommitted changes."""
    check_board(board)
    check_host()
    commit, dirty = source_state()
    if release and (commit is None or dirty):
        raise UsageError("a release build needs a clean git checkout: "
                         + ("this is not one" if commit is None else
                            "the tree has uncommitted changes (git status)"),
                         hint="commit or stash the changes, then build again")
    sde = source_date_epoch()
    # What differs between builders must not reach the bytes: file modes never depend on the
    # umask (the services read /usr/lib/coalmine as their own users), nor messages and sort
    # orders on the locale, nor times on the zone (check-repro varies all three).
    os.umask(0o022)
    os.environ.update({"SOURCE_DATE_EPOCH": str(sde), "TZ": "UTC", "LC_ALL": "C.UTF-8",
                       "LANG": "C.UTF-8"})
    ver = version(commit, dirty)
    stage(f"build: board={board} debug={int(debug)} version={ver} SOURCE_DATE_EPOCH={sde}")
    if trust_root is not None:  # before anything slow: a root that does not verify stops here
        trust.first_root(trust_root.read_bytes())
    lock = read_full()
    pins = used_pins(lock.pins, board)
    archive = " ".join(f"{r.suite}@{stamp(r.date)}" for _, r in sorted(lock.releases.items()))
    return Plan(board, debug, sde, ver, pins, fetch(pins), trust_root, commit, dirty,
                sha256_file(lock_path()), archive or "unknown")


def root_slot(p: Plan, work: Path, *, stage_cache: bool) -> tuple[Path, kernel.Kernel,
                                                                    dict[str, Path], Path]:
    """The root filesystem as a squashfs; returns (squashfs, kernel, host trees, initramfs)."""
    tar = rootfs.base(p.pins, p.debs, work, use_cache=stage_cache)
    root = work / "root"
    stage("rootfs: unpacking the base")
    rootfs.unpack(tar, root)
    rootfs.keep_package_database(root, work / DPKG_STATUS)
    trees = kernel.unpack_host(p.pins, p.debs, work)
    k = kernel.find_kernel(trees)
    layer.apply(root, board=p.board, debug=p.debug, k=k, sde=p.sde, build_info=p.build_info(),
                trust_root=p.trust_root)
    initrd = kernel.initramfs(k, trees, p.board, work, p.sde, debug=p.debug)
    stage("root slot: mksquashfs")
    rootfs.clamp_times(root, p.sde)
    squash = work / "root.squashfs"
    disk.squashfs(root, squash, p.sde)
    return squash, k, trees, initrd


def build(board: str, *, debug: bool, out_dir: Path, work: Path, stage_cache: bool,
          trust_root: Path | None = None, release: bool = False) -> Path:
    p = plan(board, debug, trust_root, release=release)
    work.mkdir(parents=True, exist_ok=True)
    p = replace(p, debs=private_copies(p.pins, p.debs, work / "debs"))
    tools.install([p.debs / x.deb for x in p.pins if x.role == "build"], work)
    squash, k, trees, initrd = root_slot(p, work, stage_cache=stage_cache)

    stage("boot partition: kernel, initramfs, device trees, firmware, config")
    files = boot_files(board, k, trees, initrd, work / "bootfiles", debug=debug)
    boot = work / "boot.vfat"
    disk.fat_image(boot, disk.layout_parts(board)[0][1], files,
                   volume_id=disk.disk_id(board).upper(), label="COALMINE", sde=p.sde)

    stage("disk image: partition table and partitions")
    out_dir.mkdir(parents=True, exist_ok=True)
    img = out_dir / f"coalmine-{board}.img"
    disk.assemble(img, board, boot, squash)
    extra = direct_boot_files(out_dir / "boot", files) if board.startswith("qemu") else []
    installed = sbom.installed_packages((work / DPKG_STATUS).read_text())
    write_outputs(img, board=board, version=p.version, sde=p.sde, pins=p.pins, extra=extra,
                  trust_root=p.trust_root, installed=installed, source=p.source())
    write_build_env(out_dir / BUILD_ENV)
    stage(f"done: {out_dir} (root {squash.stat().st_size // (1 << 20)} MiB, .img.xz "
          f"{img.with_suffix('.img.xz').stat().st_size // (1 << 20)} MiB)")
    print((out_dir / "SHA256SUMS").read_text(), end="")
    return img


def boot_files(board: str, k: kernel.Kernel, trees: dict[str, Path], initrd: Path,
               scratch: Path, *, debug: bool) -> dict[str, Path]:
    """What goes on the FAT boot partition: destination path -> source file."""
    cfg = board_config(board)
    slot = "a"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    cmdline = scratch / "cmdline.txt"
    text = render(BOARD_DIR / board / "cmdline.txt", partuuid=disk.partuuid(board, 2),
                  slot=slot, extra="coalmine.debug" if debug else "")
    cmdline.write_text(" ".join(text.split()) + "\n")
    files: dict[str, Path] = {f"{slot}/vmlinuz": k.image, f"{slot}/initrd.img": initrd,
                              f"{slot}/cmdline.txt": cmdline}
    for dtb in cfg.get("dtbs", []):
        files[f"{slot}/{Path(dtb).name}"] = k.dtbs / dtb
    for name in cfg.get("firmware", []):
        if "raspi-firmware" not in trees:
            raise ConfigError(f"board {board} lists firmware but not raspi-firmware",
                              hint=f"add raspi-firmware to board/{board}/host-packages.txt")
        files[name] = trees["raspi-firmware"] / "usr/lib/raspi-firmware" / name
    for name in cfg.get("boot_templates", []):
        rendered = scratch / name
        rendered.write_text(render(BOARD_DIR / board / name, slot=slot))
        files[name] = rendered
    return files


def direct_boot_files(bdir: Path, files: dict[str, Path]) -> list[str]:
    """Kernel, initramfs and command line beside the image, for QEMU's -kernel boot."""
    shutil.rmtree(bdir, ignore_errors=True)
    bdir.mkdir()
    names = []
    for name in ("vmlinuz", "initrd.img", "cmdline.txt"):
        shutil.copyfile(files[f"a/{name}"], bdir / name)
        names.append(f"boot/{name}")
    return names


def write_outputs(img: Path, *, board: str, version: str, sde: int, pins: list[Pin],
                  extra: list[str], installed: dict[str, tuple[str, str]],
                  trust_root: Path | None = None, source: str = "") -> None:
    """.img.xz, .bmap, the SPDX SBOM and SHA256SUMS beside the image."""
    stage("outputs: .img.xz (xz -T1: single-threaded, deterministic), .bmap, SBOM, SHA256SUMS")
    out_dir = img.parent
    xz = img.with_suffix(".img.xz")
    run(["sh", "-c", 'xz -T1 -6 -c -- "$1" > "$2"', "xz", img, xz], quiet=True)
    bmap = img.with_suffix(".bmap")
    block_map.write(img, bmap)
    own = [
        sbom.own_component("coalmine-firmware", version, sbom.tree_digest(REPO / "firmware"),
                           "device runtime, /usr/lib/coalmine"),
        sbom.own_component("coalmine-overlay", version, sbom.tree_digest(REPO / "overlay", "*"),
                           "configuration and units laid over the root filesystem"),
        sbom.own_component("coalmine-board", version, sbom.tree_digest(BOARD_DIR, "*"),
                           "board files: boot configuration, layout, module lists, /init"),
    ]
    if trust_root is not None:
        own.append(sbom.own_component("coalmine-trust-root", version, sha256_file(trust_root),
                                      f"first trust root of the signing ceremony, "
                                      f"{layer.TRUST_ROOT_PATH}"))
    spdx = img.with_suffix(".spdx.json")
    digest = sha256_file(img)
    sbom.write_sbom(spdx, board=board, version=version, sde=sde, image=img, image_sha256=digest,
                    pins=pins, own=own, installed=installed, source=source)
    sbom.write_sums(out_dir, [img.name, xz.name, bmap.name, spdx.name, *extra],
                    known={img.name: digest})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=module_command("scripts.image.build"),
        description="Build the reproducible SD-card image of one board into out/<board>/.")
    parser.add_argument("--board", default="rpi4", help=f"one of: {', '.join(boards())}")
    parser.add_argument("--debug", action="store_true",
                        help="add a root shell on the serial console (never for deployment)")
    parser.add_argument("--out", type=Path,
                        help="output directory (default out/<board>, out/<board>-debug)")
    parser.add_argument("--work", type=Path, help="stage directory (default out/work/<board>)")
    parser.add_argument("--no-stage-cache", action="store_true",
                        help="rebuild the rootfs base even if the stage cache has it")
    parser.add_argument("--trust-root", type=Path, default=None,
                        help="the signing ceremony's first root to pin (default "
                             f"{TRUST_ROOT.relative_to(REPO)} if it exists; without one the "
                             "image refuses every update)")
    parser.add_argument("--release", action="store_true",
                        help="refuse to build from a tree with uncommitted changes")
    args = parser.parse_args(argv)
    name = args.board + ("-debug" if args.debug else "")

    def work() -> None:
        pinned = args.trust_root or (TRUST_ROOT if TRUST_ROOT.exists() else None)
        build(args.board, debug=args.debug, out_dir=args.out or OUT / name,
              work=args.work or OUT / "work" / name, stage_cache=not args.no_stage_cache,
              trust_root=pinned, release=args.release)

    sys.exit(main_guard(work, os_hint=OS_HINT))


if __name__ == "__main__":
    main(sys.argv[1:])
