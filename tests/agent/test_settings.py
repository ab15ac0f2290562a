"""Signed settings reach a paired device only in config mode, and only what verifies is kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from console import pairing, settings
from firmware.agent.runner import Agent
from firmware.applier.applier import Applier
from firmware.protocol import settings as signed
from firmware.protocol.catalogue import EventCode
from tests.agent.fakes import LoopbackConsole
from tests.agent.test_pairing import one_round, set_mode, unpaired_agent
from tests.applier.test_applier import Events, FakeSystem


@pytest.fixture
def console(tmp_path: Path) -> LoopbackConsole:
    return LoopbackConsole(tmp_path / "console")


def paired(tmp_path: Path, console: LoopbackConsole) -> Agent:
    agent = unpaired_agent(tmp_path, console)
    set_mode(tmp_path, "config")
    one_round(agent)
    console.flush()
    pairing.approve(console.operator(), console.store.pending_rows()[0].code, "nas-1",
                    time.time())
    console.flush()
    one_round(agent)
    assert agent.pairer.paired
    return agent


def fetch_round(agent: Agent, rounds: int = 3) -> None:
    """What the sender does first in its rounds: pairing (a confirmation on entering config
    mode), then the settings."""
    for _ in range(rounds):
        if agent.pairer.busy():
            agent.pairer.step()
        elif agent.fetcher.busy():
            agent.fetcher.step()


def test_settings_are_fetched_in_config_mode_verified_and_kept(tmp_path: Path,
                                                               console: LoopbackConsole) -> None:
    agent = paired(tmp_path, console)
    settings.change(console.operator(), console.settings_seed, "nas-1",
                    assignments=["services.ssh.port=2222", "device.hostname=files-2"],
                    unset=[], now=time.time())
    set_mode(tmp_path, "production")
    console.queries = 0
    fetch_round(agent)
    assert console.queries == 0, "in production the device never asks"
    set_mode(tmp_path, "config")
    fetch_round(agent)
    kept = (tmp_path / "run" / "agent" / "settings.signed").read_bytes()
    got = signed.verify(console.settings_key, kept, agent.beacon.device_id, 0)
    pin = (tmp_path / "run" / "agent" / "settings.pin").read_text().split()
    assert pin == [agent.beacon.device_id.hex(), console.settings_key.hex()], "for the applier"
    assert dict(got.values) == {"services.ssh.port": 2222, "device.hostname": "files-2"}
    assert agent.fetcher.held() == 1
    console.queries = 0
    fetch_round(agent)
    assert console.queries == 0, "once per config-mode session"
    while agent.send_one():
        pass
    (received,) = console.events(int(EventCode.SETTINGS_RECEIVED))
    assert received["logdata"] == {"VERSION": 1} and received["node_id"] == "nas-1"
    agent.queue.close()


def test_settings_the_pinned_key_did_not_sign_are_refused_and_reported(
        tmp_path: Path, console: LoopbackConsole) -> None:
    agent = paired(tmp_path, console)
    settings.change(console.operator(), os.urandom(32), "nas-1",  # not the console's key
                    assignments=["services.ssh.port=2222"], unset=[], now=time.time())
    set_mode(tmp_path, "production")
    fetch_round(agent)
    set_mode(tmp_path, "config")
    fetch_round(agent)
    assert not (tmp_path / "run" / "agent" / "settings.signed").exists()
    while agent.send_one():
        pass
    (refused,) = console.events(int(EventCode.SETTINGS_REFUSED))
    assert "not signed" in refused["logdata"]["REASON"] and refused["logdata"]["VERSION"] == 1
    agent.queue.close()


def test_a_device_without_settings_asks_once_and_keeps_nothing(tmp_path: Path,
                                                                console: LoopbackConsole) -> None:
    agent = paired(tmp_path, console)
    console.queries = 0
    fetch_round(agent)
    assert console.queries == 1 and agent.fetcher.done  # paired in this session: no confirm
    assert not (tmp_path / "run" / "agent" / "settings.signed").exists()
    agent.queue.close()


def change_ssh_port(console: LoopbackConsole, port: int) -> None:
    settings.change(console.operator(), console.settings_seed, "nas-1",
                    assignments=[f"services.ssh.port={port}"], unset=[], now=time.time())
    console.flush()


def put_in_effect(tmp_path: Path, agent: Agent) -> None:
    """The real settings applier takes what the agent handed over (its system side faked)."""
    events = Events()
    Applier(agent.cfg, FakeSystem(), events, runtime_root=tmp_path / "systemd").poll()
    assert events.only().code is EventCode.SETTINGS_APPLIED, events.events


def test_in_production_pending_settings_are_refused_and_reported_once(
        tmp_path: Path, console: LoopbackConsole) -> None:
    agent = paired(tmp_path, console)
    set_mode(tmp_path, "production")
    fetch_round(agent)
    agent.send_heartbeat()  # nothing waits at the console: nothing to report
    change_ssh_port(console, 2222)
    console.queries = 0
    agent.send_heartbeat()
    agent.send_heartbeat()
    fetch_round(agent)
    assert console.queries == 2, "heartbeats only: in production the device never asks"
    assert not (tmp_path / "run" / "agent" / "settings.signed").exists()
    while agent.send_one():
        pass
    (refused,) = console.events(int(EventCode.SETTINGS_REFUSED))
    assert refused["logdata"]["VERSION"] == 0
    assert "in production" in refused["logdata"]["REASON"]
    assert "hold the config button" in refused["logdata"]["REASON"]
    set_mode(tmp_path, "config")  # a config-mode session, then production again
    fetch_round(agent)
    put_in_effect(tmp_path, agent)
    set_mode(tmp_path, "production")
    fetch_round(agent)
    agent.send_heartbeat()
    while agent.send_one():
        pass
    assert len(console.events(int(EventCode.SETTINGS_REFUSED))) == 1, \
        "applied in config mode: nothing pending any more"
    agent.queue.close()


def test_heartbeats_name_the_version_in_effect_and_settings_changed_in_config_mode_are_fetched(
        tmp_path: Path, console: LoopbackConsole) -> None:
    agent = paired(tmp_path, console)
    change_ssh_port(console, 2222)
    fetch_round(agent)
    assert agent.fetcher.held() == 1 and agent.fetcher.in_effect() == 0
    put_in_effect(tmp_path, agent)
    assert agent.health().settings_version == 1
    change_ssh_port(console, 2022)  # the operator edits again while the device is in config mode
    agent.send_heartbeat()
    assert not agent.fetcher.done, "the acknowledgement said newer settings wait"
    fetch_round(agent)
    kept = (tmp_path / "run" / "agent" / "settings.signed").read_bytes()
    assert signed.kept(kept) == (2, {"services.ssh.port": 2022})
    contact = float((tmp_path / "run" / "agent" / "contact").read_text())
    assert abs(contact - time.monotonic()) < 60, "answered: the applier's contact check"
    assert agent.heartbeat_interval() == 10.0, "config mode: heartbeats every 10 s"
    set_mode(tmp_path, "production")
    fetch_round(agent)
    assert agent.heartbeat_interval() == 3600
    agent.queue.close()


def test_settings_the_applier_could_not_use_at_boot_are_reported(
        tmp_path: Path, console: LoopbackConsole) -> None:
    agent = paired(tmp_path, console)
    (tmp_path / "run" / "apply").mkdir(parents=True)
    (tmp_path / "run" / "apply" / "boot-refused").write_text("the applied settings do not verify")
    agent.fetcher.report_boot_refusal()
    while agent.send_one():
        pass
    (refused,) = console.events(int(EventCode.SETTINGS_REFUSED))
    assert refused["logdata"]["REASON"] == "at boot: the applied settings do not verify"
    agent.queue.close()
