"""Whatever a compromised service sends to its event socket, the agent keeps receiving and
delivering: Hypothesis throws random bytes, arbitrary JSON and compact events with hostile
field values at a running agent (real sockets, real threads, the real console core), and after
every datagram a normal event must still reach the console."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from firmware.agent.runner import Agent
from firmware.eventpath import encode_datagram
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from tests.agent.fakes import LoopbackConsole
from tests.agent.test_agent import make_agent

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=40), st.integers(min_value=2**62, max_value=2**200))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)
hostile = st.one_of(scalars, json_values, st.text(alphabet=st.characters(), max_size=200),
                    st.sampled_from(["\ud800", "\x00", "\u202e", "é" * 2000, "1.2.3.4.5", "::g"]))
compact = st.fixed_dictionaries({}, optional={
    "c": st.one_of(st.sampled_from([int(c) for c in EventCode]), hostile),
    "t": st.one_of(st.integers(0, 2**64), hostile), "sh": hostile, "sp": hostile,
    "dh": hostile, "dp": hostile,
    "d": st.one_of(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,5}", fullmatch=True),
                                   hostile, max_size=5), hostile)})
datagrams = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    compact.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
)


# Datagrams that ended the receiver (or stuck the console) before issue 8.
KNOWN_KILLERS = [
    b'{"c":4002,"t":1,"sp":1,"dp":1,"d":{"A":"\\ud800"}}',  # lone surrogate: cannot encode
    b'{"c":4002,"t":4611686018427387904,"sp":1,"dp":1}',  # a time no datetime holds
    b"[" * 5000 + b"]" * 5000,  # nesting deeper than the JSON parser's stack
]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent, LoopbackConsole]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    console = LoopbackConsole(tmp / "console")
    agent = make_agent(tmp, console)
    agent.watchdog.notify = lambda _state: None
    server = threading.Thread(target=agent.serve, daemon=True)
    server.start()
    path = agent.cfg.event_socket("ssh")
    deadline = time.time() + 10
    while not path.exists() and time.time() < deadline:
        time.sleep(0.02)
    yield agent, console
    agent.stop.set()
    server.join(15)


def probe(n: int) -> bytes:
    """An honest attempt, each from a source of its own (flood control has tests of its own)."""
    source = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    return encode_datagram(Event(EventCode.SSH_LOGIN_ATTEMPT, 1_700_000_000, source, 40000,
                                 "192.0.2.1", 22, {"USERNAME": f"probe{n}"}))


def test_any_datagram_leaves_the_agent_receiving_and_delivering(
        running: tuple[Agent, LoopbackConsole]) -> None:
    agent, console = running
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    target = str(agent.cfg.event_socket("ssh"))
    sent: list[int] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(junk=datagrams)
    @example(junk=KNOWN_KILLERS[0])
    @example(junk=KNOWN_KILLERS[1])
    @example(junk=KNOWN_KILLERS[2])
    def throw(junk: bytes) -> None:
        sock.sendto(junk[:8192], target)
        n = len(sent)
        sock.sendto(probe(n), target)
        sent.append(n)

    throw()
    want = {f"probe{n}" for n in sent}
    deadline = time.time() + 60
    got: set[str] = set()
    while time.time() < deadline and not want <= got:
        got = {e["logdata"].get("USERNAME") for e in console.events(4002)}
        time.sleep(0.2)
    assert want <= got, f"{len(want - got)} probes missing"
    assert agent.receiver is not None and agent.receiver.is_alive()
    assert sum(agent.rejected.values()) > 0
    assert agent.health().rejected == sum(agent.rejected.values())
    # every stored event survived the console's own validation (nothing undecodable)
    assert not console.events(int(EventCode.MESSAGE_UNDECODABLE))


def test_a_service_cannot_forge_device_level_events(running: tuple[Agent, LoopbackConsole]) -> None:
    agent, _ = running
    before = dict(agent.rejected)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for code in (EventCode.BOOT, EventCode.EVENTS_DROPPED, EventCode.DEVICE_OFFLINE,
                 EventCode.QUEUE_RESET, EventCode.LISTENERS):
        sock.sendto(encode_datagram(Event(code, 1.0)), str(agent.cfg.event_socket("ssh")))
    deadline = time.time() + 5
    while sum(agent.rejected.values()) - sum(before.values()) < 5 and time.time() < deadline:
        time.sleep(0.02)
    assert sum(agent.rejected.values()) - sum(before.values()) == 5


def test_datagram_of_exactly_the_limit_and_one_more(tmp_path: Path) -> None:
    console = LoopbackConsole(tmp_path / "console")
    agent = make_agent(tmp_path, console, event_datagram_bytes=512)
    good = probe(1)
    agent.accept_datagram("ssh", good + b" " * (512 - len(good)), 512)
    agent.accept_datagram("ssh", good + b" " * (513 - len(good)), 512)
    assert agent.queue.depth() == 1 and sum(agent.rejected.values()) == 1
