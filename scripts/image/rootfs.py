"""The one root filesystem recipe shared by every board: locked Debian packages, then our layer.

Two steps, because they cost very differently:

* ``base()``: mmdebstrap installs exactly the locked ``root`` packages from a throw-away local
  repository made of the cached .debs (no network, no other version can sneak in).  Maintainer
  scripts run under qemu-user emulation, which makes this the slow step, so its tarball is kept
  in a stage cache keyed by everything it depends on (lock with every package's SHA-256,
  recipe, mmdebstrap options) and checked before use (scripts/image/cache.py).
  ``make check-repro`` turns the stage cache off to prove the step itself is reproducible.
* ``customize()``: on the build host, quick: overlay, the device runtime, users, units,
  stripping (no package manager, docs, man pages, locales; no setuid bits), first-boot identity.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from firmware.shared.proc import output, run
from scripts.image import cache
from scripts.image.common import ARCH, REPO, SUITE, cache_dir, stage
from scripts.image.lock import Pin, lock_epoch

# Paths dpkg never writes (docs, man pages, locales); copyright files stay (licence notices).
PATH_EXCLUDES = [
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/usr/share/lintian/*", "/usr/share/linda/*", "/usr/share/bash-completion/*",
    "/usr/share/zsh/*", "/usr/share/fish/*",
]
PATH_INCLUDES = ["/usr/share/doc/*/copyright"]
# Bump when base() changes in a way the inputs below do not capture.
RECIPE_VERSION = "1"

# Package management and its helpers: never on a device (updates are signed slot images).
STRIP_PATHS = [
    "etc/apt", "etc/dpkg", "etc/cron.daily", "etc/logrotate.d", "usr/lib/apt", "usr/lib/dpkg",
    "usr/share/dpkg", "usr/share/debconf", "usr/share/apt", "usr/share/perl5/Debconf",
    "usr/share/perl5/Debian", "usr/share/keyrings", "usr/share/pixmaps", "usr/share/menu",
    "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
    "usr/share/bash-completion", "usr/share/gcc", "usr/share/gdb", "usr/share/common-licenses",
    "usr/lib/python3.13/ensurepip", "usr/lib/python3.13/idlelib", "usr/lib/python3.13/pydoc_data",
    "usr/lib/python3.13/turtledemo", "usr/lib/python3.13/tkinter",
]
STRIP_GLOBS = [
    "usr/bin/apt*", "usr/bin/dpkg*", "usr/sbin/dpkg*", "usr/bin/debconf*", "usr/sbin/dpkg-*",
    "usr/bin/sqv", "usr/sbin/update-*", "usr/sbin/invoke-rc.d", "usr/sbin/service",
    # systemd-resolved's postinst keeps the build host's resolv.conf (its nameserver, and its
    # mode: another builder's differs); py3compile's own modules, compiled differently by
    # different mmdebstrap versions, and never run without a package manager
    "etc/.resolv.conf.systemd-resolved.bak", "usr/share/python3/debpython/__pycache__",
    "usr/lib/systemd/system/apt-daily*", "usr/lib/systemd/system/dpkg-db-backup.*",
    "etc/systemd/system/timers.target.wants/apt-daily*",
    "etc/systemd/system/timers.target.wants/dpkg-db-backup.*",
]


def base(pins: list[Pin], debs: Path, work: Path, *, use_cache: bool = True) -> Path:
    """A tarball of the locked root packages installed by mmdebstrap (from the stage cache)."""
    roots = sorted((p for p in pins if p.role == "root"), key=lambda p: p.name)
    key = hashlib.sha256()
    key.update(f"{RECIPE_VERSION} {lock_epoch()}".encode())
    key.update(" ".join(_mmdebstrap_args("X", "Y", roots)).encode())
    key.update(" ".join(p.sha256 for p in roots).encode())  # the bytes, not only the versions
    key.update(output(["mmdebstrap", "--version"]).encode())
    tar = stage_cache() / f"rootfs-base-{key.hexdigest()[:20]}.tar"
    if use_cache and cache.lookup(tar):
        stage(f"rootfs: base from the stage cache {tar} (its SHA-256 checked)")
        return tar
    repo = work / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    for p in roots:
        _link(debs / p.deb, repo / p.deb)
    stage(f"rootfs: local repository of {len(roots)} locked packages")
    packages = output(["apt-ftparchive", "packages", "."], cwd=repo)
    (repo / "Packages").write_text(packages)
    stage("rootfs: mmdebstrap (maintainer scripts run under qemu-user: the slow step)")
    out = work / "rootfs-base.tar"
    run(_mmdebstrap_args(str(repo), str(out), roots),
        env={"SOURCE_DATE_EPOCH": str(lock_epoch())})
    if use_cache:
        cache.store(out, tar)
    return out


def stage_cache() -> Path:
    """Built stages (rootfs base tarballs), beside the download cache, keyed by their inputs."""
    return cache_dir().parent / "stage"


def _mmdebstrap_args(repo: str, out: str, roots: list[Pin]) -> list[str]:
    args = [
        "mmdebstrap", "--mode=root", "--variant=custom", f"--arch={ARCH}", "--format=tar",
        "--aptopt=Acquire::Languages \"none\"", "--aptopt=APT::Install-Recommends \"false\"",
        "--include=" + ",".join(f"{p.name}={p.version}" for p in roots),
    ]
    args += [f"--dpkgopt=path-exclude={p}" for p in PATH_EXCLUDES]
    args += [f"--dpkgopt=path-include={p}" for p in PATH_INCLUDES]
    args += [SUITE, out, f"deb [trusted=yes] copy://{repo} ./"]
    return args


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def unpack(tar: Path, root: Path) -> None:
    """Extract the base tarball (as root: check_host made sure), keeping owners and xattrs."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    run(["tar", "-C", root, "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tar],
        quiet=True)


def keep_package_database(root: Path, dest: Path) -> Path:
    """Copy dpkg's status file out of the base before ``strip`` removes it (for the SBOM).

    The SBOM is checked against what dpkg actually installed, not only against the lock it was
    asked to install, so a package that slipped in (or went missing) cannot go unreported.
    """
    shutil.copyfile(root / "var/lib/dpkg/status", dest)
    return dest


def chroot(root: Path, *argv: str) -> str:
    """Run a command of the image itself (arm64, through qemu-user binfmt)."""
    return output(["chroot", root, *argv], env={"LC_ALL": "C.UTF-8", "PATH": "/usr/sbin:/usr/bin"},
                  quiet=False)


def add_runtime(root: Path) -> None:
    """The device runtime (firmware/ only: no console or signer code), byte-compiled."""
    dest = root / "usr/lib/coalmine"
    shutil.rmtree(dest, ignore_errors=True)
    src = REPO / "firmware"
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(REPO)
        if "__pycache__" in rel.parts:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(0o644)
    for d in sorted(p for p in dest.rglob("*") if p.is_dir()):
        d.chmod(0o755)
    # unchecked-hash: the .pyc records the source hash, not an mtime, so it is reproducible
    # and never rewritten (the root is read-only anyway).
    stage("rootfs: byte-compiling the device runtime with the image's Python")
    chroot(root, "python3", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
           "/usr/lib/coalmine")


def add_overlay(root: Path, overlay: Path) -> None:
    """Lay the overlay tree over the root (files keep their mode; owners become root)."""
    for path in sorted(overlay.rglob("*")):
        target = root / path.relative_to(overlay)
        if path.is_symlink():
            target.unlink(missing_ok=True)
            target.symlink_to(os.readlink(path))
        elif path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o755)
        else:
            target.unlink(missing_ok=True)
            shutil.copyfile(path, target)
            target.chmod(0o755 if os.access(path, os.X_OK) else 0o644)


def strip(root: Path) -> None:
    """Remove the package manager, docs, locales, caches, logs and every setuid/setgid bit."""
    for rel in STRIP_PATHS:
        shutil.rmtree(root / rel, ignore_errors=True)
    for pattern in STRIP_GLOBS:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    doc = root / "usr/share/doc"
    for path in sorted(doc.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.name != "copyright":
            path.unlink()
    # /var is a tmpfs at run time: whatever the packages left there is invisible, drop it.
    var = root / "var"
    for child in list(var.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for path in root.rglob("*"):
        if path.is_symlink() or not path.exists():
            continue
        mode = path.lstat().st_mode
        if mode & 0o6000 and not path.is_dir():
            path.chmod(mode & 0o1777)
    for name in ("usr/lib/python3.13", "usr/lib/python3/dist-packages"):
        for pycache in (root / name).rglob("__pycache__"):
            for pyc in pycache.glob("*.opt-*.pyc"):
                pyc.unlink()


def clamp_times(root: Path, sde: int) -> None:
    """No timestamp newer than SOURCE_DATE_EPOCH (our layer's files carry the build time)."""
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if st.st_mtime > sde or st.st_atime > sde:
            os.utime(path, (min(st.st_atime, sde), min(st.st_mtime, sde)),
                     follow_symlinks=False)


def identity(root: Path) -> None:
    """First-boot identity: empty machine-id (systemd makes one in RAM), no host keys."""
    (root / "etc/machine-id").write_text("")
    for rel in ("etc/resolv.conf", "etc/localtime"):
        (root / rel).unlink(missing_ok=True)
    (root / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (root / "etc/localtime").symlink_to("../usr/share/zoneinfo/Etc/UTC")
    (root / "etc/timezone").write_text("Etc/UTC\n")
    for key in sorted((root / "etc/ssh").glob("ssh_host_*")) if (root / "etc/ssh").is_dir() else []:
        key.unlink()
    for mount in ("data", "boot/firmware"):
        (root / mount).mkdir(parents=True, exist_ok=True)
