"""The console as a user runs it: `python3 -m console ...` processes, `dig`, SIGTERM, restart."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.protocol.keys import PeerPublicKey
from firmware.protocol.messages import FragmentAck
from firmware.shared.proc import run as proc_run
from tests.console.device import FakeDevice, txt_of, wire_query
from tests.console.test_core import LOGIN, PASSWORD
from tests.console.test_server import udp_ask

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The shared runner (argv list, timeout, checked), with text output for these tests."""
    proc = proc_run(list(argv), cwd=ROOT, capture=True, quiet=True, check=check, timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


def console(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "console", *args, check=check)


class Served:
    def __init__(self, state: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "serve", "--state", str(state),
             "--listen", "127.0.0.1:0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert self.proc.stderr is not None
        assert "serving zone c.test on 127.0.0.1:" in line, line + self.proc.stderr.read()
        self.port = int(line.split("127.0.0.1:")[1].split()[0])
        self.addr = ("127.0.0.1", self.port)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, err
        return out


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Path, FakeDevice]]:
    st = tmp_path / "state"
    out = console("init", "--state", str(st), "--zone", "c.test").stdout
    key = out.split("console public key: ")[1].split()[0]
    assert (st / "console.key").stat().st_mode & 0o777 == 0o600
    device = FakeDevice("c.test", PeerPublicKey.from_text(key))
    console("enroll", "--state", str(st), "--name", "pi-1", "--public-key", device.public_text)
    yield st, device


def test_serve_dig_events_and_restart(state: tuple[Path, FakeDevice]) -> None:
    st, device = state
    server = Served(st)
    try:
        _, labels = device.heartbeat()
        name = ".".join(labels)
        for transport in ("+notcp", "+tcp"):
            out = run("dig", "@127.0.0.1", "-p", str(server.port), transport, "+norec",
                      name.upper(), "TXT").stdout
            assert "status: NOERROR" in out and "ANSWER: 1" in out and " aa" in out
            assert re.search(rf"^{re.escape(name.upper())}\.\s+0\s+IN\s+TXT\s", out, re.M)
        junk = run("dig", "@127.0.0.1", "-p", str(server.port), "+tcp", "x1.C.test", "A").stdout
        assert "status: NOERROR" in junk and "SOA" in junk and "ANSWER: 0" in junk
        other = run("dig", "@127.0.0.1", "-p", str(server.port), "example.com", "A").stdout
        assert "status: REFUSED" in other
        for frag in device.fragments(LOGIN, msg_id=5):
            header, frame = device.frame(frag)
            old_query = wire_query(device.labels(frame))
            answer = txt_of(udp_ask(server.addr, old_query))
            assert answer is not None
            ack = device.open(header, answer)
        assert isinstance(ack, FragmentAck) and ack.complete
    finally:
        assert "state flushed" in server.stop()
    server = Served(st)
    try:
        # replayed after a restart: refused, the floor was persisted
        assert txt_of(udp_ask(server.addr, old_query)) is None
    finally:
        server.stop()
    lines = console("stats", "--state", str(st)).stdout.splitlines()
    stats = dict(line.split("\t") for line in lines)
    assert stats["events"] == "1" and stats["replayed"] == "1" and stats["accepted"] != "0"
    masked = console("events", "--state", str(st), "--json").stdout
    record = json.loads(masked)
    assert record["logdata"]["PASSWORD"] == "********" and PASSWORD not in masked
    assert record["logdata"]["USERNAME"] == "root" and record["node_id"] == "pi-1"
    shown = console("events", "--state", str(st), "--show-passwords", "--limit", "1").stdout
    assert PASSWORD in shown
    devices = console("devices", "--state", str(st)).stdout
    assert "pi-1" in devices and device.device_id.hex() in devices
    assert "status=ok" in devices and "interval=60" in devices


def test_errors_have_a_hint_and_an_exit_code(tmp_path: Path,
                                             state: tuple[Path, FakeDevice]) -> None:
    st, device = state
    missing = console("devices", "--state", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 64 and "-m console init --state" in missing.stderr
    again = console("init", "--state", str(st), "--zone", "c.test", check=False)
    assert again.returncode == 64 and "already holds a console" in again.stderr
    bad_zone = console("init", "--state", str(tmp_path / "z"), "--zone", "bad_zone!", check=False)
    assert bad_zone.returncode == 64 and "hint:" in bad_zone.stderr
    dup = console("enroll", "--state", str(st), "--name", "pi-9", "--public-key",
                  device.public_text, check=False)
    assert dup.returncode == 64 and "clashes" in dup.stderr
    bad_key = console("enroll", "--state", str(st), "--name", "x", "--public-key", "abc",
                      check=False)
    assert bad_key.returncode == 64 and "base64" in bad_key.stderr
    low_order = console("enroll", "--state", str(st), "--name", "x", "--public-key",
                        "A" * 43 + "=", check=False)  # 32 zero bytes: every shared key the same
    assert low_order.returncode == 64 and "low-order" in low_order.stderr
    busy = Served(st)
    try:
        taken = console("serve", "--state", str(st), "--listen", f"127.0.0.1:{busy.port}",
                        check=False)
        assert taken.returncode == 69 and "hint:" in taken.stderr
    finally:
        busy.stop()
    (st / "console.db").write_bytes(b"this is not sqlite" * 100)
    corrupt = console("events", "--state", str(st), check=False)
    assert corrupt.returncode == 74 and "corrupt" in corrupt.stderr


@pytest.mark.parametrize("cmd", ["init", "serve", "enroll", "devices", "events", "stats"])
def test_help_everywhere(cmd: str) -> None:
    assert "--state" in console(cmd, "--help").stdout
