"""Through a real recursive resolver: Debian's unbound with 0x20 case randomisation and QNAME
minimisation on, stub zone pointing at the console on 127.0.0.1 (high ports, no root needed)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.config import ServerLimits
from console.server import Server, bind_or_inherit
from firmware.protocol.messages import FragmentAck, HeartbeatAck
from scripts.lab import free_port, need, write_unbound_conf
from tests.console.conftest import Rig
from tests.console.device import TXT, txt_of, wire_query
from tests.console.test_core import LOGIN
from tests.console.test_server import udp_ask


@pytest.fixture
def resolver(rig: Rig, tmp_path: Path) -> Iterator[tuple[Rig, tuple[str, int]]]:
    unbound = need("unbound")  # a missing unbound fails the test (ToolError), never skips it
    server = Server(rig.responder, bind_or_inherit("127.0.0.1:0"),
                    ServerLimits(flush_interval=0.2), rig.console.flush,
                    commit=rig.console.commit)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = free_port()
    conf = write_unbound_conf(tmp_path / "unbound.conf", port=port,
                              console_port=server.address[1], verbosity=0)
    proc = subprocess.Popen([unbound, "-d", "-c", str(conf)], stderr=subprocess.PIPE)
    addr = ("127.0.0.1", port)
    try:
        wait_until_up(addr, proc)
        yield rig, addr
    finally:
        proc.terminate()
        proc.wait(10)
        server.stop()
        thread.join(5)


def wait_until_up(addr: tuple[str, int], proc: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"unbound exited: {proc.stderr.read() if proc.stderr else ''!r}")
        try:
            udp_ask(addr, wire_query(["c", "test"], 6), timeout=0.2)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("unbound did not answer")


def test_beacons_and_an_event_through_unbound(resolver: tuple[Rig, tuple[str, int]]) -> None:
    rig, addr = resolver
    for _ in range(3):
        header, labels = rig.device.heartbeat()
        txt = txt_of(udp_ask(addr, wire_query(labels, TXT, edns=1232)))
        assert txt is not None and isinstance(rig.device.open(header, txt), HeartbeatAck)
    frags = rig.device.fragments(LOGIN, msg_id=11)
    for frag in [*frags, frags[0]]:  # a late duplicate of the first fragment too
        header, frame = rig.device.frame(frag)
        txt = txt_of(udp_ask(addr, wire_query(rig.device.labels(frame), TXT, edns=1232)))
        assert txt is not None
        ack = rig.device.open(header, txt)
        assert isinstance(ack, FragmentAck)
    assert isinstance(ack, FragmentAck) and ack.complete
    time.sleep(0.3)
    stats = rig.console.stats
    assert len(rig.store.events()) == 1
    assert stats["accepted"] == 3 + len(frags) + 1
    # minimisation probes and the A for the full name reached the console, none counted
    assert stats["queries"] > stats["accepted"]
    for reason in ("undecodable", "auth_failed", "replayed", "unknown_device"):
        assert stats[reason] == 0, reason
