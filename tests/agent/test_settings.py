"""Signed settings reach a paired device only in config mode, and only what verifies is kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from console import pairing, settings
from firmware.agent.runner import Agent
from firmware.protocol import settings as signed
from firmware.protocol.catalogue import EventCode
from tests.agent.fakes import LoopbackConsole
from tests.agent.test_pairing import one_round, set_mode, unpaired_agent


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
    kept = (tmp_path / "data" / "settings.signed").read_bytes()
    got = signed.verify(console.settings_key, kept, agent.beacon.device_id, 0)
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
    assert not (tmp_path / "data" / "settings.signed").exists()
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
    assert not (tmp_path / "data" / "settings.signed").exists()
    agent.queue.close()
