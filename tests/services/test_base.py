"""The service base: registry, event fields from the real socket, inert attacker strings, limits.

A tiny echo service (not registered) stands in for a real one, so each guarantee of the base is
tested on its own, with real sockets on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.eventpath import encode_datagram
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event, from_compact
from firmware.protocol.text import inert
from firmware.services import guard
from firmware.services.base import REGISTRY, Service, address, clean_data, discover, fit
from firmware.services.guard import MAX_UNSENT, SourceCounter
from firmware.shared.sources import source_key


class Echo(Service, register=False):
    name = "echo"
    default_port = 7
    event_codes = frozenset({EventCode.SSH_NEW_CONNECTION})

    async def start(self) -> None:
        await self.listen(lambda: _EchoProtocol(self), "127.0.0.1", 0)


class _EchoProtocol(asyncio.Protocol):
    def __init__(self, service: Echo) -> None:
        self.service = service

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        # the "attacker" tries to smuggle identity fields in through the data
        self.service.emit(EventCode.SSH_NEW_CONNECTION,
                          transport, {"src_host": "6.6.6.6", "username": "x\x1b[2Jy"})

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


class BrokenSink:
    def emit(self, event: Event) -> None:
        raise OSError("disk on fire")


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def closed_within(s: socket.socket, seconds: float) -> float:
    """Seconds until the peer closes ``s`` (fails if it stays open longer than ``seconds``)."""
    t0 = time.monotonic()
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"connection still open after {seconds}s") from None
    return time.monotonic() - t0


def throw(port: int, junk: list[bytes], seconds: float = 5) -> None:
    """Each of ``junk`` on a connection of its own, then end it; the service closes its side
    (it may cut a flood off mid-send: that is the point)."""
    for data in junk:
        with connect(port) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                closed_within(s, seconds)
            except OSError:
                pass


def test_registry_is_filled_by_subclassing():
    assert discover()["ssh"].default_port == 22
    assert "echo" not in REGISTRY
    with pytest.raises(TypeError):
        class Nameless(Service):  # missing name/default_port/event_codes
            pass
    with pytest.raises(TypeError):
        class Twice(Service):
            name = "ssh"
            default_port = 1
            event_codes = frozenset()


def test_fields_come_from_the_socket_and_a_broken_sink_is_skipped(start):
    r = start(Echo, extra_sinks=(BrokenSink(),))
    with connect(r.port) as s:
        ev = r.wait_for(lambda e: True)
        assert (ev.src_host, ev.src_port) == s.getsockname()
        assert (ev.dst_host, ev.dst_port) == ("127.0.0.1", r.port)
        assert ev.data["SRC_HOST"] == "6.6.6.6"  # just data, never the identity field
        assert ev.data["USERNAME"] == "x\\x1b[2Jy"
        s.sendall(b"still serving")
        assert s.recv(100) == b"still serving"


def test_undeclared_code_is_a_bug(tmp_path):
    from tests.services.conftest import make_config
    svc = Echo(make_config(tmp_path), [])
    transport = type("T", (), {"get_extra_info": lambda self, n, d=None: None})()
    with pytest.raises(ValueError, match="undeclared"):
        svc.emit(EventCode.SSH_LOGIN_ATTEMPT, transport, {})
    with pytest.raises(ValueError, match="key"):
        svc.emit(EventCode.SSH_NEW_CONNECTION, transport, {"bad key": "x"})
    ev = svc.emit(EventCode.SSH_NEW_CONNECTION, transport, {"k": 1})
    assert (ev.src_host, ev.src_port, ev.dst_host, ev.dst_port) == ("", -1, "", -1)


def test_per_source_connection_limit(start):
    r = start(Echo, connections_per_source=3)
    keep = [connect(r.port) for _ in range(3)]
    r.wait_for(lambda e: len(r.sink.events) >= 3)
    extra = connect(r.port)
    assert closed_within(extra, 2) < 2
    for s in keep:  # the first three are still served
        s.sendall(b"ping")
        assert s.recv(10) == b"ping"
    keep[0].close()
    time.sleep(0.2)
    with connect(r.port) as again:  # a slot freed up
        again.sendall(b"pong")
        assert again.recv(10) == b"pong"
    for s in keep[1:]:
        s.close()
    assert len(r.sink.events) == 4  # the refused connection never reached the service


def test_byte_and_time_limits(start):
    r = start(Echo, connection_bytes=1000, connection_timeout=1.0)
    with connect(r.port) as big, connect(r.port) as idle:
        big.sendall(b"x" * 999)
        big.settimeout(2)
        got = b""
        while len(got) < 999:
            got += big.recv(4096)
        big.sendall(b"yy")
        assert closed_within(big, 0.9) < 0.9  # cut at the byte limit, before the time limit
        assert 0.8 < closed_within(idle, 3) < 2.0


def test_address_normalises():
    assert address(("::ffff:10.0.0.1", 22, 0, 0)) == ("10.0.0.1", 22)
    assert address(("fe80::1%eth0", 22, 0, 2)) == ("fe80::1", 22)
    assert address(None) == ("", -1)
    assert address("/run/x.sock") == ("", -1)


def test_attacker_strings_are_bounded_and_inert():
    assert inert(b"\xff\xfeabc") == "\ufffd\ufffdabc"
    assert inert("a\x00b\x7f\u202e\n") == "a\\x00b\\x7f\\u202e\\x0a"
    huge = inert("A" * 10**6)
    assert len(huge) == 1024 and huge.endswith("\u2026")
    assert len(inert(b"\xff" * 10**6)) == 1024


@given(st.one_of(st.binary(max_size=3000), st.text(max_size=3000)))
def test_any_input_is_inert(value):
    out = inert(value)
    assert len(out) <= 1024
    assert all(unicodedata.category(c) not in {"Cc", "Cf", "Cs", "Zl", "Zp"} for c in out)


@given(st.lists(st.text(max_size=2000), min_size=1, max_size=8))
def test_events_always_fit_a_datagram(values):
    data = clean_data({f"K{i}": v for i, v in enumerate(values)})
    ev = fit(Event(code=EventCode.SSH_LOGIN_ATTEMPT, time=1.0, data=data), 2048)
    wire = encode_datagram(ev)
    assert len(wire) <= 2048
    assert from_compact(__import__("json").loads(wire)) == ev


def test_command_line_lists_services_and_names_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    from firmware.services.__main__ import main

    assert main(["--list"]) == 0
    assert "ssh\tdefault port 22" in capsys.readouterr().out
    assert main(["telnetz"]) == 64
    err = capsys.readouterr().err
    assert "error: unknown service 'telnetz'" in err and "hint: known services: " in err
    assert main([]) == 64
    assert "--list" in capsys.readouterr().err


def test_a_client_that_never_reads_is_not_read_and_its_replies_stay_bounded(start):
    r = start(Echo, connection_bytes=1 << 26, connection_timeout=3.0)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", r.port))
    stuck.setblocking(False)
    sent, cut = 0, False
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # push as much as the server will take, read nothing
        try:
            sent += stuck.send(b"z" * 65536)
        except BlockingIOError:
            time.sleep(0.01)
        except (ConnectionResetError, BrokenPipeError):
            # one read of up to 256 KiB echoed at once can pass MAX_UNSENT: the guard cuts
            cut = True
            break
    unsent = [g.transport.get_write_buffer_size() for g in r.service.guards.values()
              if g.transport is not None]
    assert cut or (unsent and max(unsent) <= MAX_UNSENT), unsent
    assert sent < 32 << 20, "the server stopped reading from a client that does not read"
    with connect(r.port) as other:  # everyone else is still served
        other.sendall(b"ping")
        assert other.recv(10) == b"ping"
    if not cut:
        stuck.setblocking(True)
        assert closed_within(stuck, 6) < 6  # and the stuck one ends at the time limit
    stuck.close()


def test_sources_are_addresses_or_ipv6_slash_64s_and_all_connections_are_capped():
    assert source_key("10.0.0.7") == "10.0.0.7"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2::ffff") \
        == "2001:db8:1:2::/64"
    assert source_key("::ffff:10.0.0.7") == "10.0.0.7" and source_key("") == ""
    counter = SourceCounter(limit=2, total=3)
    assert counter.acquire("a") and counter.acquire("a") and not counter.acquire("a")
    assert counter.acquire("b") and not counter.acquire("c"), "three in all"
    counter.release("a")
    assert counter.acquire("c") and counter.count == 3


def test_a_service_process_loads_only_its_own_libraries() -> None:
    """Each honeypot is a process of its own; importing every service module would give each
    asyncssh, cryptography and scapy (41 MiB instead of 25 MiB resident for FTP)."""
    check = ("import sys; from firmware.services.base import load; load(sys.argv[1]); "
             "print(' '.join(m for m in ('asyncssh', 'cryptography', 'scapy') "
             "if m in sys.modules))")
    heavy = {name: subprocess.run([sys.executable, "-c", check, name], capture_output=True,
                                  text=True, check=True,
                                  cwd=Path(__file__).resolve().parents[2]).stdout.split()
             for name in ("ftp", "telnet", "redis", "http", "vnc", "rdp", "smb", "ssh")}
    assert heavy == {"ftp": [], "telnet": [], "redis": [], "http": [], "vnc": [], "rdp": [],
                     "smb": ["cryptography"], "ssh": ["asyncssh", "cryptography"]}


def from_address(port: int, host: str) -> socket.socket:
    s = socket.socket()
    s.settimeout(5)
    s.bind((host, 0))
    s.connect(("127.0.0.1", port))
    return s


def test_a_full_table_makes_room_for_a_newcomer(start, monkeypatch):
    """A flood that takes every connection, from one address or from many, cannot keep the
    next client out: the busiest source's oldest connection goes, else the oldest of all."""
    r = start(Echo, connections_per_source=16, connections_total=4)
    flood = [from_address(r.port, "127.0.0.2") for _ in range(4)]
    r.wait_for(lambda e: len(r.sink.events) >= 4)
    with from_address(r.port, "127.0.0.9") as newcomer:
        newcomer.sendall(b"hi")
        assert newcomer.recv(10) == b"hi", "served although the table was full"
    assert closed_within(flood[0], 2) < 2, "the busiest source's oldest went"
    for s in flood[1:]:
        s.sendall(b"x")
        assert s.recv(10) == b"x"
        s.close()
    time.sleep(0.2)
    monkeypatch.setattr(guard, "MIN_AGE", 0.5)
    many = [from_address(r.port, f"127.0.0.{10 + i}") for i in range(4)]  # one each
    r.wait_for(lambda e: len(r.sink.events) >= 9)
    with from_address(r.port, "127.0.0.30") as early:  # all young: none is cut for it
        assert closed_within(early, 2) < 2
    time.sleep(0.6)
    with from_address(r.port, "127.0.0.31") as newcomer:
        newcomer.sendall(b"hi")
        assert newcomer.recv(10) == b"hi"
    assert closed_within(many[0], 2) < 2, "then the oldest of all, once it is old enough"
    for s in many[1:]:
        s.sendall(b"x")
        assert s.recv(10) == b"x"
    for s in many:
        s.close()
