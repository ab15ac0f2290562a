"""What is (and is not) inside the root filesystem of the built image.

Read from the squashfs in slot A of the qemu-arm64 image (the root is the same recipe for every
board): only the device runtime, no console or signer code, no package manager, no login for
the service users, no world-writable files, no setuid programs, no per-device identity.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.image.conftest import extract, partitions

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]  # builds take minutes
VOLATILE = ("tmp", "var", "run", "dev", "proc", "sys")


@pytest.fixture(scope="module")
def root(qemu_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    img = qemu_out / "coalmine-qemu-arm64.img"
    work = tmp_path_factory.mktemp("root")
    sqfs = extract(img, partitions(img)[1], work / "root.squashfs")
    dest = work / "root"
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(dest), str(sqfs)], check=True,
                   capture_output=True)
    return dest


@pytest.fixture(scope="module")
def listing(qemu_out: Path, root: Path) -> list[tuple[str, str]]:
    """(mode string, path) for every entry, from unsquashfs -lls (what the device sees)."""
    sqfs = root.parent / "root.squashfs"
    out = subprocess.run(["unsquashfs", "-lls", "-d", "", str(sqfs)], capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^([-dlcbps][-rwxsStT]{9}) \S+ +\d+ \S+ \S+ (/.*?)(?: -> .*)?$", line)
        if m:
            rows.append((m.group(1), m.group(2)))
    assert len(rows) > 1000
    return rows


def test_only_the_device_runtime(root: Path) -> None:
    lib = root / "usr/lib/coalmine"
    assert sorted(p.name for p in lib.iterdir()) == ["BUILD", "firmware"]
    assert (lib / "firmware/agent/__main__.py").is_file()
    assert list(lib.rglob("*.pyc")), "the runtime is byte-compiled"
    for forbidden in ("console", "signing", "tests", "scripts"):
        assert not list(root.glob(f"usr/lib/**/{forbidden}/cli.py")), forbidden
        assert not (lib / forbidden).exists()
    names = {p.name for p in root.rglob("*.py")}
    assert "signer.py" not in names


def test_no_package_manager_docs_or_locales(root: Path) -> None:
    for tool in ("apt", "apt-get", "dpkg", "dpkg-deb", "dpkg-query"):
        assert not (root / "usr/bin" / tool).exists(), tool
    assert not (root / "etc/apt").exists()
    assert not (root / "usr/share/man").exists()
    assert not (root / "usr/share/locale").exists()
    docs = [p for p in (root / "usr/share/doc").rglob("*") if p.is_file()]
    assert docs and all(p.name == "copyright" for p in docs)


def test_service_users_have_no_login(root: Path) -> None:
    users = {f[0]: f for f in (line.split(":") for line in
                               (root / "etc/passwd").read_text().splitlines())}
    for name, uid in (("coalmine-agent", "901"), ("coalmine-ssh", "902")):
        assert users[name][2] == uid
        assert users[name][6] == "/usr/sbin/nologin"
    for unit, user in (("coalmine-agent", "coalmine-agent"), ("coalmine-ssh", "coalmine-ssh")):
        text = (root / f"usr/lib/systemd/system/{unit}.service").read_text()
        assert f"User={user}" in text
        assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text


def test_no_login_on_any_console(root: Path) -> None:
    system = root / "etc/systemd/system"
    for unit in ("getty@.service", "serial-getty@.service", "autovt@.service",
                 "console-getty.service", "debug-shell.service"):
        assert (system / unit).is_symlink() and str((system / unit).readlink()) == "/dev/null"
    assert not list(system.glob("*/serial-getty@*"))
    assert str((root / "etc/systemd/system-generators/systemd-run-generator").readlink()) \
        == "/dev/null"


def test_nothing_world_writable_or_setuid(listing: list[tuple[str, str]]) -> None:
    bad = []
    for mode, path in listing:
        top = path.strip("/").split("/", 1)[0]
        if mode[0] == "l" or top in VOLATILE:
            continue
        if mode[8] in "wW" or mode[3] in "sS" or mode[6] in "sS":
            bad.append(f"{mode} {path}")
    assert not bad, bad


def test_identity_is_made_at_first_boot(root: Path) -> None:
    assert (root / "etc/machine-id").read_text() == ""
    assert not list(root.glob("etc/ssh/ssh_host_*"))
    assert not list(root.glob("var/*")), "/var is a tmpfs at run time"
    fstab = (root / "etc/fstab").read_text()
    assert re.search(r"(?m)^tmpfs\s+/var\s+tmpfs", fstab)
    assert re.search(r"(?m)^tmpfs\s+/tmp\s+tmpfs", fstab)
    journald = (root / "etc/systemd/journald.conf.d/coalmine.conf").read_text()
    assert "Storage=volatile" in journald and "RuntimeMaxUse=" in journald


def test_sbom_lists_every_locked_package(qemu_out: Path) -> None:
    from scripts.image.lock import read_lock

    doc = json.loads((qemu_out / "coalmine-qemu-arm64.spdx.json").read_text())
    assert doc["spdxVersion"] == "SPDX-2.3"
    pkgs = {p["name"]: p for p in doc["packages"]}
    for pin in read_lock():
        if pin.role == "root" or pin.name.startswith("linux-image"):
            assert pkgs[pin.name]["versionInfo"] == pin.version
            assert pkgs[pin.name]["checksums"][0]["checksumValue"] == pin.sha256
    assert "raspi-firmware" not in pkgs  # only the boards that use it list it
    assert {"coalmine-firmware", "coalmine-overlay", "coalmine-qemu-arm64-image"} <= set(pkgs)


def test_unit_sandbox_scores(root: Path) -> None:
    """systemd-analyze security (offline, the host's systemd): both services well hardened."""
    for unit, limit in (("coalmine-agent.service", 1.5), ("coalmine-ssh.service", 2.0)):
        proc = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                               f"--root={root}", "--no-pager", unit],
                              capture_output=True, text=True, check=False)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
        assert m, proc.stdout + proc.stderr
        assert float(m.group(1)) <= limit, (unit, proc.stdout[-3000:])
        assert stat.S_ISREG((root / "usr/lib/systemd/system" / unit).stat().st_mode)
