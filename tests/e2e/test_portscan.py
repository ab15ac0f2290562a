"""End to end: nmap -sS, -sN, -sF, -sX and -O from one network namespace -> the port-scan
detector in another -> agent -> unbound -> console (the lab, on loopback).  The detector hands
its events to the agent through the agent's socket file, which a process in another network
namespace reaches like any other: only its packets live in the namespace."""

import sys

import pytest

from scripts.lab import Lab
from tests.services.netns import SCANNER_IP, TARGET_IP, NetnsPair

OPEN = 8080
SCANS = {"-sS": 5001, "-sN": 5003, "-sF": 5005, "-sX": 5004, "-O": 5002}


@pytest.fixture(scope="module")
def lab():
    with Lab(heartbeat=5, with_ssh=False) as running:
        yield running


@pytest.fixture
def lan(lab):
    with NetnsPair("e") as pair:
        lab.spawn("open-port", pair.in_target(
            sys.executable, "-c",
            f"import socket, time\ns = socket.create_server(('0.0.0.0', {OPEN}))\n"
            "time.sleep(600)\n"))
        layer = lab.dir / "portscan.toml"
        layer.write_text("[services.portscan]\nenabled = true\nwindow = 30.0\n")
        lab.spawn("portscan", pair.in_target(
            sys.executable, "-m", "firmware.services", "portscan", "--config",
            str(lab.device_conf), "--config", str(layer)))
        lab.wait_for(lambda: "portscan watching" in lab.log("portscan"), 30, "the detector")
        try:
            yield pair
        finally:
            lab.kill("portscan")
            lab.kill("open-port")


def test_every_kind_of_scan_reaches_the_console_through_unbound(lab, lan):
    for flag in SCANS:
        lan.nmap(flag, "--max-retries", "1", "-p", f"{OPEN},20-40", TARGET_IP)
    for flag, code in SCANS.items():
        event = lab.wait_event(lambda e, c=code: e["logtype"] == c
                               and e["src_host"] == SCANNER_IP, timeout=30)
        assert event["node_id"] == "lab-device", event
        assert event["dst_host"] == TARGET_IP and event["logdata"]["WINDOW"] == 1, event
        data = event["logdata"]
        if code == 5002:
            assert set(data) == {"COUNT", "WINDOW", "PROBES"}, (flag, data)
            assert {"SEQ1", "ECN", "T2", "T7"} <= set(data["PROBES"].split(",")), data
        else:
            assert set(data) == {"COUNT", "WINDOW", "PORTS", "FIRST_PORT"}, (flag, data)
            assert data["COUNT"] >= 21 and event["dst_port"] == data["FIRST_PORT"], data
            assert str(OPEN) not in data["PORTS"].split(",") or code != 5001, data
