"""The same commit gives the same bytes on another builder (what `make check-repro` checks too).

The session's qemu-arm64 build runs on this machine and may take the rootfs base from the stage
cache.  The second build runs on another builder: a fresh chroot of the *other* Debian release
(trixie on a bookworm host, bookworm on a trixie one: other mmdebstrap, apt, dpkg, tar, Python
and libraries), with the same commit (the working tree and its git history copied in), installed
by the README's own `make image-deps`.  It starts from empty stage directories, bypasses the
stage cache, and varies what else differs between builders (scripts.image.repro.VARIED: umask
077, another locale, time zone, host name and build path).  Only the download cache (locked,
hash-checked .debs) is shared.  Every output must have the same SHA-256.
"""

from __future__ import annotations

import difflib
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.image.build import command, work_dir
from scripts.image.cache import trusted_dir
from scripts.image.common import REPO, cache_dir, sha256_file
from scripts.image.repro import STAGE_FILES, differing, sums, varied
from tests.chroot import CHECKOUT, host_codename, made

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]  # builds take minutes
OTHER = {"bookworm": "trixie", "trixie": "bookworm"}


def other_release() -> str:
    suite = host_codename()
    if suite not in OTHER:
        pytest.fail("the other builder needs a bookworm or trixie host")
    return OTHER[suite]


def test_another_builder_from_scratch_gives_the_same_bytes(
        qemu_out: Path, tmp_path: Path) -> None:
    with made(tmp_path, other_release()) as builder:
        shutil.copytree(REPO / ".git", builder.root / CHECKOUT.lstrip("/") / ".git",
                        symlinks=True)
        builder.bind(trusted_dir(cache_dir()), Path("/root/.cache/coalmine/dl"), ro=False)
        builder.ok("make image-deps", timeout=1800)
        builder.ok("git status --short && .venv/bin/python -m scripts.image.build --help")
        out = Path("/tmp/elsewhere/out/qemu-arm64")
        argv = [".venv/bin/python", *command("qemu-arm64", out, "--no-stage-cache")[1:]]
        argv, env = varied(argv)
        builder.ok(" ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()),
                             shlex.join(argv)]), timeout=3000)
        again = builder.root / str(out).lstrip("/")
        assert set(sums(qemu_out / "SHA256SUMS")) >= {
            "coalmine-qemu-arm64.img", "coalmine-qemu-arm64.img.xz",
            "coalmine-qemu-arm64.bmap", "coalmine-qemu-arm64.spdx.json"}
        differ = differing(qemu_out / "SHA256SUMS", again / "SHA256SUMS")
        env_here = (qemu_out / "build-env.txt").read_text()
        env_there = (again / "build-env.txt").read_text()
        assert env_here != env_there, "the two builders should differ in their host tools"
        assert not differ, (f"not reproducible on another builder: {differ}\n"
                            + stage_differences(work_dir(qemu_out), work_dir(again), tmp_path)
                            + f"\nhere:\n{env_here}\nthere:\n{env_there}")


def stage_differences(here: Path, there: Path, tmp: Path) -> str:
    """Which stage files differ, and for the root filesystem the entries that do (names,
    modes, owners, sizes, times, then content): where to look first."""
    lines = [f"(stage) {name}" for name in STAGE_FILES
             if (here / name).is_file() and (there / name).is_file()
             and sha256_file(here / name) != sha256_file(there / name)]
    if "(stage) root.squashfs" in lines:
        listings = []
        for side in (here, there):
            out = subprocess.run(["unsquashfs", "-lln", str(side / "root.squashfs")],
                                 capture_output=True, text=True, check=False).stdout
            listings.append(out.splitlines())
        lines += list(difflib.unified_diff(listings[0], listings[1], "here", "there",
                                           lineterm="", n=0))[:80]
        for side, name in ((here, "here"), (there, "there")):
            subprocess.run(["unsquashfs", "-q", "-n", "-d", str(tmp / name),
                            str(side / "root.squashfs")], capture_output=True, check=False)
        diff = subprocess.run(["diff", "-rq", "--no-dereference", str(tmp / "here"),
                               str(tmp / "there")], capture_output=True, text=True, check=False)
        lines += diff.stdout.splitlines()[:40]
    return "\n".join(lines)
