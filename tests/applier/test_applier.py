"""The settings applier: signed settings into run-time files and unit restarts, verified again,
rolled back when a network change cuts the device off, every outcome an event.

The system's side (systemctl, networkctl, sethostname) is a recording fake behind the same
interface as the real one; the QEMU end-to-end test (tests/image) runs the real one."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.applier.applier import Applier
from firmware.applier.plan import MASK, NETWORK_DROPIN, SSH_SOCKET_DROPIN, plan, socket_dropin
from firmware.config import DeviceConfig, load, parse
from firmware.protocol import settings as signed
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.shared.errors import ToolError

SEED = bytes(range(32))
DEVICE_ID = bytes(range(8))  # a device id's length (firmware.protocol.keys)
STATIC = {"network.mode": "static", "network.address": "10.0.2.15/24",
          "network.gateway": "10.0.2.2", "network.dns": ["10.0.2.3"]}


@dataclass
class FakeSystem:
    calls: list[str] = field(default_factory=list)
    fail_ssh: int = 0  # how many SSH restarts fail
    on_network: object = None  # called on reload_network (stands in for the agent's contact)

    def daemon_reload(self) -> None:
        self.calls.append("daemon-reload")

    def restart_ssh(self, enabled: bool) -> None:
        self.calls.append(f"ssh {'start' if enabled else 'stop'}")
        if self.fail_ssh:
            self.fail_ssh -= 1
            raise ToolError("command failed (1): systemctl start coalmine-ssh.socket")

    def restart_listener(self, name: str, enabled: bool, *, boot: bool = False) -> None:
        self.calls.append(f"{name} {'start' if enabled else 'stop'}{' (boot)' if boot else ''}")

    def reload_network(self) -> None:
        self.calls.append("networkctl reload")
        if callable(self.on_network):
            self.on_network()

    def set_hostname(self, name: str) -> None:
        self.calls.append(f"hostname {name}")

    def set_ttl(self, ttl: int) -> None:
        self.calls.append(f"ttl {ttl}")


class Events:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass

    def only(self) -> Event:
        (event,) = self.events
        return event


def answered(cfg: DeviceConfig, after: float) -> None:
    """What the agent writes when the console answers its heartbeat, ``after`` seconds on."""
    def write() -> None:
        cfg.contact_file.parent.mkdir(parents=True, exist_ok=True)
        cfg.contact_file.write_text(f"{time.monotonic():.3f}\n")
    threading.Timer(after + 0.15, write).start()  # after the settling time


@dataclass
class Rig:
    cfg: DeviceConfig
    system: FakeSystem
    sink: Events
    applier: Applier
    root: Path

    def hand_off(self, values: Mapping[str, object], version: int, seed: bytes = SEED,
                 device_id: bytes = DEVICE_ID) -> None:
        """What the agent does in config mode: the fetched document and the pin beside it."""
        wire = signed.sign(seed, signed.Settings(device_id, version, values))
        self.cfg.fetched_settings.parent.mkdir(parents=True, exist_ok=True)
        self.cfg.settings_pin.write_text(
            f"{DEVICE_ID.hex()} {signed.verify_key_of(SEED).hex()}\n")
        self.cfg.fetched_settings.write_bytes(wire)

    def file(self, rel: str) -> str | None:
        path = self.root / rel
        if path.is_symlink():
            return f"-> {os.readlink(path)}"
        return path.read_text() if path.exists() else None


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    cfg = parse({"device": {"run_dir": str(tmp_path / "run"),
                            "settings_dir": str(tmp_path / "data" / "settings")}})
    (tmp_path / "hostname").write_text("raspberrypi\n")
    system, sink = FakeSystem(), Events()
    system.on_network = lambda: answered(cfg, after=0.0)  # the agent's heartbeats go on
    applier = Applier(cfg, system, sink, runtime_root=tmp_path / "systemd",
                      hostname_file=tmp_path / "hostname", rollback_after=1.0, settle=0.1)
    return Rig(cfg, system, sink, applier, tmp_path / "systemd")


def test_plans_say_what_each_setting_means() -> None:
    assert plan({}).files == {} and plan({}).layer == "" and plan({}).ssh_enabled
    port = plan({"services.ssh.port": 2222})
    assert port.files[SSH_SOCKET_DROPIN].endswith("[Socket]\nListenStream=\nListenStream=2222\n")
    assert "[services.ssh]\nport = 2222" in port.layer
    off = plan({"services.ssh.enabled": False})
    assert not off.ssh_enabled and set(off.files.values()) == {MASK}
    static = plan({**STATIC, "device.hostname": "files-2"}).files[NETWORK_DROPIN]
    assert "DHCP=no\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n" in static
    assert "[DHCPv4]\nHostname=files-2\n" in static
    assert plan({"device.hostname": "files-2"}).layer.endswith('node_name = "files-2"\n')


def test_config_mode_applies_verified_settings_and_reports_them(rig: Rig) -> None:
    rig.hand_off({"services.ssh.port": 2222, "device.hostname": "files-2"}, 1)
    rig.applier.poll()
    assert rig.system.calls == ["daemon-reload", "ssh start", "networkctl reload",
                                "hostname files-2"]
    assert "ListenStream=2222" in (rig.file(SSH_SOCKET_DROPIN) or "")
    assert "Hostname=files-2" in (rig.file(NETWORK_DROPIN) or ""), "the DHCP host name"
    event = rig.sink.only()
    assert event.code is EventCode.SETTINGS_APPLIED
    assert dict(event.data) == {"VERSION": 1, "CHANGED": "device.hostname services.ssh.port"}
    assert rig.cfg.applied_settings.read_bytes() == rig.cfg.fetched_settings.read_bytes()
    assert rig.cfg.settings_in_effect.read_text() == "1\n", "for the agent's heartbeats"
    assert not (rig.cfg.apply_dir / "applying").exists()
    layered = load([rig.cfg.settings_layer])
    assert layered.ssh.port == 2222 and layered.node_name == "files-2", "the services' layer"
    rig.system.calls.clear()
    rig.applier.poll()
    assert rig.system.calls == [] and len(rig.sink.events) == 1, "applied once"
    rig.hand_off({"services.ssh.port": 2222, "device.hostname": "files-2",
                  "services.ssh.enabled": False}, 2)
    rig.applier.poll()
    assert rig.system.calls == ["daemon-reload", "ssh stop"], "only what changed"
    assert rig.file("system/coalmine-ssh.socket") == "-> /dev/null"


def test_what_the_pinned_key_did_not_sign_is_refused_and_nothing_changes(rig: Rig) -> None:
    rig.hand_off({"services.ssh.port": 2222}, 1, seed=os.urandom(32))
    rig.applier.poll()
    event = rig.sink.only()
    assert event.code is EventCode.SETTINGS_NOT_APPLIED
    assert str(event.data["REASON"]).startswith("refused: settings not signed")
    rig.hand_off({"services.ssh.port": 2222}, 2, device_id=bytes(8))  # another device's
    rig.applier.poll()
    assert "another device" in str(rig.sink.events[1].data["REASON"])
    assert rig.system.calls == [] and not rig.cfg.applied_settings.exists()
    assert rig.file(SSH_SOCKET_DROPIN) is None
    rig.cfg.settings_pin.unlink()
    rig.hand_off({"services.ssh.port": 2222}, 3)
    rig.cfg.settings_pin.write_text("garbage")
    rig.applier.poll()
    assert "no settings key" in str(rig.sink.events[2].data["REASON"])


def test_two_honeypots_on_one_port_are_refused_before_anything_changes(rig: Rig) -> None:
    rig.hand_off({"services.ftp.enabled": True, "services.ftp.port": 22}, 1)
    rig.applier.poll()
    event = rig.sink.only()
    assert event.code is EventCode.SETTINGS_NOT_APPLIED
    assert "services.ftp.port and services.ssh.port: both 22" in str(event.data["REASON"])
    assert rig.system.calls == [] and not rig.cfg.applied_settings.exists()


def test_a_network_change_without_console_contact_is_rolled_back(rig: Rig) -> None:
    rig.hand_off({"services.ssh.port": 2222}, 1)
    rig.applier.poll()
    rig.system.on_network = None  # the new network does not reach the console
    rig.hand_off({"services.ssh.port": 2222, **STATIC}, 2)
    started = time.monotonic()
    rig.applier.poll()
    assert time.monotonic() - started >= 1.0, "it waited rollback_after for contact"
    event = rig.sink.events[-1]
    assert event.code is EventCode.SETTINGS_NOT_APPLIED and event.data["VERSION"] == 2
    assert "rolled back: the console did not answer within 1 s" in str(event.data["REASON"])
    assert rig.file(NETWORK_DROPIN) is None, "the network as before"
    assert rig.system.calls[-2:] == ["networkctl reload", "networkctl reload"]
    assert signed.kept(rig.cfg.applied_settings.read_bytes())[0] == 1, "version 1 stays"
    rig.applier.poll()
    assert len(rig.sink.events) == 2, "a rolled-back version is not tried again this session"


def test_a_network_change_the_console_answers_over_is_kept(rig: Rig) -> None:
    rig.cfg.contact_file.parent.mkdir(parents=True)
    rig.cfg.contact_file.write_text(f"{time.monotonic()}")  # sent before the switch: no proof
    rig.system.on_network = lambda: answered(rig.cfg, after=0.4)
    rig.hand_off(STATIC, 1)
    rig.applier.poll()
    assert rig.sink.only().code is EventCode.SETTINGS_APPLIED
    assert "Address=10.0.2.15/24" in (rig.file(NETWORK_DROPIN) or "")


def test_a_unit_that_fails_to_restart_rolls_the_change_back(rig: Rig) -> None:
    rig.system.fail_ssh = 1
    rig.hand_off({"services.ssh.port": 2222}, 1)
    rig.applier.poll()
    reason = str(rig.sink.only().data["REASON"])
    assert reason.startswith("rolled back: command failed (1): systemctl start")
    assert rig.file(SSH_SOCKET_DROPIN) is None and not rig.cfg.applied_settings.exists()
    assert rig.system.calls[-2:] == ["daemon-reload", "ssh start"], "back on port 22"


def test_when_going_back_fails_too_the_console_hears_what_to_do(rig: Rig) -> None:
    rig.system.fail_ssh = 2
    rig.hand_off({"services.ssh.port": 2222}, 1)
    rig.applier.poll()
    reason = str(rig.sink.only().data["REASON"])
    assert reason.startswith("failed: command failed (1)")
    assert "going back failed too" in reason and reason.endswith("restart the device")
    assert not rig.cfg.applied_settings.exists(), "the next boot starts on the old settings"


def test_boot_puts_the_applied_settings_in_effect_without_restarting_anything(rig: Rig) -> None:
    rig.hand_off({"services.ssh.port": 2222, "services.ssh.enabled": True}, 4)
    rig.applier.poll()
    rig.system.calls.clear()
    (rig.root / SSH_SOCKET_DROPIN).unlink()  # /run is empty at boot
    rig.cfg.settings_layer.unlink()
    fresh = Applier(rig.cfg, rig.system, rig.sink, runtime_root=rig.root)
    fresh.boot()
    assert rig.system.calls == ["daemon-reload"], "units start later, on the new files"
    assert "ListenStream=2222" in (rig.file(SSH_SOCKET_DROPIN) or "")
    assert "port = 2222" in rig.cfg.settings_layer.read_text()
    assert fresh.version == 4


def test_boot_with_altered_settings_runs_on_defaults_and_says_why(rig: Rig) -> None:
    rig.hand_off({"services.ssh.port": 2222}, 1)
    rig.applier.poll()
    wire = bytearray(rig.cfg.applied_settings.read_bytes())
    wire[-3] ^= 1  # one bit on the data partition
    rig.cfg.applied_settings.write_bytes(bytes(wire))
    (rig.root / SSH_SOCKET_DROPIN).unlink()
    rig.system.calls.clear()
    Applier(rig.cfg, rig.system, rig.sink, runtime_root=rig.root).boot()
    assert rig.file(SSH_SOCKET_DROPIN) is None and rig.system.calls == []
    reason = (rig.cfg.apply_dir / "boot-refused").read_text()
    assert reason.startswith("the applied settings do not verify: settings not signed")


def test_serving_ends_with_config_mode(rig: Rig) -> None:
    rig.cfg.config_marker.parent.mkdir(parents=True)
    rig.cfg.config_marker.write_text("config\n")
    done = threading.Thread(target=rig.applier.serve)
    done.start()
    rig.hand_off({"services.ssh.port": 2022}, 1)
    deadline = time.monotonic() + 10
    while not rig.sink.events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.sink.only().code is EventCode.SETTINGS_APPLIED
    rig.cfg.config_marker.unlink()  # the button daemon: config mode left
    done.join(timeout=5)
    assert not done.is_alive(), "the applier (and coalmine-config.target with it) stops"


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wire=st.binary(max_size=1200), pin=st.binary(max_size=220))
def test_no_hand_off_an_attacker_writes_raises_or_changes_anything(
        rig: Rig, wire: bytes, pin: bytes) -> None:
    """A compromised agent writes whatever it likes into the hand-off: the applier refuses it
    (or ignores what names no newer version) and changes nothing."""
    rig.cfg.fetched_settings.parent.mkdir(parents=True, exist_ok=True)
    rig.cfg.fetched_settings.write_bytes(wire)
    rig.cfg.settings_pin.write_bytes(pin)
    rig.applier.tried.clear()
    rig.applier.poll()
    assert rig.system.calls == [] and not rig.cfg.applied_settings.exists()
    assert all(e.code is EventCode.SETTINGS_NOT_APPLIED for e in rig.sink.events)


def test_the_services_layer_is_where_their_units_read_it() -> None:
    """The path the units pass as their last --config is the one the applier writes."""
    from firmware.config import DEFAULT_RUN_DIR
    cfg = parse({})
    assert cfg.run_dir == DEFAULT_RUN_DIR
    units = Path(__file__).resolve().parents[2] / "overlay/usr/lib/systemd/system"
    for name in ("coalmine-agent.service", "coalmine-ssh.service", "coalmine-button.service"):
        assert f"--config {cfg.settings_layer}\n" in (units / name).read_text(), name
    assert cfg.settings_layer.parent == cfg.apply_dir, "boot writes it, and /data is read-only"


def test_hand_off_files_that_are_not_regular_files_read_as_nothing(tmp_path: Path) -> None:
    """A compromised agent puts a FIFO or a symlink where the applier reads: no hang, no follow."""
    from firmware.shared.readfile import read_bounded
    fifo, link, secret = tmp_path / "fifo", tmp_path / "link", tmp_path / "secret"
    os.mkfifo(fifo)
    secret.write_bytes(b"root only")
    link.symlink_to(secret)
    assert read_bounded(fifo, 100) == b"" and read_bounded(link, 100) == b""
    assert read_bounded(secret, 4) == b"root"


def test_a_heartbeat_sent_before_the_network_settled_proves_nothing(rig: Rig) -> None:
    """One the agent sent while networkd was still switching went over the old network."""
    rig.system.on_network = lambda: rig.cfg.contact_file.write_text(f"{time.monotonic():.3f}")
    rig.cfg.contact_file.parent.mkdir(parents=True, exist_ok=True)
    rig.hand_off(STATIC, 1)
    rig.applier.poll()
    assert "rolled back: the console did not answer" in str(rig.sink.only().data["REASON"])


def test_settings_that_cannot_be_kept_are_rolled_back(rig: Rig) -> None:
    rig.cfg.settings_dir.parent.mkdir(parents=True)
    rig.cfg.settings_dir.write_text("not a directory")  # the data partition is broken
    rig.hand_off({"services.ssh.port": 2222}, 1)
    rig.applier.poll()
    assert str(rig.sink.only().data["REASON"]).startswith("rolled back: cannot write")
    assert rig.file(SSH_SOCKET_DROPIN) is None and rig.system.calls[-1] == "ssh start"
    assert not rig.cfg.settings_in_effect.exists()


HONEY = {"services.smb.enabled": True, "services.smb.port": 4450,
         "services.smb.honey_user": "svc_backup", "services.smb.honey_nt_hash": "ab" * 16}


def test_settings_turn_the_other_honeypots_on_and_off(rig: Rig) -> None:
    rig.hand_off({**HONEY, "services.ftp.enabled": True, "services.telnet.enabled": False,
                  "services.portscan.enabled": True}, 1)
    rig.applier.poll()
    assert rig.system.calls == ["daemon-reload", "ftp start", "portscan start", "smb start"]
    assert "ListenStream=4450" in (rig.file(socket_dropin("smb")) or "")
    layered = load([rig.cfg.settings_layer])
    assert layered.smb.enabled and layered.smb.port == 4450
    assert layered.smb.honey_user == "svc_backup" and layered.listeners["ftp"].enabled
    assert not layered.listeners["telnet"].enabled
    rig.system.calls.clear()
    rig.hand_off({**HONEY, "services.smb.share": "Scans", "services.portscan.enabled": True},
                 2)  # ftp off, smb's share changes
    rig.applier.poll()
    assert rig.system.calls == ["ftp stop", "smb start"], "only the honeypots that changed"
    rig.system.calls.clear()
    rig.cfg.settings_layer.unlink()
    Applier(rig.cfg, rig.system, rig.sink, runtime_root=rig.root).boot()
    assert rig.system.calls == ["daemon-reload", "portscan start (boot)", "smb start (boot)"], \
        "started (queued) at boot"


def test_service_settings_are_validated_before_anything_is_signed() -> None:
    problems = signed.validate({"services.smb.honey_user": "a b", "services.http.skin": "x",
                                "services.redis.port": 0, "services.ftp.enabled": "yes"})
    assert problems == ["services.ftp.enabled: expected bool, got 'yes'"]
    problems = signed.validate({"services.smb.honey_user": "a b", "services.http.skin": "x",
                                "services.redis.port": 0, "services.smb.share": "a" * 16})
    assert set(problems) == {
        "services.redis.port: 0 is not a port number",
        "services.smb.share: 'aaaaaaaaaaaaaaaa' is not 1-15 letters, digits, - or _",
        "services.smb.honey_user: 'a b' is not 1-64 letters, digits, ., - or _",
        "services.smb: honey_user and honey_nt_hash go together",
        "services.http.skin: 'x' is not one of nas, router, basic"}
    assert not signed.validate(HONEY)


def test_a_personality_is_applied_whole_and_explicit_settings_win(rig: Rig) -> None:
    """windows-file-server: SMB and RDP on, SSH off, Windows' TTL and DHCP vendor class, a Dell
    MAC address from the device id; the operator's own host name and SMB port win over the
    personality's.  Back to no personality: Linux's TTL and the image's services again."""
    assert signed.validate({"device.personality": "amiga"}) == [
        "device.personality: 'amiga' is not one of windows-file-server, synology-nas, "
        "cisco-router"]
    values = {"device.personality": "windows-file-server", "device.hostname": "fs-lon-02",
              "services.smb.port": 4450}
    rig.hand_off(values, 1)
    rig.applier.poll()
    assert rig.system.calls == ["daemon-reload", "ssh stop", "rdp start", "smb start",
                                "networkctl reload", "hostname fs-lon-02", "ttl 128"]
    network = rig.file(NETWORK_DROPIN) or ""
    mac = plan(values, DEVICE_ID).files[NETWORK_DROPIN].split("MACAddress=")[1].split()[0]
    assert f"[Link]\nMACAddress={mac}\n" in network and mac.startswith("d8:9e:f3:")
    assert mac != plan(values, bytes(16)).files[NETWORK_DROPIN].split("MACAddress=")[1][:17]
    assert "Hostname=fs-lon-02\nVendorClassIdentifier=MSFT 5.0\n" in network
    layered = load([rig.cfg.settings_layer])
    assert layered.smb.port == 4450 and layered.smb.server_name == "FS01"
    assert layered.listeners["rdp"].enabled and not layered.ssh.enabled
    rig.system.calls.clear()
    rig.hand_off({"device.hostname": "fs-lon-02"}, 2)
    rig.applier.poll()
    assert rig.system.calls == ["daemon-reload", "ssh start", "rdp stop", "smb stop",
                                "networkctl reload", "ttl 64"]
    assert "MACAddress" not in (rig.file(NETWORK_DROPIN) or "")


def test_a_new_ssh_version_string_restarts_the_ssh_honeypot(rig: Rig) -> None:
    """cisco-router over an SSH port the operator set: only what the SSH honeypot reads of its
    settings changes (its version string), not its units or its socket's port.  It still
    restarts, or it would greet as before until its idle exit (the QEMU test saw that)."""
    rig.hand_off({"services.ssh.port": 2222}, 1)
    rig.applier.poll()
    rig.system.calls.clear()
    rig.hand_off({"services.ssh.port": 2222, "device.personality": "cisco-router"}, 2)
    rig.applier.poll()
    assert "ssh start" in rig.system.calls and "Cisco-1.25" in rig.cfg.settings_layer.read_text()
    rig.system.calls.clear()
    rig.hand_off({"services.ssh.port": 2222}, 3)
    rig.applier.poll()
    assert "ssh start" in rig.system.calls, "and back to the image's own"
