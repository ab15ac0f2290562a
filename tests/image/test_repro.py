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

import shlex
import shutil
from pathlib import Path

import pytest

from scripts.image.build import command
from scripts.image.cache import trusted_dir
from scripts.image.common import REPO, cache_dir
from scripts.image.repro import differing, sums, varied
from tests.chroot import CHECKOUT, made

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]  # builds take minutes
OTHER = {"bookworm": "trixie", "trixie": "bookworm"}


def other_release() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"') in OTHER:
            return OTHER[value.strip('"')]
    pytest.fail("the other builder needs a bookworm or trixie host")


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
                            f"here:\n{env_here}\nthere:\n{env_there}")
