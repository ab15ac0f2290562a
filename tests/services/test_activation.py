"""Socket activation: on the device systemd holds port 22 and passes the listener to the honeypot.

The service must take the socket systemd passed (``LISTEN_FDS``/``LISTEN_PID``, sd_listen_fds(3))
instead of binding the configured port, which it could not (no CAP_NET_BIND_SERVICE, no network
of its own); without those variables it binds as before (the lab, the tests).  The end-to-end
case runs the real command line under ``systemd-socket-activate`` with the configured port held
by someone else, so the only way the login attempt can be recorded is through the passed socket.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.eventpath import decode_datagram
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.shared.activation import passed_fds, pick_fd
from tests.services.test_ssh import PASSWORD_ONLY, ssh

REPO = Path(__file__).resolve().parents[2]


def test_sockets_are_taken_only_when_meant_for_this_process() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "other:ssh"}
    assert passed_fds(env, 42) == [(3, "other"), (4, "ssh")]
    assert passed_fds(env, 43) == [], "inherited from a parent: not ours"
    assert passed_fds({"LISTEN_FDS": "1"}, 42) == []
    assert passed_fds({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, 42) == []
    assert passed_fds({"LISTEN_PID": "42", "LISTEN_FDS": "1"}, 42) == [(3, "")]
    assert pick_fd(passed_fds(env, 42), "ssh") == 4
    assert pick_fd([(3, "")], "ssh") == 3, "a single unnamed socket is the service's"
    assert pick_fd([(3, "a"), (4, "b")], "ssh") is None
    assert pick_fd([], "ssh") is None


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="needs systemd-socket-activate (package systemd)")
def test_the_service_uses_the_socket_systemd_passes(tmp_path: Path) -> None:
    busy = socket.socket()  # the configured port is taken: binding it would fail
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events = tmp_path / "run" / "ssh" / "events.sock"
    events.parent.mkdir(parents=True)
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    agent.bind(str(events))
    agent.settimeout(0.5)
    key = tmp_path / "ssh" / "host_key"
    conf = tmp_path / "device.toml"
    conf.write_text(f'[device]\nrun_dir = "{tmp_path / "run"}"\n[services.ssh]\n'
                    f'host = "127.0.0.1"\nport = {busy.getsockname()[1]}\nhost_key = "{key}"\n')
    service = [sys.executable, "-m", "firmware.services", "ssh", "--config", str(conf)]
    subprocess.run([*service, "--make-host-key"], cwd=REPO, check=True, capture_output=True)
    log = (tmp_path / "ssh.log").open("wb")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                             "--fdname=ssh", "-E", f"PYTHONPATH={REPO}", *service],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)  # systemd-socket-activate listens, then starts the service on a connection
        assert ssh(port, "eve", *PASSWORD_ONLY, password="via-systemd") == 5
        seen: list[Event] = []
        deadline = time.monotonic() + 20
        while not any(e.code == EventCode.SSH_LOGIN_ATTEMPT for e in seen):
            assert time.monotonic() < deadline, (tmp_path / "ssh.log").read_text()
            try:
                seen.append(decode_datagram(agent.recv(65536), 65536))
            except TimeoutError:
                continue
        attempt = next(e for e in seen if e.code == EventCode.SSH_LOGIN_ATTEMPT)
        assert (attempt.data["USERNAME"], attempt.data["PASSWORD"]) == ("eve", "via-systemd")
        assert attempt.dst_port == port
        assert "socket from systemd" in (tmp_path / "ssh.log").read_text()
    finally:
        proc.terminate()
        proc.wait(10)
        agent.close()
        busy.close()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="needs systemd-socket-activate (package systemd)")
def test_a_socket_activated_service_exits_when_nobody_is_connected(tmp_path: Path) -> None:
    """An idle device holds no honeypot process: once nobody has been connected for
    ``limits.idle_exit`` the service exits 0 (systemd would start it at the next connection);
    while a client is connected it stays."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "device.toml"
    conf.write_text(f'[device]\nrun_dir = "{tmp_path / "run"}"\n[limits]\nidle_exit = 2.0\n'
                    '[services.ftp]\nenabled = true\nhost = "127.0.0.1"\nport = 1\n')
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                             "--fdname=ftp", "-E", f"PYTHONPATH={REPO}", sys.executable, "-m",
                             "firmware.services", "ftp", "--config", str(conf)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            assert client.recv(100).startswith(b"220")
            time.sleep(3.5)  # longer than idle_exit, but someone is connected
            assert proc.poll() is None, "it stays while a client is connected"
            client.sendall(b"USER x\r\n")
            assert client.recv(100).startswith(b"331")
        closed = time.monotonic()
        assert proc.wait(15) == 0
        assert time.monotonic() - closed >= 1.5
        assert proc.stdout is not None
        assert b"nobody connected for" in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait(10)
