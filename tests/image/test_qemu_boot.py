"""The qemu-arm64 image boots under QEMU (TCG) and arms itself, seen only from the host.

The host runs the network side of a coalmine (console + unbound, from scripts/lab.py); the
guest gets coalmine.toml on its FAT partition like a defender would write it, pointing its
resolver at the host (10.0.2.2 in QEMU's user network).  The test reads the device key from
the serial console, enrolls it, then waits for a heartbeat and for a real OpenSSH login attempt
(through the port forward) to reach the console with its credentials.  The SSH honeypot runs
with PrivateNetwork=/IPAddressDeny=any and gets port 22 from a socket unit: that attempt is the
proof that those restrict only what the honeypot itself opens, not its listener.  The serial
console must show a clean boot into the device's own target, and the device must report (event
1103) that it listens on the network only where a honeypot listens.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from Crypto.Hash import MD4

from firmware.agent import memory
from firmware.shared.errors import EnvironmentFault
from scripts.image import armed
from scripts.lab import Lab

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]  # builds take minutes
BOOT_TIMEOUT = 600  # TCG on a loaded 2-core CI machine; typical is ~2 minutes to a heartbeat
MOVED_SSH_PORT = 2222  # where signed settings move the SSH honeypot (forwarded from the host)
SMB_PORT, FTP_PORT, RDP_PORT = 445, 21, 3389  # honeypots off in the image that settings turn on
# the others settings turn on, each checked with a greeting or one request (its port's forward)
GREETED = {"http": 80, "https": 443, "telnet": 23, "redis": 6379, "mysql": 3306, "vnc": 5900}
HONEY_USER, HONEY_PASSWORD = "svc_scan", "Copier-Tray-7"
MEMORY_REPORT = 20.0  # seconds between the agent's memory reports (1115; shipped: 3600)
HONEY_NT_HASH = MD4.new(HONEY_PASSWORD.encode("utf-16-le")).hexdigest()


@dataclass
class Booted:
    lab: Lab
    guest: armed.Guest
    code: str

    def log(self) -> str:
        return self.guest.log()


@pytest.fixture(scope="module")
def booted(qemu_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    work = tmp_path_factory.mktemp("qemu")
    (work / "lab").mkdir()
    with Lab(work / "lab", with_device=False) as lab:
        guest = armed.boot(lab, qemu_out, work,
                           guest_ports=(MOVED_SSH_PORT, SMB_PORT, FTP_PORT, RDP_PORT,
                                        *GREETED.values()),
                           limits={"memory_report": MEMORY_REPORT})
        try:
            code = armed.arm(lab, guest, timeout=BOOT_TIMEOUT)
            print(f"\nqemu: start -> pairing code {guest.code_seen - guest.started:.1f}s, "
                  f"-> first heartbeat {guest.armed - guest.started:.1f}s")
            yield Booted(lab, guest, code)
        finally:
            guest.stop()


def test_a_fresh_card_starts_in_config_mode_and_pairs_over_dns(booted: Booted) -> None:
    """Journey 2's first half with the image's own button daemon and agent: first boot enters
    config mode by itself, the device asks through unbound, shows its code, and is approved."""
    lab = booted.lab
    entered = lab.wait_event(lambda e: e["logtype"] == 1104, timeout=120)
    assert entered["logdata"]["REASON"] == "first-boot" and entered["node_id"] == "qemu-device"
    requested = lab.wait_event(lambda e: e["logtype"] == 1107, timeout=120)
    assert requested["logdata"]["FINGERPRINT"] == booted.code
    paired = lab.wait_event(lambda e: e["logtype"] == 1206, timeout=30)
    assert paired["logdata"]["FINGERPRINT"] == booted.code


def test_the_real_button_leaves_and_enters_config_mode(booted: Booted) -> None:
    """The libgpiod backend on a real GPIO line: QEMU's power button is wired to line 3 of the
    virt board's PL061 controller; a short press leaves config mode, a 3.5 s press enters it."""
    lab, guest = booted.lab, booted.guest
    lab.wait_event(lambda e: e["logtype"] == 1104, timeout=120)  # first boot: config mode
    guest.press(0.3)
    left = lab.wait_event(lambda e: e["logtype"] == 1105, timeout=60)
    assert left["logdata"]["REASON"] == "button" and left["logdata"]["SECONDS"] >= 0
    guest.press(3.6)
    lab.wait_event(lambda e: e["logtype"] == 1104 and e["logdata"]["REASON"] == "button",
                   timeout=60)
    guest.press(0.3)
    lab.wait_for(lambda: in_config_mode(lab) is False, 60, "config mode left again")
    assert not [e for e in lab.events() if e["logtype"] == 1106], "no press counted as tamper"


def in_config_mode(lab: Lab) -> bool:
    """What the console's events say: entered (1104) more often than left (1105)."""
    codes = [e["logtype"] for e in lab.events()]
    return codes.count(1104) > codes.count(1105)


def ssh_event_on(lab: Lab, port: int, user: str) -> dict[str, Any]:
    """A real OpenSSH login attempt through QEMU's forward to the guest's ``port``; its event.
    QEMU's forward accepts at once, even before the guest's honeypot listens: retry the attempt
    until its event arrives (each attempt that reached the honeypot is one event)."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        assert lab.ssh_attempt(user, "correct-horse", timeout=120, port=port) != 0
        try:
            return lab.wait_event(lambda e: e["logtype"] == 4002
                                  and e["logdata"].get("USERNAME") == user, timeout=30)
        except EnvironmentFault:
            assert time.monotonic() < deadline, f"no SSH event from the guest's port {port}"


def test_heartbeat_reaches_console_through_user_network(booted: Booted) -> None:
    devices = booted.lab.console("devices")
    assert "qemu-device" in devices and "last_heartbeat=never" not in devices
    assert booted.guest.armed - booted.guest.started < BOOT_TIMEOUT


def test_real_ssh_login_attempt_reaches_console(booted: Booted) -> None:
    event = ssh_event_on(booted.lab, booted.lab.ssh_port, "mallory")
    assert event["logdata"]["PASSWORD"] == "correct-horse"
    assert event["logdata"]["REMOTEVERSION"].startswith("SSH-2.0-OpenSSH")
    assert event["node_id"] == "qemu-device"
    assert event["dst_port"] == 22  # the guest's own port, behind QEMU's forward


UNITS = Path(__file__).resolve().parents[2] / "overlay/usr/lib/systemd/system"
# The one listener that is not a honeypot's: the DHCPv4 client's socket on port 68 of the leased
# address (systemd-networkd keeps it for unicast renewals).  No LLMNR (5355), no mDNS (5353), no
# DHCPv6 (546).
DHCP_CLIENT = {"UDP": {68}}


def honeypot_listeners(units: Path = UNITS) -> dict[str, set[int]]:
    """The ports of every socket unit the device's own target wants: the enabled honeypots."""
    wanted = {name for line in (units / "coalmine.target").read_text().splitlines()
              if line.startswith("Wants=") for name in line[len("Wants="):].split()}
    ports: dict[str, set[int]] = {"TCP": set(), "UDP": set()}
    for name in sorted(n for n in wanted if n.endswith(".socket")):
        for line in (units / name).read_text().splitlines():
            key, _, value = line.partition("=")
            proto = {"ListenStream": "TCP", "ListenDatagram": "UDP"}.get(key.strip())
            if proto:
                ports[proto].add(int(value.rpartition(":")[2]))
    return ports


def test_the_expected_listeners_come_from_the_enabled_socket_units() -> None:
    assert honeypot_listeners() == {"TCP": {22}, "UDP": set()}


def test_device_listens_only_where_a_honeypot_listens(booted: Booted) -> None:
    lab = booted.lab
    lab.wait_event(lambda e: e["logtype"] == 1103, timeout=120)
    reports = [e for e in lab.events() if e["logtype"] == 1103]
    assert all(e["node_id"] == "qemu-device" for e in reports)
    expected = honeypot_listeners()
    for proto, ports in DHCP_CLIENT.items():
        expected[proto] |= ports
    assert reports[-1]["logdata"] == {p: " ".join(map(str, sorted(v)))
                                      for p, v in expected.items()}, reports


def test_one_network_only_a_second_adapter_stays_down_and_is_reported(booted: Booted) -> None:
    lab = booted.lab
    report = lab.wait_event(lambda e: e["logtype"] == 1108, timeout=120)
    assert {k: report["logdata"][k] for k in ("NAMES", "UP")} == {"NAMES": "eth0 eth1",
                                                                 "UP": "eth0"}, report
    macs = dict(m.split("=") for m in report["logdata"]["MAC"].split())
    assert sorted(macs) == ["eth0", "eth1"], report
    assert all(m.startswith("52:54:00:") for m in macs.values()), "QEMU's own addresses"


def test_first_boot_provisioned_and_no_login_prompt(booted: Booted) -> None:
    log = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", booted.log())  # systemd's colours
    assert "imported coalmine.toml from the boot partition" in log
    assert "growing /dev/vda4 to the end of /dev/vda" in log  # the "card" is larger
    assert "making the data filesystem" in log
    assert re.search(r"coalmine: SSH host key SHA256:\S+ \(new\)", log)
    assert "coalmine-initramfs: slot a" in log
    assert not re.search(r"(?m)login: *$", log), "a login prompt must never appear"


def test_boot_is_clean_on_the_serial_console(booted: Booted) -> None:
    """What a person on the serial console sees: every unit starts, the device's own target."""
    log = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", booted.log())
    failed = [line for line in log.splitlines()
              if re.search(r"FAILED|Failed to start|\[ *(DEPEND|UNSUPP|TIME) *\]", line)]
    assert not failed, failed
    assert "Reached target coalmine.target" in log
    for target in ("multi-user.target", "graphical.target", "getty.target", "emergency"):
        assert target not in log, target
    for unit in ("systemd-logind", "systemd-user-sessions"):
        assert unit not in log, unit


def test_settings_apply_only_in_config_mode_and_move_the_honeypot(booted: Booted) -> None:
    """Journey 2's second half, the image's own units: the operator moves the SSH honeypot at
    the console.  In production the device takes nothing and says so; a long press: the agent
    fetches and verifies, the applier (root, no network) verifies again and applies; a short
    press leaves config mode and the honeypot answers on its new port."""
    lab, guest = booted.lab, booted.guest
    if in_config_mode(lab):  # run alone: the first boot's config mode is still on
        guest.press(0.3)
        lab.wait_for(lambda: in_config_mode(lab) is False, 60, "config mode left")
    out = lab.console("settings", "--name", "qemu-device", "--set",
                      f"services.ssh.port={MOVED_SSH_PORT}", *SERVICES_ON)
    assert "settings version 1, signed" in out
    refused = lab.wait_event(lambda e: e["logtype"] == 1110, timeout=120)
    assert "in production the device takes none" in refused["logdata"]["REASON"]
    assert not [e for e in lab.events() if e["logtype"] in (1109, 1111)], "nothing taken"
    guest.press(3.6)
    applied = lab.wait_event(lambda e: e["logtype"] == 1111, timeout=300)
    assert applied["logdata"] == {"VERSION": 1, "CHANGED": " ".join(sorted(
        ["services.ssh.port", *(a.split("=")[0] for a in SERVICES_ON if a != "--set")]))}
    received = lab.wait_event(lambda e: e["logtype"] == 1109, timeout=30)
    assert received["logdata"] == {"VERSION": 1}
    guest.press(0.3)
    lab.wait_for(lambda: in_config_mode(lab) is False, 60, "config mode left after applying")
    event = ssh_event_on(lab, guest.forwards[MOVED_SSH_PORT], "trudy")
    assert event["dst_port"] == MOVED_SSH_PORT
    lab.wait_event(lambda e: e["logtype"] == 1103 and e["logdata"]["TCP"]
                   == " ".join(map(str, sorted({MOVED_SSH_PORT, SMB_PORT, FTP_PORT, RDP_PORT,
                                                *GREETED.values()}))),
                   timeout=120)
    assert not [e for e in lab.events() if e["logtype"] == 1112], "nothing rolled back"
    turned_on_services_answer(lab, guest, "ftp-applied")


SERVICES_ON = ("--set", "services.smb.enabled=true", "--set",
               f"services.smb.honey_user={HONEY_USER}", "--set",
               f'services.smb.honey_nt_hash="{HONEY_NT_HASH}"', "--set",
               "services.ftp.enabled=true", "--set", "services.rdp.enabled=true",
               *(a for name in GREETED for a in ("--set", f"services.{name}.enabled=true")),
               "--set", "services.portscan.enabled=true")


def turned_on_services_answer(lab: Lab, guest: armed.Guest, ftp_user: str) -> None:
    """The honeypots the settings turned on run, each as its own user: their events reach the
    console, and the agent takes a service's codes only from the socket in the directory that
    service's group alone may write to.  The real clients: smbclient copies a file with the
    honey credential (signing required), lftp tries a login, FreeRDP an NLA login (over TLS
    with the certificate coalmine-cert@rdp.service made on the device)."""
    before = lab.events()
    smb = subprocess.run(["smbclient", "//127.0.0.1/Documents", "-p",
                          str(guest.forwards[SMB_PORT]), "-U", f"{HONEY_USER}%{HONEY_PASSWORD}",
                          "--option", "client signing=required",
                          "-c", 'get "IT\\vpn-setup.txt" /dev/null'],
                         capture_output=True, text=True, timeout=120, check=False)
    assert smb.returncode == 0, (ftp_user, smb.stdout, smb.stderr)
    subprocess.run(["lftp", "-u", f"{ftp_user},pw", "-e", "set ftp:ssl-allow no; ls; bye",
                    f"ftp://127.0.0.1:{guest.forwards[FTP_PORT]}"],
                   capture_output=True, timeout=120, check=False)
    subprocess.run(["xvfb-run", "-a", "xfreerdp", "/auth-only", "/cert:ignore",
                    f"/v:127.0.0.1:{guest.forwards[RDP_PORT]}", f"/u:{ftp_user}", "/p:pw"],
                   capture_output=True, timeout=120, check=False)
    opened = lab.wait_event(lambda e: e["logtype"] == 5000 and e not in before, timeout=120)
    assert opened["logdata"]["FILENAME"] == "IT\\vpn-setup.txt"
    assert opened["logdata"]["USER"] == HONEY_USER and opened["dst_port"] == SMB_PORT
    login = lab.wait_event(lambda e: e["logtype"] == 5010 and e not in before)
    assert login["logdata"]["RESULT"] == "honey"
    lab.wait_event(lambda e: e["logtype"] == 2000 and e["logdata"]["USERNAME"] == ftp_user,
                   timeout=120)
    rdp = lab.wait_event(lambda e: e["logtype"] == 14001 and e["logdata"].get("USER") == ftp_user,
                         timeout=120)
    assert rdp["dst_port"] == RDP_PORT and rdp["logdata"]["NTLMV2_RESPONSE"]
    greeted_services_answer(lab, guest, before, ftp_user)


def greeted_services_answer(lab: Lab, guest: armed.Guest, before: list[dict[str, Any]],
                            user: str) -> None:
    """Every other honeypot runs under its own unit's sandbox (MemoryDenyWriteExecute= among
    it): curl over HTTP and HTTPS and redis-cli's AUTH reach the console as events, Telnet,
    MySQL and VNC greet as their protocols do."""
    for scheme in ("http", "https"):
        port = GREETED[scheme]
        subprocess.run(["curl", "-sk", "-o", "/dev/null", "--max-time", "60",
                        f"{scheme}://127.0.0.1:{guest.forwards[port]}/{user}"],
                       capture_output=True, timeout=120, check=False)

        def page(e: dict[str, Any], port: int = port) -> bool:
            return (e["logtype"] == 3000 and e not in before and e["dst_port"] == port
                    and user in e["logdata"].get("PATH", ""))

        lab.wait_event(page, timeout=120)
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(guest.forwards[GREETED["redis"]]),
                    "AUTH", user, "pw"], capture_output=True, timeout=120, check=False)
    lab.wait_event(lambda e: e["logtype"] == 17001 and e not in before
                   and e["logdata"].get("USERNAME") == user, timeout=120)
    for name, first in (("telnet", b""), ("mysql", b"\x0a"), ("vnc", b"RFB 003.")):
        greeting = first_bytes(guest.forwards[GREETED[name]])
        assert greeting and first in greeting[:8], (name, greeting)


def first_bytes(port: int) -> bytes:
    """What a server sends first through QEMU's forward (its greeting)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        return s.recv(256)


def test_the_device_reports_what_each_of_its_units_holds(booted: Booted) -> None:
    """1115 MEMORY: the sandboxed agent reads the image's cgroup v2 tree (read-only under
    ProtectControlGroups=) and lists every running coalmine unit; after the settings test the
    honeypots it turned on and connected to run too, each in its own unit."""
    lab = booted.lab
    wanted = {"agent", "button"}
    if any(e["logtype"] == 1111 for e in lab.events()):  # the settings test ran before
        wanted |= {"listener@smb", "listener@ftp", "listener@rdp",
                   *(f"listener@{name}" for name in GREETED), "portscan"}

    def listed(e: dict[str, Any]) -> bool:
        return e["logtype"] == 1115 and wanted <= set(memory.listed(e["logdata"]["UNITS"]))

    report = lab.wait_event(listed, timeout=6 * MEMORY_REPORT + 120)["logdata"]
    held = memory.listed(report["UNITS"])
    assert all(kib > 0 for kib in held.values()), report
    assert held["agent"] >= 4096, "the agent's interpreter alone is more than 4 MiB"
    assert sum(held.values()) <= report["RESIDENT_KB"] <= sum(held.values()) + len(held), report
    assert report["CHARGED_KB"] > 0 and report["OOM_KILLS"] == 0, report


def test_a_network_change_that_cuts_the_device_off_is_rolled_back(booted: Booted) -> None:
    """A static address on a network where the console cannot be reached (TEST-NET-2: the
    guest's user network has no such gateway): the applier puts it in effect, sees no answered
    heartbeat within 120 s, goes back to DHCP, and the device reports it over the old network."""
    lab, guest = booted.lab, booted.guest
    if not in_config_mode(lab):
        guest.press(3.6)
        lab.wait_for(lambda: in_config_mode(lab), 60, "config mode entered")
    before = [e for e in lab.events() if e["logtype"] in (1111, 1112)]
    lab.console("settings", "--name", "qemu-device", "--set", "network.mode=static",
                "--set", "network.address=198.51.100.10/24", "--set",
                "network.gateway=198.51.100.1", "--set", 'network.dns=["198.51.100.1"]')
    rolled = lab.wait_event(lambda e: e["logtype"] == 1112 and e not in before, timeout=420)
    assert rolled["logdata"]["REASON"].startswith(
        "rolled back: the console did not answer within 120 s over the new network")
    beats = lab.console("devices")
    guest.press(0.3)
    lab.wait_for(lambda: in_config_mode(lab) is False, 60, "config mode left")
    lab.wait_for(lambda: lab.console("devices") != beats, 60, "heartbeats over DHCP again")
    assert not [e for e in lab.events() if e["logtype"] == 1111 and e not in before], \
        "the change was not kept"


def test_applied_settings_survive_a_power_cut(booted: Booted) -> None:
    """Pull the plug, power on: coalmine-settings-boot.service puts the applied settings in
    effect again before the honeypot's socket starts, so it listens on its moved port."""
    lab, guest = booted.lab, booted.guest
    if not [e for e in lab.events() if e["logtype"] == 1111]:
        pytest.skip("needs the settings applied by the test above")
    if in_config_mode(lab):
        guest.press(0.3)
        lab.wait_for(lambda: in_config_mode(lab) is False, 60, "config mode left")
    boots = sum(e["logtype"] == 1000 for e in lab.events())
    guest.power_cycle()
    lab.wait_for(lambda: sum(e["logtype"] == 1000 for e in lab.events()) > boots, BOOT_TIMEOUT,
                 "the agent's BOOT event after the power cut")
    log = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", guest.log())
    assert "Finished coalmine-settings-boot" in log, log[-3000:]  # the name is cut at 24
    assert "coalmine.applier: settings version 1 in effect" in log
    assert not re.search(r"FAILED|Failed to start", log), log[-3000:]
    event = ssh_event_on(lab, guest.forwards[MOVED_SSH_PORT], "eve")
    assert event["dst_port"] == MOVED_SSH_PORT
    assert not in_config_mode(lab), "a card that is not fresh boots in production"
    turned_on_services_answer(lab, guest, "ftp-rebooted")


def test_a_hung_agent_is_restarted_by_its_watchdog_and_says_so(booted: Booted) -> None:
    """The card stops completing writes (a hung SD card, through QMP's write throttle): the
    agent's receiver blocks storing the next event (a button press), the agent stops pinging,
    systemd's watchdog (30 s) ends it; when the card answers again, the agent restarts and
    reports why its last run ended (1113, RESULT=watchdog), and heartbeats go on."""
    lab, guest = booted.lab, booted.guest
    before = [e for e in lab.events() if e["logtype"] == 1113]
    assert not before, f"the agent was restarted before the test: {before}"
    guest.card_writes(stalled=True)
    try:
        guest.press(0.3)  # an event: the receiver's durable store now waits on the card
        guest.wait_serial(r"not pinging the watchdog: \w+ stopped making progress", 180)
        time.sleep(45)  # past WatchdogSec=30s after the last ping
    finally:
        guest.card_writes(stalled=False)
    restarted = lab.wait_event(lambda e: e["logtype"] == 1113, timeout=300)
    assert restarted["logdata"]["RESULT"] == "watchdog", restarted
    assert restarted["node_id"] == "qemu-device"
    beats = lab.console("devices")
    lab.wait_for(lambda: lab.console("devices") != beats, 120, "heartbeats after the restart",
                 poll=2)


def test_a_personality_makes_the_box_look_like_a_cisco_router(booted: Booted) -> None:
    """device.personality in the signed settings, applied in config mode as an operator does
    it: the LAN sees a Cisco vendor prefix on eth0 (the applier's networkd drop-in, MACAddress=
    from the device id), and the SSH honeypot, still on its moved port (explicit settings win),
    greets as Cisco's SSH.  The rolled-back static network of the test above is unset."""
    lab, guest = booted.lab, booted.guest
    if not in_config_mode(lab):
        guest.press(3.6)
        lab.wait_for(lambda: in_config_mode(lab), 60, "config mode entered")
    before = lab.events()
    lab.console("settings", "--name", "qemu-device", "--set", 'device.personality="cisco-router"',
                *(a for key in ("network.mode", "network.address", "network.gateway",
                                "network.dns") for a in ("--unset", key)))
    applied = lab.wait_event(lambda e: e["logtype"] == 1111 and e not in before, timeout=420)
    assert "device.personality" in applied["logdata"]["CHANGED"].split(), applied
    guest.press(0.3)
    lab.wait_for(lambda: in_config_mode(lab) is False, 60, "config mode left")
    seen = lab.wait_event(lambda e: e["logtype"] == 1108 and e not in before
                          and "eth0=70:10:5c:" in e["logdata"]["MAC"]
                          and "eth0=" in e["logdata"]["IPV4"], timeout=240)
    macs = dict(m.split("=") for m in seen["logdata"]["MAC"].split())
    assert macs["eth0"].startswith("70:10:5c:"), seen  # Cisco Systems
    assert macs["eth1"].startswith("52:54:00:"), "only the device's own interface changes"
    # a new MAC address, a new lease from QEMU's DHCP server: the event says where it is now
    address = dict(a.split("=") for a in seen["logdata"]["IPV4"].split())["eth0"]
    assert address.startswith("10.0.2."), seen
    port = guest.forward(address, MOVED_SSH_PORT)
    assert ssh_banner(port).startswith(b"SSH-2.0-Cisco-1.25")


def ssh_banner(port: int) -> bytes:
    """The first line the SSH honeypot sends through QEMU's forward (retried while QEMU's
    forward accepts before the guest's socket unit listens again)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                line = s.makefile("rb").readline(256)
            if line:
                return line
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no SSH banner on port {port}"
        time.sleep(2)
