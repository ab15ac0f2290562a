"""What is (and is not) inside the root filesystem of the built image.

Read from the squashfs in slot A of the qemu-arm64 image (the root is the same recipe for every
board): only the device runtime, no console or signer code, no package manager, no login for
the service users, no world-writable files, no setuid programs, no per-device identity.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import stat
import subprocess
from pathlib import Path

import pytest

from firmware.config import LISTENER_PORTS, SMBService
from firmware.protocol.catalogue import SOURCES
from tests.image.conftest import cpio_files, extract, partitions

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
    for name, uid in (("coalmine-agent", "901"), ("coalmine-ssh", "902"), ("coalmine-ftp", "904"),
                      ("coalmine-telnet", "905"), ("coalmine-redis", "906"),
                      ("coalmine-http", "907")):
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


def test_sbom_lists_exactly_what_dpkg_installed(qemu_out: Path) -> None:
    """Against dpkg's own database of the root (kept by the build before stripping it), not
    against the lock the SBOM is made from: a package that slipped in or went missing shows."""
    from scripts.image.build import DPKG_STATUS, work_dir
    from scripts.image.sbom import installed_packages

    installed = installed_packages((work_dir(qemu_out) / DPKG_STATUS).read_text())
    assert {"systemd", "python3", "python3-asyncssh", "python3-systemd"} <= set(installed)
    doc = json.loads((qemu_out / "coalmine-qemu-arm64.spdx.json").read_text())
    assert doc["spdxVersion"] == "SPDX-2.3"
    in_root: dict[str, tuple[str, str]] = {}
    for pkg in doc["packages"]:
        if pkg.get("comment") == "installed into the root filesystem":
            purl = pkg["externalRefs"][0]["referenceLocator"]
            arch = re.search(r"arch=(\w+)", purl)
            assert arch, purl
            in_root[pkg["name"]] = (pkg["versionInfo"], arch[1])
            assert re.fullmatch(r"[0-9a-f]{64}", pkg["checksums"][0]["checksumValue"])
    assert in_root == installed
    names = {p["name"] for p in doc["packages"]}
    assert any(n.startswith("linux-image-6") for n in names), "the kernel is listed"
    assert "raspi-firmware" not in names  # only the boards that use it list it
    assert {"coalmine-firmware", "coalmine-overlay", "coalmine-qemu-arm64-image"} <= names


def test_production_initramfs_offers_no_shell(qemu_out: Path) -> None:
    """Whatever anyone writes into cmdline.txt, a production initramfs never drops to a shell."""
    files = cpio_files(gzip.decompress((qemu_out / "boot/initrd.img").read_bytes()))
    init = files["init"].decode()
    assert "switch_root /newroot /sbin/init" in init
    assert "exec sh" not in init and "coalmine.debug)" not in init
    assert "reboot -f" in init, "a failed boot reboots instead"
    assert "coalmine.debug" not in (qemu_out / "boot/cmdline.txt").read_text()


def test_one_network_and_no_forwarding(root: Path) -> None:
    net = root / "etc/systemd/network"
    assert sorted(p.name for p in net.iterdir()) == ["20-wired.network", "90-others.network"]
    assert "Name=eth0" in (net / "20-wired.network").read_text()
    assert "ActivationPolicy=always-down" in (net / "90-others.network").read_text()
    sysctl = (root / "usr/lib/sysctl.d/60-coalmine.conf").read_text()
    assert "net.ipv4.ip_forward = 0" in sysctl and "net.ipv6.conf.all.forwarding = 0" in sysctl
    modules = {p.name.split(".")[0] for p in (root / "usr/lib/modules").rglob("*.ko*")}
    assert not modules & {"bridge", "8021q", "bonding", "veth", "tun"}, "nothing to join networks"


def test_boots_into_the_devices_own_target(root: Path) -> None:
    system = root / "etc/systemd/system"
    assert str((system / "default.target").readlink()).endswith("/coalmine.target")
    target = (root / "usr/lib/systemd/system/coalmine.target").read_text()
    wants = {w for line in target.splitlines() if line.startswith("Wants=")
             for w in line.removeprefix("Wants=").split()}
    assert wants == {"systemd-networkd.service", "systemd-resolved.service",
                     "coalmine-provision.service", "coalmine-settings-boot.service",
                     "coalmine-button.service", "coalmine-agent.service", "coalmine-config.path",
                     "coalmine-ssh.socket", "coalmine-ssh.service"}
    for unit in ("systemd-logind.service", "systemd-user-sessions.service", "modprobe@.service",
                 "systemd-hostnamed.service", "proc-sys-fs-binfmt_misc.automount"):
        assert str((system / unit).readlink()) == "/dev/null", unit
    assert not (system / "coalmine.target.wants").exists(), "production: no serial shell"


def unit(root: Path, name: str) -> dict[str, list[str]]:
    """key -> values of a unit file (repeated keys collected; sections ignored)."""
    out: dict[str, list[str]] = {}
    for line in (root / "usr/lib/systemd/system" / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_event_path_and_agent_watchdog(root: Path) -> None:
    tmpfiles = (root / "usr/lib/tmpfiles.d/coalmine.conf").read_text()
    rows = {f[1]: f[2:5] for f in (line.split() for line in tmpfiles.splitlines())
            if f and not f[0].startswith("#")}
    assert rows["/run/coalmine"] == ["0750", "root", "coalmine-events"], "no daemon renames"
    assert rows["/run/coalmine/state"][1] == "coalmine-button", "the config-mode marker's"
    assert rows["/run/coalmine/apply"][1:] == ["root", "root"], "the settings layer's"
    assert rows["/run/coalmine/ssh"] == ["2750", "coalmine-agent", "coalmine-ssh"]
    assert rows["/data/coalmine/ssh"] == ["2750", "root", "coalmine-ssh"]
    for source in SOURCES:  # the agent makes a socket for each: it cannot make the directory
        group = "root" if source == "settings" else f"coalmine-{source}"
        assert rows[f"/run/coalmine/{source}"] == ["2750", "coalmine-agent", group], source
    agent = unit(root, "coalmine-agent.service")
    assert agent["Type"] == ["notify"] and agent["NotifyAccess"] == ["main"]
    assert agent["WatchdogSec"] == ["30s"] and agent["Restart"] == ["always"]
    assert "RuntimeDirectory" not in agent, "systemd would hand the whole tree to the agent"
    assert agent["ReadWritePaths"] == ["/run/coalmine /data/coalmine/agent"]
    assert (root / "usr/lib/python3/dist-packages/systemd/daemon.py").is_file()


def test_the_trust_root_is_pinned_or_its_absence_stated(root: Path) -> None:
    """No root is committed before the first ceremony: the image then pins none and says so
    (the installer refuses every update); with signing/trust-root.json it is pinned as is."""
    repo = Path(__file__).resolve().parents[2]
    build = (root / "usr/lib/coalmine/BUILD").read_text()
    committed = repo / "signing" / "trust-root.json"
    pinned = root / "usr/lib/coalmine/trust-root.json"
    if committed.exists():
        assert pinned.read_bytes() == committed.read_bytes()
        assert f"trust_root_sha256={hashlib.sha256(committed.read_bytes()).hexdigest()}" in build
    else:
        assert not pinned.exists() and "trust_root_sha256=none" in build


def test_config_mode_is_a_target_and_only_its_applier_writes_settings(root: Path) -> None:
    """coalmine-config.target runs exactly while the button daemon's marker exists; the data
    partition's settings are writable to its applier alone (docs/pairing.md)."""
    path = unit(root, "coalmine-config.path")
    assert path["PathExists"] == ["/run/coalmine/state/config"]
    assert path["Unit"] == ["coalmine-config.target"]
    target = unit(root, "coalmine-config.target")
    assert target["BindsTo"] == ["coalmine-settings.service"]
    applier = unit(root, "coalmine-settings.service")
    assert applier["ConditionPathExists"] == ["/run/coalmine/state/config"]
    assert "firmware.applier serve" in applier["ExecStart"][0]
    assert applier["PrivateNetwork"] == ["yes"] and applier["IPAddressDeny"] == ["any"]
    assert applier["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN"]
    settings = Path("/data/coalmine/settings")
    system = root / "usr/lib/systemd/system"
    for name in sorted(str(p.relative_to(system)) for p in system.glob("coalmine-*")
                       if p.is_file()) + [  # and drop-ins, which may add paths too
                           str(p.relative_to(system)) for p in system.glob("coalmine-*.d/*")]:
        fields = unit(root, name)
        writable = [Path(w.lstrip("-")) for v in fields.get("ReadWritePaths", [])
                    for w in v.split()]
        readonly = [Path(w.lstrip("-")) for v in fields.get("ReadOnlyPaths", [])
                    for w in v.split()]
        reaches = [w for w in writable if w == settings or w in settings.parents]
        if name == "coalmine-settings.service":
            assert writable[0] == settings
        elif name == "coalmine-growdata.service":  # formats p4 before /data is mounted
            assert fields["Before"][0].startswith("data.mount")
        elif reaches:
            assert settings in readonly, name
        elif name.endswith(".service"):
            assert fields.get("ProtectSystem") == ["strict"], name
    boot = unit(root, "coalmine-settings-boot.service")
    assert "/data" not in boot["ReadWritePaths"][0], "at boot the settings are only read"
    for name in ("coalmine-agent.service", "coalmine-ssh.service", "coalmine-button.service"):
        assert unit(root, name)["ExecStart"][0].endswith(
            "--config /run/coalmine/apply/settings.toml"), "the signed settings win"


def test_ssh_honeypot_gets_its_port_and_nothing_else(root: Path) -> None:
    sock = unit(root, "coalmine-ssh.socket")
    assert sock["ListenStream"] == ["22"] and sock["FileDescriptorName"] == ["ssh"]
    ssh = unit(root, "coalmine-ssh.service")
    assert ssh["CapabilityBoundingSet"] == [""] and ssh["AmbientCapabilities"] == [""]
    assert ssh["IPAddressDeny"] == ["any"] and ssh["PrivateNetwork"] == ["yes"]
    assert ssh["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert "ReadWritePaths" not in ssh and "StateDirectory" not in ssh
    assert "coalmine-ssh-hostkey.service" in ssh["Requires"][0]
    hostkey = unit(root, "coalmine-ssh-hostkey.service")
    assert "--make-host-key --key-group coalmine-ssh" in hostkey["ExecStart"][0]
    assert hostkey["ReadWritePaths"] == ["/data/coalmine/ssh"]


# every honeypot the listener template runs, and the port its socket unit holds
SOCKET_PORTS = {**LISTENER_PORTS, "smb": SMBService.port}


def test_listener_honeypots_get_their_port_their_user_and_nothing_else(root: Path) -> None:
    template = unit(root, "coalmine-listener@.service")
    assert template["User"] == ["coalmine-%i"] and template["PrivateNetwork"] == ["yes"]
    assert template["IPAddressDeny"] == ["any"] and template["RestrictAddressFamilies"] == [
        "AF_UNIX"]
    assert template["CapabilityBoundingSet"] == [""] and "ReadWritePaths" not in template
    assert template["MemoryMax"] and template["TasksMax"]
    for name, port in SOCKET_PORTS.items():
        sock = unit(root, f"coalmine-{name}.socket")
        assert sock["ListenStream"] == [str(port)] and sock["FileDescriptorName"] == [name]
        assert sock["Service"] == [f"coalmine-listener@{name}.service"]


def test_no_multicast_responders_and_a_bland_host_name(root: Path) -> None:
    resolved = (root / "etc/systemd/resolved.conf.d/coalmine.conf").read_text()
    assert "LLMNR=no" in resolved and "MulticastDNS=no" in resolved
    network = (root / "etc/systemd/network/20-wired.network").read_text()
    assert "LLMNR=no" in network and "MulticastDNS=no" in network
    assert "DHCP=ipv4" in network and "LinkLocalAddressing=no" in network
    hostname = (root / "etc/hostname").read_text().strip()
    assert hostname and "coalmine" not in hostname and "canary" not in hostname
    assert "coalmine" not in (root / "etc/hosts").read_text()


def test_unit_sandbox_scores(root: Path) -> None:
    """systemd-analyze security (offline, the host's systemd): every long-running service and
    the root oneshot that writes the SSH host key are well hardened.  Figures with Debian 12's
    systemd 252: agent 1.1 (it needs the network), SSH honeypot 0.2 (was 1.5 while it bound port
    22 itself with CAP_NET_BIND_SERVICE), host key oneshot 1.0 (root, CAP_CHOWN only), button
daemon 0.6 (no network; it needs the GPIO character devices, a group of its own for them and
coalmine-events to reach its event socket, so no PrivateDevices= and no PrivateUsers=)."""
    for name, limit in (("coalmine-agent.service", 1.1), ("coalmine-ssh.service", 0.2),
                        ("coalmine-ssh-hostkey.service", 1.0), ("coalmine-button.service", 0.6),
                        ("coalmine-portscan.service", 1.2),
                        ("coalmine-cert@https.service", 1.0), ("coalmine-cert@rdp.service", 1.0),
                        *((f"coalmine-listener@{n}.service", 0.2) for n in SOCKET_PORTS)):
        proc = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                               f"--root={root}", "--no-pager", name],
                              capture_output=True, text=True, check=False)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
        assert m, proc.stdout + proc.stderr
        assert float(m.group(1)) <= limit, (name, proc.stdout[-3000:])
        file = re.sub(r"@[^.]+\.", "@.", name)  # an instance is its template's file
        assert stat.S_ISREG((root / "usr/lib/systemd/system" / file).stat().st_mode)


def test_the_image_states_its_source_and_build_environment(root: Path, qemu_out: Path) -> None:
    """BUILD and the SBOM name the exact commit and whether the tree was dirty; the SBOM lists
    the locked build tools as BUILD_TOOL_OF the image; the host's tools are only diagnostics."""
    from scripts.image.common import source_state
    from scripts.image.lock import lock_path, read_lock

    commit, dirty = source_state()
    assert commit is not None, "the tests run in a git checkout"
    build = dict(line.split("=", 1) for line in
                 (root / "usr/lib/coalmine/BUILD").read_text().splitlines())
    assert build["commit"] == commit and build["dirty"] == str(int(dirty))
    assert build["version"].endswith(f"+g{commit[:12]}" + (".dirty" if dirty else ""))
    assert build["lock_sha256"] == hashlib.sha256(lock_path().read_bytes()).hexdigest()
    doc = json.loads((qemu_out / "coalmine-qemu-arm64.spdx.json").read_text())
    comment = doc["creationInfo"]["comment"]
    assert f"source commit {commit}" in comment and build["lock_sha256"] in comment
    assert "trixie-security@" in comment
    tools = {r["spdxElementId"] for r in doc["relationships"]
             if r["relationshipType"] == "BUILD_TOOL_OF"}
    locked = {p.name for p in read_lock() if p.role == "build"}
    listed = {p["name"] for p in doc["packages"] if p["SPDXID"] in tools}
    assert {"squashfs-tools", "libzstd1", "xz-utils", "mtools"} <= listed == locked
    contained = {r["relatedSpdxElement"] for r in doc["relationships"]
                 if r["relationshipType"] == "CONTAINS"}
    assert not tools & contained, "a build tool is not part of the image"
    env = (qemu_out / "build-env.txt").read_text()
    assert "squashfs-tools" in env and "build-env.txt" not in (qemu_out / "SHA256SUMS").read_text()


def test_nothing_of_the_build_host_is_left(root: Path) -> None:
    """systemd-resolved's postinst saved the builder's resolv.conf (its nameserver) in the
    image; another builder's mode for it made the bytes differ."""
    assert not (root / "etc/.resolv.conf.systemd-resolved.bak").exists()
    host = Path("/etc/resolv.conf").read_bytes() if Path("/etc/resolv.conf").is_file() else b""
    for line in host.splitlines():
        if line.startswith(b"nameserver"):
            hits = [p for p in (root / "etc").rglob("*")
                    if p.is_file() and not p.is_symlink() and line in p.read_bytes()]
            assert not hits, hits
