"""Beacon agent: persistence, bounds, retransmission and exactly-once delivery to the real core."""

import asyncio
import json
import random
import shlex
import shutil
import socket
import string
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.agent.queue import EventQueue
from firmware.agent.runner import Agent
from firmware.agent.storage import CounterSource, load_or_create_key
from firmware.config import parse
from firmware.eventpath import SocketSink, decode_datagram, encode_datagram
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event, decode_message
from firmware.protocol.fragment import Reassembler, split
from firmware.protocol.replay import SEQ_BITS
from firmware.shared.errors import ConfigError, StorageError

from .fakes import LoopbackConsole

_RNG = random.Random(3)
NOISE = "".join(_RNG.choice(string.ascii_letters + string.digits) for _ in range(400))


def login(i: int, password: str = "p" * 150, src: str = "127.0.0.9") -> Event:
    return Event(EventCode.SSH_LOGIN_ATTEMPT, 1_700_000_000 + i, src, 40000 + i,
                 "127.0.0.1", 2222, {"USERNAME": f"user{i}", "PASSWORD": password})


def make_agent(tmp_path: Path, console: LoopbackConsole, data: str = "data", **limits: float
               ) -> Agent:
    key, _ = load_or_create_key(tmp_path / data)
    if key.public().device_id() not in console.core._devices:
        console.enroll(key.public())
    cfg = parse({"device": {"data_dir": str(tmp_path / data), "run_dir": str(tmp_path / "run")},
                 "console": {"zone": console.zone, "public_key": console.key.public().text(),
                             "heartbeat_interval": 3600, "max_backoff": 0.05,
                             "enrolled": True},
                 "limits": limits})
    return Agent(cfg, transport=console)


@pytest.fixture
def console(tmp_path: Path) -> LoopbackConsole:
    return LoopbackConsole(tmp_path / "console")


def users(console: LoopbackConsole) -> list[str]:
    return sorted(e["logdata"]["USERNAME"] for e in console.events(4002))


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
    assert a.session != b.session  # random per start (a collision here is a 1 in 2^32 event)


def test_corrupt_counter_file_is_survived(tmp_path):
    (tmp_path / "counter.epoch").write_text("garbage")
    assert CounterSource(tmp_path).epoch == 1  # the console's Stale answer moves it on


def test_corrupt_key_file_is_a_clear_error(tmp_path):
    (tmp_path / "device.key").write_bytes(b"short")
    with pytest.raises(StorageError, match="not a 32-byte key"):
        load_or_create_key(tmp_path)


def test_a_device_that_does_not_know_its_console_says_what_to_do(tmp_path):
    cfg = parse({"device": {"data_dir": str(tmp_path)}})
    with pytest.raises(ConfigError) as err:
        Agent(cfg)
    assert "coalmine.toml" in err.value.hint


def test_queue_bound_drops_oldest_and_reports_it(tmp_path):
    q = EventQueue(tmp_path / "q.db", max_events=5)
    ids = [q.put(login(i)) for i in range(8)]
    assert q.depth() == 5 and q.dropped() == 3
    q.report_drops()
    q.report_drops()  # still pending: no second report
    assert q.depth() == 6
    oldest = q.oldest()
    assert oldest is not None and oldest.msg_id == ids[0], "the first of its source is kept"
    q.close()
    q2 = EventQueue(tmp_path / "q.db", max_events=5)  # survives a restart
    msgs = []
    while (item := q2.oldest()) is not None:
        msgs.append(decode_message(item.message))
        q2.remove(item.id)
    assert [m.code for m in msgs][-1] is EventCode.EVENTS_DROPPED
    assert msgs[-1].data == {"COUNT": 3}
    assert [m.data["USERNAME"] for m in msgs[:-1]] == ["user0", *(f"user{i}" for i in range(4, 8))]


def test_a_pending_drop_report_survives_further_overflow_and_later_drops_are_reported(tmp_path):
    q = EventQueue(tmp_path / "q.db", max_events=5)
    for i in range(8):
        q.put(login(i))
    q.report_drops()  # COUNT 3 pending
    for i in range(8, 30):  # the queue overflows again and again
        q.put(login(i))
    queued = []
    while (item := q.oldest()) is not None:
        queued.append(decode_message(item.message))
        q.remove(item.id)
    reports = [m.data["COUNT"] for m in queued if m.code is EventCode.EVENTS_DROPPED]
    assert reports == [3], "the pending report is never dropped"
    q.report_drops()  # delivered: the drops since then get their own report
    item = q.oldest()
    assert item is not None
    later = decode_message(item.message)
    assert later.code is EventCode.EVENTS_DROPPED and later.data["COUNT"] == 22  # puts 8..29
    assert q.dropped() == 3 + 22  # over the queue's life


def test_a_flood_from_one_source_keeps_the_first_event_of_every_other(tmp_path):
    q = EventQueue(tmp_path / "q.db", max_events=10)
    q.put(login(0, src="192.0.2.1"))
    q.put(login(1, src="192.0.2.2"))
    for i in range(100):
        q.put(login(100 + i, src="198.51.100.66"))
    kept = []
    while (item := q.oldest()) is not None:
        kept.append(decode_message(item.message))
        q.remove(item.id)
    sources = [e.src_host for e in kept]
    assert sources[:3] == ["192.0.2.1", "192.0.2.2", "198.51.100.66"]
    assert kept[2].data["USERNAME"] == "user100", "the flood's own first event is kept too"
    assert len(kept) == 10 and q.dropped() == 92


def test_message_ids_never_repeat_across_queue_generations(tmp_path, console):
    """A queue moved aside (as an operator might) starts anew; its events are still stored."""
    agent = make_agent(tmp_path, console)
    agent.queue.put(login(1))
    assert agent.send_one() and not agent.send_one()
    agent.queue.close()
    for name in ("queue.db", "queue.db-wal", "queue.db-shm"):
        path = tmp_path / "data" / name
        if path.exists():
            path.rename(path.with_name(name + ".old"))
    agent = make_agent(tmp_path, console)
    agent.queue.put(login(2))
    assert agent.send_one()
    assert users(console) == ["user1", "user2"]


def test_unreadable_queue_is_moved_aside_and_reported(tmp_path, console):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "queue.db").write_bytes(b"this is not a database" * 100)
    agent = make_agent(tmp_path, console)
    assert agent.queue.reset_reason
    assert list((tmp_path / "data").glob("queue.db.unreadable-*"))
    assert agent.send_one()
    (reset,) = console.events(int(EventCode.QUEUE_RESET))
    assert "queue.db.unreadable-" in reset["logdata"]["MOVED_TO"]
    agent.send_heartbeat()
    console.flush()
    (unhealthy,) = console.events(int(EventCode.DEVICE_UNHEALTHY))
    assert "queue reset" in unhealthy["logdata"]["REASONS"]


def test_console_down_then_up_delivers_each_event_once(tmp_path, console):
    agent = make_agent(tmp_path, console)
    for i in range(5):
        agent.queue.put(login(i))
    console.down = True
    worker = threading.Thread(target=agent.run)
    worker.start()
    time.sleep(0.3)
    assert not console.events() and agent.queue.depth() >= 6
    console.down = False
    drain_and_stop(agent, worker, 10)
    assert users(console) == [f"user{i}" for i in range(5)]
    assert console.events(int(EventCode.BOOT))
    assert console.core._devices[agent.beacon.device_id].health.beat is not None
    assert console.nonces_unique()


def test_partial_loss_at_console_is_repaired(tmp_path, console):
    agent = make_agent(tmp_path, console)
    agent.queue.put(login(1, password=NOISE))
    item = agent.queue.oldest()
    assert item is not None
    count = len(split(item.message, item.msg_id, agent.beacon.body_size))
    assert count >= 3, "the message must span several frames for this test to mean anything"
    real: Callable[[str], bytes] = console.exchange
    calls = {"n": 0}

    def forgetful(qname: str) -> bytes:
        calls["n"] += 1
        if calls["n"] == 2:  # console restarts after the first fragment: partials lost
            console.core._reassembler = Reassembler()
        return real(qname)

    agent.beacon.transport.exchange = forgetful  # type: ignore[method-assign]
    agent.beacon.deliver(item.msg_id, item.message)
    assert users(console) == ["user1"]
    assert calls["n"] == count + 1, "exactly the lost fragment was sent again"


def test_socket_path_validates_and_queues(tmp_path, console):
    agent = make_agent(tmp_path, console, event_datagram_bytes=2048)
    socks = agent.open_sockets()
    path = agent.cfg.event_socket("ssh")
    assert oct(path.stat().st_mode & 0o777) == "0o660"
    t = threading.Thread(target=agent.receive_loop, args=(socks,))
    t.start()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    boot = Event(EventCode.BOOT, 1.0, data={"NODE": "forged"})
    for junk in (b"\xff\xfe", b"{}", json.dumps({"c": 9999}).encode(), b"x" * 5000,
                 encode_datagram(boot)):  # BOOT may only come from the agent itself
        raw.sendto(junk, str(path))
    sink = SocketSink(path)
    sink.emit(login(7))
    deadline = time.time() + 5
    while agent.queue.depth() < 1 and time.time() < deadline:
        time.sleep(0.02)
    agent.stop.set()
    t.join(5)
    assert agent.queue.depth() == 1 and sum(agent.rejected.values()) == 5
    assert any("ssh may send" in reason for reason in agent.rejected)
    item = agent.queue.oldest()
    assert item is not None and decode_message(item.message) == login(7)


def test_sink_keeps_backlog_while_agent_is_away_and_counts_what_it_drops(tmp_path):
    path = tmp_path / "events.sock"
    sink = SocketSink(path, backlog=3)
    for i in range(5):
        sink.emit(login(i))  # must not raise
    assert len(sink.backlog) == 3 and sink.dropped == 2
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    sink.flush()
    assert not sink.backlog and not sink.dropped
    got = [decode_datagram(receiver.recv(8192), 8192) for _ in range(4)]
    assert [e.data.get("USERNAME") for e in got[:3]] == ["user0", "user1", "user2"], \
        "the earliest are kept (a source's first contact)"
    assert got[3].code == EventCode.EVENTS_DROPPED and got[3].data == {"COUNT": 2}


def test_a_services_drop_count_becomes_the_agents_own_event(tmp_path, console):
    agent = make_agent(tmp_path, console)
    report = Event(EventCode.EVENTS_DROPPED, 0.0, data={"COUNT": 7, "SOURCE": "forged"})
    agent.accept_datagram("smb", encode_datagram(report), 8192)
    item = agent.queue.oldest()
    assert item is not None
    event = decode_message(item.message)
    assert event.code == EventCode.EVENTS_DROPPED and event.data == {"COUNT": 7, "SOURCE": "smb"}
    for _ in range(100):  # a service that floods reports gets one event per interval
        agent.accept_datagram("smb", encode_datagram(report), 8192)
    agent.accept_datagram("smb", encode_datagram(report._replace(data={"COUNT": 0})), 8192)
    assert agent.queue.depth() == 1 and sum(agent.rejected.values()) == 1
    agent.drop_counts.every = 0.0
    (later,) = agent.drop_counts.due()
    assert later.data == {"COUNT": 700, "SOURCE": "smb"}, "counted, not lost"


def test_a_burst_that_fills_the_agents_socket_leaves_soon_not_after_the_away_delay(tmp_path):
    path = tmp_path / "events.sock"

    async def scenario() -> int:
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(path))
        receiver.setblocking(False)
        sink = SocketSink(path, backlog=4000, retry_after=30.0)
        total = 1000  # far more than the socket queue holds (10 by default)
        for i in range(total):
            sink.emit(login(i))
        assert sink.backlog and not sink.away, "full is not away"
        got = 0
        deadline = time.monotonic() + 5
        while got < total and time.monotonic() < deadline:
            try:
                receiver.recv(8192)
                got += 1
            except BlockingIOError:
                await asyncio.sleep(0.005)
        sink.close()
        receiver.close()
        return got

    assert asyncio.run(scenario()) == 1000


def test_a_sender_that_exits_waits_for_a_restarting_agent_and_says_what_it_lost(tmp_path, caplog):
    path = tmp_path / "events.sock"
    sink = SocketSink(path)
    sink.emit(login(1))
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    threading.Timer(0.3, lambda: receiver.bind(str(path))).start()  # the agent is back
    assert sink.drain(5.0, every=0.05) == 0
    assert json.loads(receiver.recv(8192))["d"]["USERNAME"] == "user1"
    receiver.close()
    path.unlink()
    sink.emit(login(2))
    assert sink.drain(0.2, every=0.05) == 1
    assert "1 events could not be handed to the agent" in caplog.text
    sink.close()


def test_events_still_in_the_socket_at_shutdown_are_kept(tmp_path, console):
    agent = make_agent(tmp_path, console)
    socks = agent.open_sockets()  # no receiver thread: the datagrams stay in the socket buffer
    sink = SocketSink(agent.cfg.event_socket("ssh"))
    for i in range(3):
        sink.emit(login(i))
    assert not sink.backlog
    agent.close_sockets(socks)
    assert agent.queue.depth() == 3
    assert not agent.cfg.event_socket("ssh").exists()
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


def test_receiver_and_sender_threads_share_the_queue_safely(tmp_path, console):
    agent = make_agent(tmp_path, console)
    sender = threading.Thread(target=agent.run)
    sender.start()
    limit = agent.cfg.limits.event_datagram_bytes

    def produce(k: int) -> None:  # the receiver's path: store, then wake the sender
        for i in range(40):  # each from a source of its own: no flood control
            event = login(k * 100 + i, src=f"127.0.{k}.{i + 1}")
            agent.accept_datagram("ssh", encode_datagram(event), limit)

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(3)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    drain_and_stop(agent, sender, 30)
    assert len(console.events(4002)) == 120


def test_a_hammering_source_is_counted_not_flooded_and_others_still_go_out(tmp_path, console):
    """300 attempts from one source inside a window: its first 5 are sent, then one count;
    a new source in the middle of it goes out at once; the count comes when the window ends."""
    agent = make_agent(tmp_path, console, flood_window=1.0, flood_burst=5)
    limit = agent.cfg.limits.event_datagram_bytes
    for i in range(300):
        agent.accept_datagram("ssh", encode_datagram(login(i, src="192.0.2.7")), limit)
        if i == 150:
            agent.accept_datagram("ssh", encode_datagram(login(999, src="192.0.2.8")), limit)
    assert agent.queue.depth() == 6, "5 + the other source's first: nothing else yet"
    time.sleep(1.1)
    agent.store(agent.flood.due())
    while agent.send_one():
        pass
    sent = console.events(4002)
    assert sorted(e["logdata"]["USERNAME"] for e in sent) == [
        "user0", "user1", "user2", "user3", "user4", "user999"]
    (count,) = console.events(int(EventCode.EVENTS_AGGREGATED))
    assert count["src_host"] == "192.0.2.7" and count["dst_port"] == 2222
    assert count["logdata"]["CODE"] == 4002 and count["logdata"]["COUNT"] == 295
    assert count["logdata"]["SECONDS"] >= 1


def test_a_stopping_agent_reports_the_counts_it_holds(tmp_path, console):
    agent = make_agent(tmp_path, console, flood_burst=1)
    socks = agent.open_sockets()
    sink = SocketSink(agent.cfg.event_socket("ssh"))
    for i in range(4):
        sink.emit(login(i, src="192.0.2.9"))
    agent.close_sockets(socks)  # what serve() does as it stops: drain, then flush the counts
    agent.store(agent.flood.flush())
    while agent.send_one():
        pass
    assert [e["logdata"]["USERNAME"] for e in console.events(4002)] == ["user0"]
    assert console.events(int(EventCode.EVENTS_AGGREGATED))[0]["logdata"]["COUNT"] == 3


def test_full_disk_is_counted_and_reported_in_the_heartbeat(tmp_path, console):
    agent = make_agent(tmp_path, console)
    db = agent.queue.db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    limit = agent.cfg.limits.event_datagram_bytes
    for i in range(200):
        event = login(i, password=NOISE, src=f"127.0.{i // 200}.{i % 200 + 1}")
        agent.accept_datagram("ssh", encode_datagram(event), limit)
    assert agent.store_failed > 0
    db.execute("PRAGMA max_page_count = 1000000")
    agent.send_heartbeat()
    console.flush()
    (event,) = console.events(int(EventCode.DEVICE_UNHEALTHY))
    assert event["logdata"]["STORE_FAILED"] == agent.store_failed
    assert "store failed" in event["logdata"]["REASONS"]


def test_restored_data_partition_never_reuses_a_nonce_and_is_reported(tmp_path, console):
    agent = make_agent(tmp_path, console)
    agent.send_heartbeat()
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path / "data", backup)  # key and counter epoch as of now
    for _ in range(3):  # the device lives on: restarts, new epochs
        agent.queue.close()
        agent = make_agent(tmp_path, console)
        agent.send_heartbeat()
    agent.queue.close()
    shutil.rmtree(tmp_path / "data")
    shutil.copytree(backup, tmp_path / "data")  # restored from the backup
    agent = make_agent(tmp_path, console)
    agent.queue.put(login(1))
    agent.send_heartbeat()  # the first frame is answered Stale; the agent jumps and resends
    assert agent.send_one()
    assert agent.beacon.stale_jumps == 1
    assert users(console) == ["user1"]
    assert console.nonces_unique(), "no (session, counter) pair was ever sent twice"
    (cloned,) = console.events(int(EventCode.DEVICE_CLONED))
    assert cloned["logdata"]["CLASHES"] == 1


def test_cloned_card_streams_interleave_are_delivered_and_reported(tmp_path, console):
    first = make_agent(tmp_path, console)
    first.queue.close()
    shutil.copytree(tmp_path / "data", tmp_path / "clone")
    first = make_agent(tmp_path, console)
    second = make_agent(tmp_path, console, data="clone")
    for i in range(6):
        agent = (first, second)[i % 2]
        agent.queue.put(login(i))
        assert agent.send_one()
    assert users(console) == [f"user{i}" for i in range(6)]
    assert console.events(int(EventCode.DEVICE_CLONED))
    assert console.nonces_unique()


def test_replayed_old_frame_is_not_mistaken_for_a_clone(tmp_path, console):
    agent = make_agent(tmp_path, console)
    recorded: list[str] = []
    real: Callable[[str], bytes] = console.exchange

    def recorder(qname: str) -> bytes:
        recorded.append(qname)
        return real(qname)

    agent.beacon.transport.exchange = recorder  # type: ignore[method-assign]
    agent.send_heartbeat()
    for _ in range(3):
        agent.send_heartbeat()
    console.core._cache.clear()  # answers evicted: the console must decide afresh
    with pytest.raises(Exception, match="nodata"):
        real(recorded[0])
    assert not console.events(int(EventCode.DEVICE_CLONED))
    assert console.core.stats["duplicate"] == 1


def test_heartbeat_reports_a_dead_receiver_and_the_watchdog_stops(tmp_path, console):
    agent = make_agent(tmp_path, console)
    notes: list[str] = []
    agent.watchdog.notify = notes.append
    agent.watchdog.period = 1.0
    agent.receive_loop = lambda socks: None  # type: ignore[method-assign]
    server = threading.Thread(target=agent.serve)
    server.start()
    deadline = time.time() + 10
    while not any(n.startswith("STATUS=stalled") for n in notes) and time.time() < deadline:
        time.sleep(0.05)
    agent.send_heartbeat()
    agent.stop.set()
    server.join(10)
    assert notes[0].startswith("READY=1")
    assert any("receiver" in n for n in notes if n.startswith("STATUS=stalled"))
    console.flush()
    (event,) = console.events(int(EventCode.DEVICE_UNHEALTHY))
    assert "event receiver down" in event["logdata"]["REASONS"]


UNIT = Path(__file__).resolve().parents[2] / "overlay/usr/lib/systemd/system/coalmine-agent.service"


def record_exit(run_dir: Path, **env: str) -> None:
    """Run the agent unit's own ``ExecStopPost=`` line as systemd would: ``$$`` is a dollar for
    the shell, the variables are systemd's, the path moved into the test's run directory."""
    (line,) = [x for x in UNIT.read_text().splitlines() if x.startswith("ExecStopPost=")]
    argv = shlex.split(line.removeprefix("ExecStopPost=").replace("$$", "$")
                       .replace("/run/coalmine", str(run_dir)))
    subprocess.run(argv, env={"PATH": "/usr/bin:/bin", **env}, check=True, timeout=10)


@pytest.mark.parametrize("result", ["watchdog", "exit-code"])
def test_a_restart_by_systemd_is_reported_at_the_next_start(tmp_path, console, result):
    agent = make_agent(tmp_path, console)
    agent.cfg.last_exit.parent.mkdir(parents=True)
    record_exit(tmp_path / "run", SERVICE_RESULT=result, EXIT_CODE="killed", EXIT_STATUS="ABRT")
    agent.report_last_exit()
    agent.report_last_exit()  # reported once: the record is gone
    while agent.send_one():
        pass
    (event,) = console.events(int(EventCode.AGENT_RESTARTED))
    assert event["logdata"] == {"RESULT": result, "EXIT_CODE": "killed", "EXIT_STATUS": "ABRT"}
    assert not agent.cfg.last_exit.exists()


def test_a_clean_stop_or_a_first_start_reports_no_restart(tmp_path, console):
    agent = make_agent(tmp_path, console)
    agent.report_last_exit()  # nothing recorded: the first start of a boot
    agent.cfg.last_exit.parent.mkdir(parents=True)
    record_exit(tmp_path / "run", SERVICE_RESULT="success", EXIT_CODE="exited", EXIT_STATUS="0")
    agent.report_last_exit()
    while agent.send_one():
        pass
    assert not console.events(int(EventCode.AGENT_RESTARTED))


def test_listeners_are_reported_at_start(tmp_path, console):
    agent = make_agent(tmp_path, console)
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        agent.check_listeners()
        agent.check_listeners()  # unchanged: no second event
        while agent.send_one():
            pass
    finally:
        listener.close()
    (event,) = console.events(int(EventCode.LISTENERS))
    assert str(port) in event["logdata"]["TCP"].split()
    (interfaces,) = console.events(int(EventCode.NETWORK_INTERFACES))
    assert "lo" not in interfaces["logdata"]["NAMES"].split()


def test_a_second_interface_is_reported_with_which_are_up(tmp_path):
    from firmware.agent.listeners import read_interfaces
    net = tmp_path / "net"
    for name, flags, mac in (("lo", "0x9", "00:00:00:00:00:00"),
                             ("eth0", "0x1003", "70:10:5c:0a:0b:0c"),
                             ("eth1", "0x1002", "<b>junk</b>")):
        (net / name).mkdir(parents=True)
        (net / name / "flags").write_text(flags + "\n")
        (net / name / "address").write_text(mac + "\n")
    addresses = {"eth0": "192.0.2.7"}.get  # not this machine's eth0
    assert read_interfaces(net, addresses) == {"NAMES": "eth0 eth1", "UP": "eth0",
                                               "MAC": "eth0=70:10:5c:0a:0b:0c",
                                               "IPV4": "eth0=192.0.2.7"}
    assert read_interfaces(tmp_path / "missing", addresses) == {"NAMES": "", "UP": "",
                                                                "MAC": "", "IPV4": ""}
    from firmware.agent.listeners import ipv4_address
    assert ipv4_address("lo") == "127.0.0.1" and ipv4_address("no-such-if0") is None


def test_full_disk_is_reported_as_a_full_disk(tmp_path):
    """Not as SQLite's "cannot rollback - no transaction is active" (it already rolled back)."""
    q = EventQueue(tmp_path / "q.db", max_events=10_000)
    q.db.execute(f"PRAGMA max_page_count = {q.db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StorageError) as info:
        for i in range(500):
            q.put(login(i, password=NOISE))
    assert "full" in info.value.message and "free disk space" in info.value.hint
    assert "rollback" not in info.value.message


def test_refusal_reasons_stay_bounded(tmp_path, console):
    agent = make_agent(tmp_path, console)
    for i in range(500):  # every datagram a different bad key: a different reason text
        bad = json.dumps({"c": 4002, "t": 1, "sp": 1, "dp": 1, "d": {f"bad{i}": 1}}).encode()
        agent.accept_datagram("ssh", bad, 8192)
    assert sum(agent.rejected.values()) == 500 and len(agent.rejected) <= 33
