"""The build's own tools, from the lock: the same mksquashfs, xz, mtools ... on every builder.

What compresses or lays out the image's bytes must not be the builder's version: 182 of 194
blocks of the root tarball compress differently under libzstd 1.5.4 (Debian 12) and 1.5.6 at
level 19.  So ``board/common/build-packages.txt`` is locked too (role ``build``, the builder's
architecture, trixie with its security updates) and unpacked into a tools tree in the work
directory, the way mkosi's ``ToolsTree=`` works; small wrappers on ``PATH`` run each tool with
the tree's own dynamic loader and libraries, so the host only needs a Linux kernel to run them.
mmdebstrap, apt and dpkg stay the host's (they only unpack the locked packages; the root
filesystem's own dpkg runs the maintainer scripts).  A builder whose architecture has no locked
tools uses its own and the build says so (``TOOLS_ARCH``).
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
from pathlib import Path

from firmware.shared.errors import InputError
from firmware.shared.proc import output, run
from scripts.image.common import stage

TOOLS_ARCH = {"x86_64": ("amd64", "x86_64-linux-gnu", "ld-linux-x86-64.so.2")}
LOCKED_ARCHES = tuple(sorted(arch for arch, _, _ in TOOLS_ARCH.values()))
# every program the build runs whose output reaches the image (mcopy and mmd are argv[0] names
# of the one mtools binary)
PROGRAMS = ("mksquashfs", "xz", "mcopy", "mmd", "mkfs.vfat", "cpio", "gzip", "depmod",
            "sfdisk")


def builder_arch() -> str | None:
    """The Debian architecture of this builder's locked tools (None: none are locked)."""
    entry = TOOLS_ARCH.get(platform.machine())
    return entry[0] if entry else None


def install(debs: list[Path], work: Path) -> Path | None:
    """Unpack the locked build packages into ``work/tools`` and put its wrappers first on PATH.
    Returns the wrapper directory (None: this builder's architecture has no locked tools)."""
    entry = TOOLS_ARCH.get(platform.machine())
    if entry is None or not debs:
        stage(f"tools: none locked for {platform.machine()}: using the host's (the outputs "
              "may differ from an amd64 builder's)")
        return None
    _, triplet, loader_name = entry
    top = work / "tools"
    shutil.rmtree(top, ignore_errors=True)
    tree, bin_dir = top / "tree", top / "bin"
    bin_dir.mkdir(parents=True)
    for deb in debs:
        run(["dpkg-deb", "-x", deb, tree], quiet=True)
    loader = tree / "usr/lib" / triplet / loader_name
    libs = ":".join(str(tree / d / triplet) for d in ("usr/lib", "lib"))
    for name in PROGRAMS:
        real = next((tree / d / name for d in ("usr/bin", "usr/sbin", "bin", "sbin")
                     if os.path.lexists(tree / d / name)), None)
        if real is None or not loader.is_file():
            raise InputError(f"the locked build tools lack {name if real is None else loader}",
                             hint="add its package to board/common/build-packages.txt and run "
                                  "make lock")
        _only_from_tree(loader, libs, real, tree)
        gconv = tree / "usr/lib" / triplet / "gconv"  # glibc's charset modules: the tree's too
        wrapper = bin_dir / name
        wrapper.write_text(
            "#!/bin/sh\n# the locked build environment's own program (scripts/image/tools.py)\n"
            f"GCONV_PATH={shlex.quote(str(gconv))} exec {shlex.quote(str(loader))} "
            f"--library-path {shlex.quote(libs)} --argv0 {shlex.quote(name)} "
            f"{shlex.quote(str(real))} \"$@\"\n")
        wrapper.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    stage(f"tools: {len(debs)} locked packages unpacked; {', '.join(PROGRAMS)} run from "
          f"{tree}")
    return bin_dir


def _only_from_tree(loader: Path, libs: str, program: Path, tree: Path) -> None:
    """Refuse a program the tree's loader would complete with a library of the host's (a
    package missing from build-packages.txt: ld.so falls back to the system directories)."""
    listed = output([loader, "--library-path", libs, "--list", program])
    outside = [line.split("=>")[1].split()[0] for line in listed.splitlines()
               if "=>" in line and not Path(line.split("=>")[1].split()[0]).resolve()
               .is_relative_to(tree.resolve())]
    if outside:
        raise InputError(f"{program.name} from the locked build tools would load the host's "
                         f"{', '.join(outside)}",
                         hint="add the package that ships it to board/common/build-packages.txt "
                              "and run make lock")
