"""Journey 2 on loopback, through Debian's unbound: a device in config mode asks to be paired,
the operator compares the code and approves it with the console CLI, and a real OpenSSH login
attempt on the honeypot then reaches the console.  Before the approval nothing is stored."""

from __future__ import annotations

import re

from scripts.lab import Lab


def test_config_mode_pairing_through_unbound_then_an_ssh_alert() -> None:
    with Lab(heartbeat=2, pair=True) as lab:
        def pending() -> str:
            return lab.console("pending")

        lab.wait_for(lambda: "code=" in pending(), 60, "a pairing request")
        code = re.search(r"code=(\d{3}) (\d{3})", pending())
        assert code is not None
        digits = code.group(1) + code.group(2)
        shown = lab.dir / "run" / "agent" / "pairing"
        assert shown.read_text().strip() == f"pending {digits}", "device and console agree"
        assert f"pairing code {code.group(1)} {code.group(2)}" in lab.log("agent")
        assert lab.ssh_attempt("early", "before-approval") != 0
        assert lab.events() == [], "nothing is stored before the operator approves"
        lab.console("approve", digits, "--name", "nas-1")
        event = lab.wait_event(lambda e: e["logtype"] == 4002, timeout=60)
        assert event["node_id"] == "nas-1" and event["logdata"]["USERNAME"] == "early"
        assert shown.read_text().strip() == "paired"
        assert lab.ssh_attempt("mallory", "after-approval") != 0
        lab.wait_event(lambda e: e["logdata"].get("USERNAME") == "mallory", timeout=30)
        kinds = {e["logtype"] for e in lab.events()}
        assert {1000, 1107, 1206} <= kinds  # boot, pairing requested (with code), paired
        assert "pending" not in lab.console("pending")
        lab.console("revoke", "--name", "nas-1")
        assert "status=revoked" in lab.console("devices")

        def dropped() -> int:
            m = re.search(r"^revoked\t(\d+)$", lab.console("stats"), re.MULTILINE)
            return int(m.group(1)) if m else 0

        lab.wait_for(lambda: dropped() > 0, 30, "the revoked device's beacons dropped")
        assert lab.ssh_attempt("late", "after-revocation") != 0
        lab.wait_for(lambda: dropped() > 3, 30, "more of them dropped")
        assert "late" not in {e["logdata"].get("USERNAME") for e in lab.events()}
