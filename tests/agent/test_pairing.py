"""Pairing from the device's side against the real console core: nothing but registrations and
only in config mode, the code both sides show, approval, rejection and a new key, restarts."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest

from console import pairing
from firmware.agent.runner import Agent
from firmware.config import parse
from firmware.protocol.catalogue import EventCode
from tests.agent.fakes import LoopbackConsole
from tests.agent.test_agent import login


def unpaired_agent(tmp_path: Path, console: LoopbackConsole) -> Agent:
    cfg = parse({"device": {"data_dir": str(tmp_path / "data"), "run_dir": str(tmp_path / "run"),
                            "settings_dir": str(tmp_path / "settings"), "node_name": "nas-lab"},
                 "console": {"zone": console.zone, "public_key": console.key.public().text(),
                             "heartbeat_interval": 3600, "max_backoff": 0.05}})
    return Agent(cfg, transport=console)


def set_mode(tmp_path: Path, mode: str) -> None:
    (tmp_path / "run" / "state").mkdir(parents=True, exist_ok=True)
    (tmp_path / "run" / "state" / "mode").write_text(mode + "\n")


def state(tmp_path: Path) -> str:
    path = tmp_path / "run" / "agent" / "pairing"
    return path.read_text().strip() if path.exists() else ""


def one_round(agent: Agent) -> None:
    """What the sender does first in each of its rounds."""
    if agent.pairer.busy():
        agent.pairer.step()


@pytest.fixture
def console(tmp_path: Path) -> LoopbackConsole:
    return LoopbackConsole(tmp_path / "console")


def test_in_production_an_unpaired_device_asks_nothing_and_keeps_its_events(
        tmp_path: Path, console: LoopbackConsole) -> None:
    agent = unpaired_agent(tmp_path, console)
    agent.queue.put(login(1))
    set_mode(tmp_path, "production")
    for _ in range(3):
        one_round(agent)
    assert console.queries == 0, "in production the device asks its console for nothing"
    assert agent.queue.depth() == 1
    assert console.store.pending_rows() == []


def test_config_mode_pairs_after_approval_and_then_delivers(tmp_path: Path,
                                                            console: LoopbackConsole) -> None:
    agent = unpaired_agent(tmp_path, console)
    agent.queue.put(login(1))
    set_mode(tmp_path, "config")
    one_round(agent)
    console.flush()
    (row,) = console.store.pending_rows()
    assert state(tmp_path) == f"pending {row.code}", "the LED and the console show one code"
    assert row.name == "nas-lab"
    console.queries = 0
    one_round(agent)  # still pending: asks again, same code
    assert console.queries == 1 and state(tmp_path) == f"pending {row.code}"
    name = pairing.approve(console.operator(), row.code, None, time.time())
    console.flush()
    one_round(agent)
    assert agent.pairer.paired and state(tmp_path) == "paired"
    assert (tmp_path / "data" / "paired").read_text().split() == [
        console.key.public().text(), agent.beacon.link.device_key.public().text(),
        base64.b64encode(console.settings_key).decode()]
    assert agent.pairer.settings_key == console.settings_key, "the settings key is pinned"
    while agent.send_one():
        pass
    kinds = [e["logtype"] for e in console.events()]
    assert int(EventCode.DEVICE_PAIRED) in kinds and 4002 in kinds
    (requested,) = console.events(int(EventCode.PAIRING_REQUESTED))
    assert requested["logdata"]["FINGERPRINT"] == row.code and requested["node_id"] == name
    # a restart remembers the pairing, whatever the mode
    agent.queue.close()
    set_mode(tmp_path, "production")
    again = unpaired_agent(tmp_path, console)
    assert again.pairer.paired and again.pairer.settings_key == console.settings_key
    again.queue.close()


def test_a_rejected_key_is_never_offered_again(tmp_path: Path, console: LoopbackConsole) -> None:
    agent = unpaired_agent(tmp_path, console)
    set_mode(tmp_path, "config")
    one_round(agent)
    first = agent.beacon.device_id
    pairing.reject(console.operator(), console.store.pending_rows()[0].code)
    console.flush()
    one_round(agent)
    assert state(tmp_path).startswith("error") and not agent.pairer.paired
    console.queries = 0
    one_round(agent)
    assert console.queries == 0, "a refused key is not offered again in this session"
    set_mode(tmp_path, "production")
    one_round(agent)
    set_mode(tmp_path, "config")  # the next config-mode session: a new key, a new request
    one_round(agent)
    assert agent.beacon.device_id != first
    assert list((tmp_path / "data").glob("device.key.refused-*"))
    console.flush()
    ids = {r.device_id: r.state for r in console.store.pending_rows()}
    assert ids[agent.beacon.device_id] == "pending" and ids[first] == "rejected"
    agent.queue.close()


def test_the_running_agent_waits_for_config_mode_then_pairs(tmp_path: Path,
                                                             console: LoopbackConsole) -> None:
    agent = unpaired_agent(tmp_path, console)
    set_mode(tmp_path, "production")
    sender = threading.Thread(target=agent.run)
    sender.start()
    try:
        time.sleep(1.5)
        assert console.queries == 0
        set_mode(tmp_path, "config")
        deadline = time.monotonic() + 10
        while not console.store.pending_rows() and time.monotonic() < deadline:
            console.flush()
            time.sleep(0.1)
        (row,) = console.store.pending_rows()
        pairing.approve(console.operator(), row.code, "nas-1", time.time())
        console.flush()
        while not console.events(int(EventCode.BOOT)) and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        assert console.events(int(EventCode.BOOT)), "paired: the agent's own events go out"
    finally:
        agent.stop.set()
        agent.wake.set()
        sender.join(timeout=15)
    assert not sender.is_alive()
    assert console.nonces_unique()


def test_a_revoked_device_pairs_anew_with_a_new_key_in_config_mode(
        tmp_path: Path, console: LoopbackConsole) -> None:
    agent = unpaired_agent(tmp_path, console)
    set_mode(tmp_path, "config")
    assert agent.pairer.busy()
    one_round(agent)
    console.flush()
    pairing.approve(console.operator(), console.store.pending_rows()[0].code, "nas-1",
                    time.time())
    console.flush()
    assert agent.pairer.busy()
    one_round(agent)
    assert agent.pairer.paired
    set_mode(tmp_path, "production")
    assert not agent.pairer.busy(), "paired, in production: nothing to ask"
    pairing.revoke(console.operator(), "nas-1", time.time())
    console.flush()
    old = agent.beacon.device_id
    set_mode(tmp_path, "config")  # someone at the box: the device learns of the revocation
    assert agent.pairer.busy()
    one_round(agent)
    assert not agent.pairer.paired and agent.beacon.device_id != old
    assert not (tmp_path / "data" / "paired").exists()
    one_round(agent)
    console.flush()
    (row,) = [r for r in console.store.pending_rows() if r.device_id == agent.beacon.device_id]
    assert row.state == "pending"
    agent.queue.close()


def test_a_new_key_is_not_taken_for_paired(tmp_path: Path, console: LoopbackConsole) -> None:
    """The paired marker names the device's key too: a key moved away (as the corrupt-key hint
    says) means pairing again, not sending as a device the console does not know."""
    agent = unpaired_agent(tmp_path, console)
    set_mode(tmp_path, "config")
    one_round(agent)
    console.flush()
    pairing.approve(console.operator(), console.store.pending_rows()[0].code, None, time.time())
    console.flush()
    one_round(agent)
    agent.queue.close()
    (tmp_path / "data" / "device.key").unlink()
    fresh = unpaired_agent(tmp_path, console)
    assert not fresh.pairer.paired
    fresh.queue.close()
