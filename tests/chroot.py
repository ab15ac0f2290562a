"""A fresh Debian machine for tests: a minbase chroot, the working tree copied in, and a way to
run one command in it in fresh namespaces (tests/test_fresh_machine.py tells the story).

Each command runs in its own mount and PID namespace (``unshare --mount --pid --kill-child``):
the binds (/proc, binfmt_misc, apt and pip caches, the local package indexes this machine's pip
is configured with) and any process a command starts vanish with it, so nothing leaks into the
host even when a step fails or times out.  ``made`` still checks for leftover mounts before it
deletes the chroot.  Caches, all outside the checkout: the minbase tarball
(~/.cache/coalmine/fresh/, one per suite and UTC day), and the host's apt archive and pip cache,
bind-mounted so downloads are shared.
"""

from __future__ import annotations

import configparser
import contextlib
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.image.common import host_mirror

ROOT = Path(__file__).resolve().parent.parent
CHECKOUT = "/root/coalmine"  # where the copy of the working tree lives inside the chroot
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PREREQUISITES = "make,git"  # the README's one prerequisite: apt-get install make git
BINFMT = "/proc/sys/fs/binfmt_misc"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
PIP_CACHE = Path("/root/.cache/pip")  # pip's default for root, where the host's cache is bound


def host_codename() -> str | None:
    """This machine's Debian release (VERSION_CODENAME in /etc/os-release), if it names one."""
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    return None


def minbase_tarball(suite: str) -> Path:
    """mmdebstrap --variant=minbase plus make and git, cached for the UTC day."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coalmine/fresh"
    day = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    tarball = cache / f"minbase-{suite}-{day}.tar"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob(f"minbase-{suite}-*.tar*"):
        old.unlink()
    part = tarball.with_suffix(".tar.part")
    proc = subprocess.run(
        ["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase", "--format=tar",
         f"--include={PREREQUISITES}", suite, str(part), host_mirror()],
        capture_output=True, text=True, check=False, timeout=1200)
    assert proc.returncode == 0, f"mmdebstrap failed:\n{proc.stdout}\n{proc.stderr}"
    part.rename(tarball)
    return tarball


def pip_config() -> tuple[list[Path], dict[str, str]]:
    """This machine's pip configuration: existing config files and PIP_* variables.

    The files pip reads for every user (pip's documented locations, without the per-interpreter
    "site" file) are copied into the chroot and the variables passed, so pip there reaches the
    package index the way it does here.
    """
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    xdg_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidates = [Path(d) / "pip/pip.conf" for d in xdg_dirs] + [
        Path("/etc/pip.conf"), Path.home() / ".pip/pip.conf", xdg_home / "pip/pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        candidates.append(Path(os.environ["PIP_CONFIG_FILE"]))
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    return [p for p in candidates if p.is_file()], env


def local_paths(files: list[Path], env: dict[str, str]) -> set[Path]:
    """Local files and folders the pip configuration names (find-links, file:// indexes ...).

    A local index folder (.../simple) comes with its parent: its pages link to ../../files/.
    The system CA bundle is left out: the chroot gets its own from the ca-certificates package.
    """
    values = list(env.values())
    for f in files:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(f)
        values += [v for s in parser.sections() for v in parser[s].values()]
    found = set()
    for token in " ".join(values).split():
        path = Path(token.removeprefix("file://"))
        if path.is_absolute() and path.exists() and not path.is_relative_to("/etc/ssl"):
            found.add(path.parent if path.name == "simple" else path)
    return found


def cache_binds() -> list[tuple[Path, Path]]:
    """(host folder, chroot folder) of the apt archive and pip caches, shared read-write.

    The chroot's pip is pointed at its side with PIP_CACHE_DIR (see the fixture).
    """
    binds = []
    apt = subprocess.run(["apt-config", "shell", "D", "Dir::Cache::archives/d"],
                         capture_output=True, text=True, check=False).stdout
    if m := re.search(r"D='([^']+)'", apt):
        binds.append((Path(m.group(1)), Path("/var/cache/apt/archives")))
    pip = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"],
                         capture_output=True, text=True, check=False)
    if pip.returncode == 0 and pip.stdout.strip():
        cache = Path(pip.stdout.strip())
        cache.mkdir(parents=True, exist_ok=True)
        binds.append((cache, PIP_CACHE))
    return [(src, dst) for src, dst in binds if src.is_dir()]


class Chroot:
    """A minbase root filesystem; ``run`` executes one command in it, in fresh namespaces."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.binds: list[tuple[Path, Path, bool]] = []  # host path, chroot path, read-only
        self.log: list[str] = []

    def bind(self, src: Path, dst: Path, *, ro: bool) -> None:
        target = self.root / dst.relative_to("/")
        if src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        self.binds.append((src, dst, ro))

    def run(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        r = str(self.root)
        q = shlex.quote
        setup = ["set -e",
                 # ptys for apt and dpkg: a private devpts instance
                 f"mount -t devpts -o newinstance,ptmxmode=0666 devpts {q(r + '/dev/pts')}",
                 f"mount --bind {q(r + '/dev/pts/ptmx')} {q(r + '/dev/ptmx')}",
                 # arm64 emulation as the host has it, read-only: binfmt_misc is the kernel's,
                 # and package scripts in the chroot (qemu-user-static, binfmt-support) must
                 # not register formats on the host (they warn and carry on)
                 f"mount --bind -o ro {BINFMT} {q(r + BINFMT)}"]
        for src, dst, ro in self.binds:
            setup.append(shlex.join(["mount", "--bind", *(["-o", "ro"] if ro else []),
                                     str(src), r + str(dst)]))
        env = {"HOME": "/root", "PATH": PATH, "LANG": "C.UTF-8", **self.env}
        inner = f"cd {CHECKOUT} && {command}"
        setup.append(shlex.join(["exec", "chroot", r, "/usr/bin/env", "-i",
                                 *(f"{k}={v}" for k, v in env.items()), "/bin/bash", "-c", inner]))
        start = time.monotonic()
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--pid", "--kill-child",
             f"--mount-proc={r}/proc", "/bin/bash", "-c", "\n".join(setup)],
            capture_output=True, text=True, check=False, timeout=timeout)
        took = time.monotonic() - start
        self.log.append(f"$ {command}   [exit {proc.returncode}, {took:.0f}s]\n"
                        f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}")
        print(self.log[-1], flush=True)  # pytest shows it when the test fails
        return proc

    def ok(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = self.run(command, timeout)
        assert proc.returncode == 0, f"step failed:\n{self.log[-1]}"
        return proc


def mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return [p for p in points if Path(p).is_relative_to(root)]


def tree_files() -> Iterator[str]:
    """Tracked and untracked-but-not-ignored files: the working tree as a commit would see it."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return (name for name in out.split("\0") if name)


def copy_tree(dest: Path) -> None:
    for name in tree_files():
        src, dst = ROOT / name, dest / name
        if not src.is_symlink() and not src.is_file():  # deleted in the working tree
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)


@contextlib.contextmanager
def made(tmp_path: Path, suite: str) -> Iterator[Chroot]:
    """A fresh minbase chroot of ``suite`` with a copy of the working tree at CHECKOUT."""
    if os.geteuid() != 0:
        pytest.skip("builds a chroot: run as root")
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: run `make deps`")
    if not os.path.ismount(BINFMT):
        pytest.fail(f"{BINFMT} is not mounted: run `make image-deps` on the host")
    tarball = minbase_tarball(suite)
    root = tmp_path / "root"
    root.mkdir()
    files, env = pip_config()
    env |= {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")}
    chroot = Chroot(root, env)
    try:
        subprocess.run(["tar", "-xpf", tarball, "--numeric-owner", "-C", root], check=True)
        # Package scripts start no daemons: the chroot shares the host's network.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (root / "etc/resolv.conf").unlink(missing_ok=True)
        (root / "etc/resolv.conf").write_text(Path("/etc/resolv.conf").read_text())
        if LOCAL_CAS.is_dir():  # this machine's own CAs: ca-certificates adds them to the bundle
            shutil.copytree(LOCAL_CAS, root / LOCAL_CAS.relative_to("/"), dirs_exist_ok=True)
        for f in files:
            target = root / f.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        for path in local_paths(files, env):
            if path.is_dir():
                chroot.bind(path, path, ro=True)
            else:
                target = root / path.relative_to("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        for src, dst in cache_binds():
            chroot.bind(src, dst, ro=False)
            if dst == PIP_CACHE:
                env["PIP_CACHE_DIR"] = str(PIP_CACHE)
        copy_tree(root / CHECKOUT.lstrip("/"))
        yield chroot
    finally:
        for point in reversed(mounts_under(root)):  # none expected: the binds die with each step
            subprocess.run(["umount", "--lazy", point], check=False)
        if mounts_under(root):
            pytest.fail(f"mounts left under {root}, not deleting it: {mounts_under(root)}")
        shutil.rmtree(root, ignore_errors=True)
