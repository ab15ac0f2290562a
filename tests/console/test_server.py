"""The real server on loopback (ephemeral ports) around a fake core: UDP, TCP, group commit,
SERVFAIL instead of silence, limits per connection and per source, hostile bytes."""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import dns.message
import dns.rcode
import pytest

from console.config import ServerLimits
from console.handler import Responder
from console.server import Server, bind_or_inherit
from tests.console.fakes import TXT, A, FakeCore, padding, query

LIMITS = ServerLimits(tcp_connections=4, tcp_per_source=2, tcp_idle_timeout=1.0,
                      tcp_lifetime=2.0, flush_interval=0.1)
AT_ONCE = 0.5  # "closed at once": well before the idle timeout could have done it


@dataclass
class Served:
    core: FakeCore
    addr: tuple[str, int]
    ticks: list[float]


@contextlib.contextmanager
def serving(core: FakeCore, limits: ServerLimits = LIMITS) -> Iterator[Served]:
    ticks: list[float] = []
    responder = Responder(core, "c.test", "ns.c.test", "hostmaster.c.test")
    server = Server(responder, bind_or_inherit("127.0.0.1:0"), limits,
                    lambda: ticks.append(time.monotonic()), commit=core.commit)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(core, server.address, ticks)
    finally:
        if core.gate is not None:
            core.gate.set()
        server.stop()
        thread.join(5)
        assert not thread.is_alive()


@pytest.fixture
def served() -> Iterator[Served]:
    with serving(FakeCore()) as s:
        yield s


def udp_ask(addr: tuple[str, int], data: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, addr)
        return s.recv(65535)


def connect(addr: tuple[str, int], source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(addr, timeout=2.0, source_address=(source, 0))


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def tcp_ask(addr: tuple[str, int], *queries: bytes) -> list[bytes]:
    with connect(addr) as s:
        return ask_on(s, *queries)


def ask_on(s: socket.socket, *queries: bytes) -> list[bytes]:
    s.sendall(framed(*queries))
    return [recv_message(s) for _ in queries]


def recv_message(s: socket.socket) -> bytes:
    size = struct.unpack(">H", recv_exact(s, 2))[0]
    return recv_exact(s, size)


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def is_cut(s: socket.socket, within: float) -> bool:
    """True when the server closes ``s`` within ``within`` seconds."""
    s.settimeout(within)
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def txt(wire: bytes) -> bytes:
    msg = dns.message.from_wire(wire)
    assert msg.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(msg.rcode())
    return b"".join(msg.answer[0][0].strings)


def assert_servfail_for(wire: bytes, asked: bytes) -> None:
    msg = dns.message.from_wire(wire)
    assert msg.id == int.from_bytes(asked[:2], "big") and msg.rcode() == dns.rcode.SERVFAIL
    assert wire[12 : len(asked)] == asked[12:]  # the question, echoed byte for byte


def assert_serving(addr: tuple[str, int]) -> None:
    assert txt(udp_ask(addr, query("txt.c.test"))) == b"plain"
    assert txt(tcp_ask(addr, query("txt.c.test"))[0]) == b"plain"


# --- answers ------------------------------------------------------------------------------------


def test_udp_and_tcp_answers_and_pipelining(served: Served) -> None:
    assert txt(udp_ask(served.addr, query("ack.c.test", edns=1232))) == b"ack 1"
    first, second, probe = tcp_ask(served.addr, query("Txt.C.test"), query("Txt.C.test"),
                                   query("x.c.test", A))
    assert first == second and txt(first) == b"plain"
    assert dns.message.from_wire(probe).authority


def test_a_bug_in_the_core_gets_servfail_not_silence(served: Served) -> None:
    q = query("boom.c.test", TXT, qid=0x4242)
    assert_servfail_for(udp_ask(served.addr, q), q)
    assert_servfail_for(tcp_ask(served.addr, q)[0], q)
    sick = query("sick.c.test", qid=7)  # the core says it cannot answer (storage failed)
    assert_servfail_for(udp_ask(served.addr, sick), sick)
    assert_serving(served.addr)


# --- group commit -------------------------------------------------------------------------------


def test_one_commit_per_round_and_no_answer_before_it() -> None:
    core = FakeCore(gate=threading.Event())
    with serving(core) as served, connect(served.addr) as conn, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert txt(ask_on(conn, query("txt.c.test"))[0]) == b"plain"  # accepted; no commit
        assert core.commits == 0
        udp.sendto(query("ack.c.test", qid=0), served.addr)
        assert core.in_commit.wait(2)  # the server now sits in the first commit
        udp.settimeout(0.3)
        with pytest.raises(TimeoutError):
            udp.recv(512)  # nothing leaves before the commit returns
        for i in range(1, 101):  # a burst that queues up meanwhile, over UDP and TCP
            udp.sendto(query(f"ack{i}.c.test", qid=i), served.addr)
        conn.sendall(framed(*(query(f"ack-tcp{i}.c.test") for i in range(10))))
        time.sleep(0.2)
        core.gate.set()  # type: ignore[union-attr]
        udp.settimeout(2)
        answers = [udp.recv(512) for _ in range(101)] + [recv_message(conn) for _ in range(10)]
        for wire in answers:  # every acknowledgement was covered by a commit before it left
            assert int(txt(wire).split()[1]) <= core.committed
        assert core.committed == 111
        assert core.commits == 2  # the first query alone, then the whole burst of both kinds


def test_failed_commit_turns_only_acknowledgements_into_servfail() -> None:
    core = FakeCore(commit_ok=False)
    with serving(core) as served:
        ack, plain, probe = query("ack.c.test", qid=1), query("txt.c.test", qid=2), \
            query("x.c.test", A, qid=3)
        got = tcp_ask(served.addr, ack, plain, probe)  # one round, one failed commit
        assert_servfail_for(got[0], ack)
        assert txt(got[1]) == b"plain"
        assert dns.message.from_wire(got[2]).authority
        assert_servfail_for(udp_ask(served.addr, ack), ack)
        core.commit_raises = True  # a bug in commit counts as a failed commit
        assert_servfail_for(udp_ask(served.addr, ack), ack)
        assert_serving(served.addr)
        assert core.committed == 0 and core.commits == 3


# --- bounds -------------------------------------------------------------------------------------


def query_of_size(size: int) -> bytes:
    """A valid query under the zone, padded with an EDNS padding option to ``size`` bytes."""
    bare = query("txt.c.test", edns=1232)
    return query("txt.c.test", edns=1232, options=padding(size - len(bare)))


def test_datagrams_longer_than_any_query_are_dropped(served: Served) -> None:
    most = ServerLimits().max_query
    assert txt(udp_ask(served.addr, query_of_size(most))) == b"plain"
    for size in (most + 1, 1232, 9000):
        with pytest.raises(TimeoutError):
            udp_ask(served.addr, query_of_size(size), timeout=0.5)
    assert txt(tcp_ask(served.addr, query_of_size(most))[0]) == b"plain"
    with connect(served.addr) as s:  # the same bound holds over TCP
        s.sendall(framed(query_of_size(most + 1)))
        assert is_cut(s, AT_ONCE)
    assert_serving(served.addr)


def test_random_bytes_over_udp_and_tcp_never_stop_the_server(served: Served) -> None:
    rng = random.Random(7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(2000):
            s.sendto(rng.randbytes(rng.randrange(0, 600)), served.addr)
    for _ in range(30):
        with connect(served.addr) as s:
            s.sendall(rng.randbytes(rng.randrange(1, 3000)))
    for _ in range(4):  # valid length prefix, junk inside
        with contextlib.suppress(ConnectionError, TimeoutError):
            tcp_ask(served.addr, rng.randbytes(rng.randrange(12, 300)))
    time.sleep(0.2)
    assert_serving(served.addr)


def test_oversized_tcp_length_closes_only_that_connection(served: Served) -> None:
    with connect(served.addr) as s:
        s.sendall(struct.pack(">H", 60000) + bytes(100))
        assert is_cut(s, AT_ONCE)
    assert_serving(served.addr)


def test_one_source_cannot_take_every_connection(served: Served) -> None:
    mine = [connect(served.addr) for _ in range(LIMITS.tcp_per_source)]
    try:
        for s in mine:
            assert txt(ask_on(s, query("txt.c.test"))[0]) == b"plain"
        with connect(served.addr) as extra:
            assert is_cut(extra, AT_ONCE)  # over the per-source cap: closed at once
        with connect(served.addr, source="127.0.0.2") as other:
            assert txt(ask_on(other, query("txt.c.test"))[0]) == b"plain"
        mine.pop().close()  # a slot freed is a slot for the same source again
        deadline = time.monotonic() + 2
        while True:
            with connect(served.addr) as again, contextlib.suppress(OSError):  # cut: retry
                if txt(ask_on(again, query("txt.c.test"))[0]) == b"plain":
                    break
            assert time.monotonic() < deadline, "the closed connection's slot never came back"
            time.sleep(0.05)
    finally:
        for s in mine:
            s.close()


def test_global_cap_holds_and_idle_connections_are_cut(served: Served) -> None:
    sources = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"]
    held = [connect(served.addr, source) for source in sources]
    try:
        for s in held:
            assert txt(ask_on(s, query("txt.c.test"))[0]) == b"plain"
        with connect(served.addr, source="127.0.0.3") as extra:
            assert is_cut(extra, AT_ONCE)  # all LIMITS.tcp_connections slots are taken
        for s in held:
            assert is_cut(s, 3)  # cut after the idle timeout
    finally:
        for s in held:
            s.close()
    assert_serving(served.addr)


def test_a_connection_that_trickles_bytes_forever_is_cut_at_its_lifetime(
    served: Served,
) -> None:
    with connect(served.addr) as s:
        start = time.monotonic()
        s.sendall(struct.pack(">H", 500))  # announces a message, then sends it a byte at a time
        cut = False
        while not cut and time.monotonic() - start < 10:
            with contextlib.suppress(OSError):
                s.sendall(b"x")
            ready, _, _ = select.select([s], [], [], 0.2)  # well within the idle timeout
            cut = bool(ready) and is_cut(s, 0.1)
        elapsed = time.monotonic() - start
    assert cut
    assert LIMITS.tcp_lifetime - 0.1 <= elapsed <= LIMITS.tcp_lifetime + 2.0, elapsed
    assert_serving(served.addr)


def test_stop_runs_the_last_tick() -> None:
    with serving(FakeCore(), replace(LIMITS, flush_interval=60)) as served:
        assert_serving(served.addr)
        assert served.ticks == []
    assert len(served.ticks) == 1
