"""Socket activation: `console serve` takes a UDP and a TCP socket from systemd (LISTEN_FDS,
LISTEN_PID) instead of binding, so port 53 needs neither root nor a capability.

The test plays systemd: it binds the two sockets itself, hands them to the exec'd console as
fds 3 and 4 with LISTEN_PID naming that very process, and queries it over UDP and TCP."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from console.server import _inherit, bind_or_inherit
from firmware.shared.errors import EnvironmentFault, UsageError
from scripts.lab import free_port
from tests.console.fakes import SOA, TXT, query
from tests.console.test_server import tcp_ask, udp_ask

ROOT = Path(__file__).resolve().parents[2]
# bash, not sh: dash only redirects single-digit descriptors
AS_SYSTEMD = 'LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" -m console serve --state "$1" ' \
    '--listen systemd 3<&"$2" 4<&"$3"'


@pytest.fixture
def state(tmp_path: Path) -> Path:
    st = tmp_path / "state"
    subprocess.run([sys.executable, "-m", "console", "init", "--state", str(st), "--zone",
                    "c.test"], cwd=ROOT, check=True, capture_output=True, timeout=60)
    return st


def start_activated(state: Path, first: socket.socket, second: socket.socket
                    ) -> subprocess.Popen[str]:
    """Exec the console with ``first`` as fd 3 and ``second`` as fd 4, as systemd does."""
    fds = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 10) for s in (first, second)]
    try:
        return subprocess.Popen(
            ["bash", "-c", AS_SYSTEMD, sys.executable, str(state), *map(str, fds)],
            pass_fds=fds, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        for fd in fds:
            os.close(fd)
        first.close()
        second.close()  # from here on only the console holds them


@pytest.fixture
def prebound() -> Iterator[tuple[int, socket.socket, socket.socket]]:
    port = free_port()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp.bind(("127.0.0.1", port))
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(16)
    yield port, udp, tcp
    udp.close()
    tcp.close()


def test_serve_answers_on_sockets_passed_by_systemd(
    state: Path, prebound: tuple[int, socket.socket, socket.socket]
) -> None:
    port, udp, tcp = prebound
    proc = start_activated(state, udp, tcp)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert f"on 127.0.0.1:{port} " in line, line + proc.stderr.read()
        addr = ("127.0.0.1", port)
        for wire in (udp_ask(addr, query("C.test", SOA, qid=11)),
                     tcp_ask(addr, query("C.test", SOA, qid=11))[0]):
            msg = dns.message.from_wire(wire)
            assert msg.id == 11 and msg.rcode() == dns.rcode.NOERROR
            assert msg.answer[0].rdtype == dns.rdatatype.SOA
        chaos = dns.message.from_wire(udp_ask(addr, query("version.bind", TXT, qclass=3)))
        assert chaos.rcode() == dns.rcode.REFUSED
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "state flushed" in out


def test_two_datagram_sockets_are_refused_with_a_hint(state: Path) -> None:
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first.bind(("127.0.0.1", 0))
    second.bind(("127.0.0.1", 0))
    proc = start_activated(state, first, second)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 69, err
    assert "ListenDatagram= and one ListenStream=" in err


def test_listen_systemd_without_sockets_is_a_usage_error(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.delenv("LISTEN_PID", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    with pytest.raises(UsageError, match="no sockets were passed"):
        bind_or_inherit("systemd")


def test_sockets_meant_for_another_process_are_ignored(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    udp, tcp = bind_or_inherit("127.0.0.1:0")  # bound, not inherited
    with udp, tcp:
        assert udp.getsockname()[1] == tcp.getsockname()[1] != 0
    assert "LISTEN_PID" not in os.environ and "LISTEN_FDS" not in os.environ


def test_a_wrong_number_of_sockets_is_refused() -> None:
    with pytest.raises(EnvironmentFault, match="passed 1 sockets, expected 2"):
        _inherit([3])
