"""Beacon agent: persistence, bounds, retransmission and exactly-once delivery."""

import asyncio
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from firmware.agent.queue import EventQueue
from firmware.agent.runner import Agent
from firmware.agent.storage import CounterSource, load_or_create_key
from firmware.config import parse
from firmware.errors import ConfigError, StorageError
from firmware.eventpath import SocketSink, encode_datagram
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event, decode_message
from firmware.protocol.replay import SEQ_BITS

from .fakes import FakeConsole


def login(i: int) -> Event:
    return Event(EventCode.SSH_LOGIN_ATTEMPT, 1_700_000_000 + i, "127.0.0.9", 40000 + i,
                 "127.0.0.1", 2222, {"USERNAME": f"user{i}", "PASSWORD": "p" * 150})


def make_agent(tmp_path: Path, console: FakeConsole, **limits: int) -> Agent:
    key, _ = load_or_create_key(tmp_path / "data")
    console.enroll(key.public())
    cfg = parse({"device": {"data_dir": str(tmp_path / "data"), "run_dir": str(tmp_path / "run")},
                 "console": {"zone": console.zone, "public_key": console.key.public().text(),
                             "heartbeat_interval": 3600, "max_backoff": 0.05},
                 "limits": limits})
    return Agent(cfg, transport=console)


def drain_and_stop(agent: Agent, sender: threading.Thread, timeout: float) -> None:
    """Wait until the queue is empty (or ``timeout``), then stop the sending thread."""
    deadline = time.time() + timeout
    while agent.queue.depth() and time.time() < deadline:
        time.sleep(0.02)
    agent.stop.set()
    agent.wake.set()
    sender.join(5)


def test_counter_epoch_survives_restart(tmp_path):
    a = CounterSource(tmp_path)
    first = [a.next() for _ in range(3)]
    b = CounterSource(tmp_path)
    assert b.next() > max(first)
    assert (b.next() >> SEQ_BITS) == (first[0] >> SEQ_BITS) + 1


def test_corrupt_key_file_is_a_clear_error(tmp_path):
    (tmp_path / "device.key").write_bytes(b"short")
    with pytest.raises(StorageError, match="not a 32-byte key"):
        load_or_create_key(tmp_path)


def test_unpaired_device_says_what_to_do(tmp_path, capsys):
    cfg = parse({"device": {"data_dir": str(tmp_path)}})
    with pytest.raises(ConfigError) as err:
        Agent(cfg)
    assert "enroll" in err.value.hint
    assert "device public key" in capsys.readouterr().out


def test_queue_bound_drops_oldest_and_reports_it(tmp_path):
    q = EventQueue(tmp_path / "q.db", max_events=5)
    ids = [q.put(login(i)) for i in range(8)]
    assert q.depth() == 5 and q.dropped() == 3
    q.report_drops()
    q.report_drops()  # still pending: no second report
    assert q.depth() == 6
    oldest = q.oldest()
    assert oldest is not None and oldest.id == ids[3]
    q.close()
    q2 = EventQueue(tmp_path / "q.db", max_events=5)  # survives a restart
    msgs = []
    while (item := q2.oldest()) is not None:
        msgs.append(decode_message(item.message))
        q2.remove(item.id)
    assert [m.code for m in msgs][-1] is EventCode.EVENTS_DROPPED
    assert msgs[-1].data == {"COUNT": 3}
    assert [m.data["USERNAME"] for m in msgs[:-1]] == [f"user{i}" for i in range(3, 8)]


def test_console_down_then_up_delivers_each_event_once(tmp_path):
    console = FakeConsole()
    agent = make_agent(tmp_path, console)
    for i in range(5):
        agent.queue.put(login(i))
    console.down = True
    worker = threading.Thread(target=agent.run)
    worker.start()
    time.sleep(0.3)
    assert not console.events and agent.queue.depth() == 6
    console.down = False
    drain_and_stop(agent, worker, 10)
    got = sorted(e.data.get("USERNAME", "") for e in console.events.values())
    assert got == ["", "user0", "user1", "user2", "user3", "user4"]  # "" is the BOOT event
    assert console.heartbeats >= 1


def test_partial_loss_at_console_is_repaired(tmp_path):
    console = FakeConsole()
    agent = make_agent(tmp_path, console)
    msg = agent.queue.put(login(1))
    real = console.exchange
    calls = {"n": 0}

    def forgetful(qname: str) -> bytes:
        calls["n"] += 1
        if calls["n"] == 2:  # console restarts after the first fragment: partials lost
            console.parts = type(console.parts)()
        return real(qname)

    agent.beacon.transport.exchange = forgetful  # type: ignore[method-assign]
    item = agent.queue.oldest()
    assert item is not None and item.id == msg
    agent.beacon.deliver(item.id, item.message)
    assert console.events[(agent.beacon.device_id, msg)].data["USERNAME"] == "user1"


def test_socket_path_validates_and_queues(tmp_path):
    console = FakeConsole()
    agent = make_agent(tmp_path, console, event_datagram_bytes=2048)
    sock = agent.open_socket()
    assert oct(os.stat(agent.cfg.event_socket).st_mode & 0o777) == "0o660"
    t = threading.Thread(target=agent.receive_loop, args=(sock,))
    t.start()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for junk in (b"\xff\xfe", b"{}", json.dumps({"c": 9999}).encode(), b"x" * 5000):
        raw.sendto(junk, str(agent.cfg.event_socket))
    sink = SocketSink(agent.cfg.event_socket)
    sink.emit(login(7))
    deadline = time.time() + 5
    while agent.queue.depth() < 1 and time.time() < deadline:
        time.sleep(0.02)
    agent.stop.set()
    t.join(5)
    assert agent.queue.depth() == 1 and agent.rejected == 4
    item = agent.queue.oldest()
    assert item is not None and decode_message(item.message) == login(7)
    assert len(encode_datagram(login(7))) < 2048


def test_sink_keeps_backlog_while_agent_is_away(tmp_path):
    path = tmp_path / "events.sock"
    sink = SocketSink(path, backlog=3)
    for i in range(5):
        sink.emit(login(i))  # must not raise
    assert len(sink.backlog) == 3
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    sink.flush()
    assert not sink.backlog
    got = [json.loads(receiver.recv(8192))["d"]["USERNAME"] for _ in range(3)]
    assert got == ["user2", "user3", "user4"]


def test_events_still_in_the_socket_at_shutdown_are_kept(tmp_path):
    console = FakeConsole()
    agent = make_agent(tmp_path, console)
    sock = agent.open_socket()  # no receiver thread: the datagrams stay in the socket buffer
    sink = SocketSink(agent.cfg.event_socket)
    for i in range(3):
        sink.emit(login(i))
    assert not sink.backlog
    agent.close_socket(sock)
    assert agent.queue.depth() == 3
    assert not agent.cfg.event_socket.exists()
    sink.emit(login(3))  # the agent is gone now: the sink keeps it for the next one
    assert len(sink.backlog) == 1


def test_sink_retries_its_backlog_without_a_new_event(tmp_path):
    path = tmp_path / "events.sock"

    async def scenario() -> list[str]:
        sink = SocketSink(path, retry_after=0.05)
        sink.emit(login(1))  # agent away: kept, and a retry is scheduled
        assert len(sink.backlog) == 1 and sink.away
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(path))
        receiver.setblocking(False)
        await asyncio.sleep(0.5)
        got = [json.loads(receiver.recv(8192))["d"]["USERNAME"]]
        assert not sink.backlog and not sink.away
        sink.close()
        receiver.close()
        return got

    assert asyncio.run(scenario()) == ["user1"]


def test_receiver_and_sender_threads_share_the_queue_safely(tmp_path):
    console = FakeConsole()
    agent = make_agent(tmp_path, console)
    sender = threading.Thread(target=agent.run)
    sender.start()
    limit = agent.cfg.limits.event_datagram_bytes

    def produce(k: int) -> None:  # the receiver's path: store, then wake the sender
        for i in range(40):
            agent.accept_datagram(encode_datagram(login(k * 100 + i)), limit)

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(3)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    drain_and_stop(agent, sender, 20)
    assert len([e for e in console.events.values() if e.code is EventCode.SSH_LOGIN_ATTEMPT]) == 120
