"""The agent proves liveness to systemd only while it works: real python3-systemd notifications
to a notify socket of the test's own, and the liveness rule with a controlled clock."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.agent.watchdog import Liveness, Watchdog, watchdog_period
from tests.agent.fakes import LoopbackConsole

ROOT = Path(__file__).resolve().parents[2]


def test_liveness_names_the_thread_that_stopped() -> None:
    now = [0.0]
    live = Liveness(clock=lambda: now[0])
    live.register("receiver", 10)
    live.register("sender", 30)
    now[0] = 9
    assert live.late() == []
    now[0] = 11
    assert live.late() == ["receiver"]
    now[0] = 31
    live.tick("receiver")
    assert live.late() == ["sender"]


def test_watchdog_pings_only_while_healthy() -> None:
    now = [0.0]
    live = Liveness(clock=lambda: now[0])
    live.register("receiver", 10)
    notes: list[str] = []
    dog = Watchdog(live, notes.append, period=30)
    assert dog.check() and notes == ["WATCHDOG=1"]
    now[0] = 20
    assert not dog.check() and notes[-1] == "STATUS=stalled: receiver"
    assert not dog.check(lambda: ["sender"])
    assert notes.count("WATCHDOG=1") == 1


def test_period_comes_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_period() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert watchdog_period() is None


def test_real_agent_notifies_ready_and_pings_through_python3_systemd(tmp_path: Path) -> None:
    """``python3 -m firmware.agent`` under a fake service manager: READY=1, then pings."""
    console = LoopbackConsole(tmp_path / "console")
    from firmware.agent.storage import load_or_create_key
    key, _ = load_or_create_key(tmp_path / "data")
    console.enroll(key.public())
    conf = tmp_path / "device.toml"
    conf.write_text(
        f'[device]\ndata_dir = "{tmp_path / "data"}"\nrun_dir = "{tmp_path / "run"}"\n'
        f'[console]\nzone = "c.test"\npublic_key = "{console.key.public().text()}"\n'
        'resolver = "127.0.0.1:9"\nquery_timeout = 0.2\n')  # nothing answers: irrelevant here
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "3000000",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "firmware.agent", "--config", str(conf)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        messages: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in messages) < 2:
            messages.append(sock.recv(4096).decode())
        assert messages and messages[0].startswith("READY=1"), messages
        assert sum("WATCHDOG=1" in m for m in messages) >= 2, messages
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        sock.close()
    assert proc.returncode == 0, err.decode()[-2000:]
