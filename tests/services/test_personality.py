"""Each personality, put in effect as the device does it (its settings expanded by the applier's
plan into the settings layer the services read), runs its honeypots on loopback, and nmap's
service detection names every one as the product the personality claims (``NMAP``), never as
a honeypot default or as Debian; the MAC vendor prefix is the one nmap's own vendor list gives
the claimed maker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from firmware.applier.plan import NETWORK_DROPIN, plan
from firmware.config import DeviceConfig, SSHService, parse
from firmware.config import load as load_config
from firmware.protocol.personality import PERSONALITIES
from tests.services.netns import TARGET_IP, NetnsPair, wait_until

REPO = Path(__file__).resolve().parents[2]

VENDORS = {"windows-file-server": "Dell", "synology-nas": "Synology Incorporated",
           "cisco-router": "Cisco Systems"}


def enabled(cfg: DeviceConfig) -> list[str]:
    return [n for n, on in (("ssh", cfg.ssh.enabled), ("smb", cfg.smb.enabled),
                            *((n, ls.enabled) for n, ls in cfg.listeners.items())) if on]


def listening(net: NetnsPair) -> set[int]:
    out = subprocess.run(net.in_target("ss", "-Hltn"), capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return {int(line.split()[3].rpartition(":")[2]) for line in out.splitlines()}


@pytest.mark.parametrize("name", sorted(PERSONALITIES))
def test_nmap_names_each_service_as_the_product_the_personality_claims(name, tmp_path):
    """The real command lines on the personality's own ports (445, 3389, 5000, ...) in a
    network namespace of the test's, nmap -sV from another one over a veth pair."""
    personality = PERSONALITIES[name]
    layer = tmp_path / "settings.toml"
    layer.write_text(plan({"device.personality": name}, b"\x01" * 16).layer)
    cfg = load_config([layer])
    services = enabled(cfg)
    assert sorted(services) == sorted(personality.nmap), "NMAP covers every service"
    base = tmp_path / "device.toml"
    base.write_text(tomli_w.dumps({
        "device": {"run_dir": str(tmp_path / "run"), "data_dir": str(tmp_path)},
        "services": {n: {"host": TARGET_IP, **({"host_key": str(tmp_path / "host_key")}
                                               if n == "ssh" else {}),
                         **({"certificate": str(tmp_path / n / "tls.pem")}
                            if n in ("https", "rdp") else {})} for n in services}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs: list[subprocess.Popen[bytes]] = []
    with NetnsPair("p") as net:
        try:
            for service in services:
                argv = [sys.executable, "-m", "firmware.services", service, "--config",
                        str(base), "--config", str(layer)]
                if service in ("ssh", "https", "rdp"):  # made beforehand, as the oneshots do
                    subprocess.run([*argv, "--make-host-key"], env=env, check=True,
                                   capture_output=True, timeout=60)
                procs.append(subprocess.Popen(net.in_target(*argv), env=env,
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
            ports = {port_of(cfg, service): service for service in services}
            wait_until(lambda: set(ports) <= listening(net), 30, f"{name}'s services")
            out = net.nmap("-sV", "-p", ",".join(map(str, sorted(ports))), TARGET_IP)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    for port, service in ports.items():
        line = re.search(rf"^{port}/tcp\s+open\s+(.*)$", out, re.M)
        assert line, out
        assert personality.nmap[service] in line.group(1), (service, line.group(1), out)
        assert not re.search(r"debian|honeypot|canary|coalmine", line.group(1), re.I), out
    if personality.ttl == 128:
        assert "OS: Windows" in out


def port_of(cfg: DeviceConfig, service: str) -> int:
    if service == "ssh":
        return cfg.ssh.port
    return cfg.smb.port if service == "smb" else cfg.listeners[service].port


def test_the_mac_prefix_is_the_claimed_makers_and_the_device_id_picks_the_rest():
    prefixes = dict(line.split(" ", 1) for line in
                    Path("/usr/share/nmap/nmap-mac-prefixes").read_text().splitlines()
                    if line and not line.startswith("#"))
    for name, personality in PERSONALITIES.items():
        assert prefixes[personality.oui.replace(":", "").upper()] == VENDORS[name]
        first = plan({"device.personality": name}, b"\x01" * 16).files[NETWORK_DROPIN]
        again = plan({"device.personality": name}, b"\x01" * 16).files[NETWORK_DROPIN]
        other = plan({"device.personality": name}, b"\x02" * 16).files[NETWORK_DROPIN]
        mac = re.search(r"^MACAddress=(\S+)$", first, re.M)
        assert mac and mac.group(1).startswith(personality.oui) and len(mac.group(1)) == 17
        assert first == again and other != first
        assert f"Hostname={personality.settings['device.hostname']}" in first
        vendor = f"VendorClassIdentifier={personality.vendor_class}"
        assert (vendor in first) == bool(personality.vendor_class)


def test_every_personality_claims_a_current_product_and_loads():
    for name, personality in PERSONALITIES.items():
        cfg = parse(tomllib.loads(plan({"device.personality": name}).layer))
        assert cfg.node_name == personality.settings["device.hostname"]
        assert cfg.ssh.enabled == ("ssh" in personality.nmap)
        assert cfg.ssh.version != SSHService.version or not cfg.ssh.enabled  # not Debian's
        assert personality.ttl in (64, 128, 255)
