"""The real server on 127.0.0.1 (high/ephemeral ports): UDP, TCP, limits, hostile bytes."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import dns.message
import pytest

from console.config import ServerLimits
from console.server import Server
from firmware.protocol.messages import HeartbeatAck
from tests.console.conftest import Rig
from tests.console.device import TXT, scramble_case, txt_of, wire_query

LIMITS = ServerLimits(tcp_connections=4, tcp_idle_timeout=0.6, flush_interval=0.1)


@pytest.fixture
def served(rig: Rig) -> Iterator[tuple[Rig, tuple[str, int]]]:
    server = Server(rig.responder, "127.0.0.1", 0, LIMITS, rig.console.flush)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rig, server.address
    server.stop()
    thread.join(5)
    assert not thread.is_alive()


def udp_ask(addr: tuple[str, int], query: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, addr)
        return s.recv(65535)


def tcp_ask(addr: tuple[str, int], *queries: bytes) -> list[bytes]:
    with socket.create_connection(addr, timeout=2.0) as s:
        s.sendall(b"".join(struct.pack(">H", len(q)) + q for q in queries))
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


def assert_beacon_works(rig: Rig, addr: tuple[str, int], tcp: bool = False) -> None:
    header, labels = rig.device.heartbeat()
    query = wire_query(scramble_case(labels, random.Random()), TXT, edns=1232)
    out = tcp_ask(addr, query)[0] if tcp else udp_ask(addr, query)
    txt = txt_of(out)
    assert txt is not None and isinstance(rig.device.open(header, txt), HeartbeatAck)


def test_udp_and_tcp_beacons(served: tuple[Rig, tuple[str, int]]) -> None:
    rig, addr = served
    assert_beacon_works(rig, addr)
    assert_beacon_works(rig, addr, tcp=True)


def test_tcp_pipelined_and_duplicate_over_both_transports(
    served: tuple[Rig, tuple[str, int]]
) -> None:
    rig, addr = served
    _, labels = rig.device.heartbeat()
    query = wire_query(labels, TXT)
    over_tcp = tcp_ask(addr, query, query, wire_query(["x", "c", "test"], 1))
    assert over_tcp[0] == over_tcp[1] == udp_ask(addr, query)
    assert dns.message.from_wire(over_tcp[2]).authority


def test_random_bytes_over_udp_and_tcp_never_stop_the_server(
    served: tuple[Rig, tuple[str, int]]
) -> None:
    rig, addr = served
    rng = random.Random(7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(2000):
            s.sendto(rng.randbytes(rng.randrange(0, 600)), addr)
    for _ in range(30):
        with socket.create_connection(addr, timeout=2.0) as s:
            s.sendall(rng.randbytes(rng.randrange(1, 3000)))
    for _ in range(4):  # valid length prefix, junk inside
        junk = rng.randbytes(rng.randrange(12, 300))
        try:
            tcp_ask(addr, junk)
        except (ConnectionError, TimeoutError):
            pass
    time.sleep(0.2)
    assert_beacon_works(rig, addr)
    assert_beacon_works(rig, addr, tcp=True)


def test_oversized_tcp_message_closes_only_that_connection(
    served: tuple[Rig, tuple[str, int]]
) -> None:
    rig, addr = served
    with socket.create_connection(addr, timeout=2.0) as s:
        s.sendall(struct.pack(">H", 60000) + os.urandom(100))
        assert s.recv(10) == b""
    assert_beacon_works(rig, addr, tcp=True)


def test_idle_tcp_connection_is_cut_and_connection_limit_holds(
    served: tuple[Rig, tuple[str, int]]
) -> None:
    rig, addr = served
    idle = [socket.create_connection(addr, timeout=3.0) for _ in range(LIMITS.tcp_connections)]
    time.sleep(0.1)
    with socket.create_connection(addr, timeout=2.0) as extra:
        assert extra.recv(10) == b""  # over the limit: closed at once
    for s in idle:
        assert s.recv(10) == b""  # cut after the idle timeout
        s.close()
    assert_beacon_works(rig, addr, tcp=True)


def test_stop_flushes_state(rig: Rig) -> None:
    server = Server(rig.responder, "127.0.0.1", 0, replace(LIMITS, flush_interval=60),
                    rig.console.flush)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    assert_beacon_works(rig, server.address)
    server.stop()
    thread.join(5)
    assert rig.store.devices()[0].highest_counter == rig.device.seq | (1 << 24)
