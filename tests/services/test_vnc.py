"""The VNC honeypot against vncdotool's client (a VNC client library, as scripted intruders use),
nmap's service detection and hand-made RFB 3.3 and 3.7 handshakes, then attacker bytes.

Recorded responses are checked with pycryptodome's DES, not the service's own code, so a wrong
key derivation in the service cannot pass for a right one.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from Crypto.Cipher import DES

from firmware.protocol.catalogue import SECRET_KEYS, EventCode
from firmware.protocol.event import masked
from firmware.services.vnc import (
    COMMON_PASSWORDS,
    VNCDecodeError,
    VNCHoneypot,
    chosen_version,
    common_password,
    des_key,
    response,
)
from tests.services.conftest import MemorySink, Running, make_config
from tests.services.test_base import closed_within, connect, throw
from tests.services.test_listeners import run, tool


@pytest.fixture
def vnc(start):
    return start(VNCHoneypot, connection_timeout=3.0)


def vncdo(port: int, password: str) -> subprocess.CompletedProcess[bytes]:
    """vncdotool's command line: log in, then press a key (never reached)."""
    return run([str(Path(sys.executable).parent / "vncdo"), "-s", f"127.0.0.1::{port}",
                "-p", password, "key", "a"])


def answer_of(password: str, challenge: bytes) -> bytes:
    """RFC 6143 7.2.2 done independently: the key's bytes bit-reversed, DES in ECB mode."""
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
    return DES.new(key, DES.MODE_ECB).encrypt(challenge)


def attempts(r: Running) -> list[dict[str, object]]:
    return [dict(e.data) for e in r.sink.events if e.code == EventCode.VNC_LOGIN_ATTEMPT]


# --- the real client -----------------------------------------------------------------------------


def test_vncdotool_with_a_common_password_is_recorded_by_name(vnc):
    out = vncdo(vnc.port, "raspberry")
    assert out.returncode != 0 and b"Authentication failed" in out.stderr
    ev = vnc.wait_for(lambda e: e.code == EventCode.VNC_LOGIN_ATTEMPT)
    challenge = bytes.fromhex(str(ev.data["VNC_SERVER_CHALLENGE"]))
    assert len(challenge) == 16 and ev.data["VERSION"] == "3.8"
    assert bytes.fromhex(str(ev.data["VNC_CLIENT_RESPONSE"])) == answer_of("raspberry", challenge)
    assert ev.data["VNC_PASSWORD"] == "raspberry"
    assert (ev.src_host, ev.dst_host, ev.dst_port) == ("127.0.0.1", "127.0.0.1", vnc.port)
    assert {"VNC_CLIENT_RESPONSE", "VNC_PASSWORD"} <= SECRET_KEYS
    shown = masked(ev.data)
    assert shown["VNC_CLIENT_RESPONSE"] == shown["VNC_PASSWORD"] == "********"


def test_an_uncommon_password_leaves_a_response_only_that_password_gives(vnc):
    out = vncdo(vnc.port, "Zebra-77!")
    assert out.returncode != 0
    ev = vnc.wait_for(lambda e: e.code == EventCode.VNC_LOGIN_ATTEMPT)
    assert "VNC_PASSWORD" not in ev.data
    challenge = bytes.fromhex(str(ev.data["VNC_SERVER_CHALLENGE"]))
    got = bytes.fromhex(str(ev.data["VNC_CLIENT_RESPONSE"]))
    assert got == answer_of("Zebra-77", challenge)  # VNC reads 8 characters
    assert got != answer_of("Zebra-78", challenge)


def test_each_connection_gets_a_fresh_challenge(vnc):
    for _ in range(3):
        vncdo(vnc.port, "secret")
    vnc.wait_for(lambda e: len(attempts(vnc)) == 3)
    assert len({a["VNC_SERVER_CHALLENGE"] for a in attempts(vnc)}) == 3
    assert all(a["VNC_PASSWORD"] == "secret" for a in attempts(vnc))


def test_nmap_names_it_vnc_and_the_banner_is_configurable(tmp_path):
    cfg = make_config(tmp_path)
    for banner, version in (("", "VNC (protocol 3.8)"), ("RFB 003.007", "VNC (protocol 3.7)")):
        listeners = {**cfg.listeners,
                     "vnc": dataclasses.replace(cfg.listeners["vnc"], banner=banner)}
        sink = MemorySink()
        r = Running(VNCHoneypot(dataclasses.replace(cfg, listeners=listeners), [sink]), sink)
        try:
            out = run([tool("nmap"), "-sV", "-Pn", "-n", "-p", str(r.port), "127.0.0.1"])
            assert f"{r.port}/tcp open  vnc     {version}".encode() in out.stdout, out.stdout
        finally:
            r.stop()


# --- RFB versions by hand ------------------------------------------------------------------------


def handshake(port: int, version: bytes) -> tuple[socket.socket, bytes]:
    """Up to the challenge: (the connection, the challenge)."""
    s = connect(port)
    assert s.recv(12, socket.MSG_WAITALL) == b"RFB 003.008\n"
    s.sendall(version)
    if version == b"RFB 003.003\n":
        assert s.recv(4, socket.MSG_WAITALL) == b"\0\0\0\2"
    else:
        assert s.recv(2, socket.MSG_WAITALL) == b"\1\2"
        s.sendall(b"\2")
    return s, s.recv(16, socket.MSG_WAITALL)


@pytest.mark.parametrize(("line", "result", "version"), [
    (b"RFB 003.003\n", b"\0\0\0\1", "3.3"),
    (b"RFB 003.007\n", b"\0\0\0\1", "3.7"),
    (b"RFB 003.008\n", b"\0\0\0\1\0\0\0\x15Authentication failed", "3.8"),
    (b"RFB 003.889\n", b"\0\0\0\1\0\0\0\x15Authentication failed", "3.8"),  # Apple's
])
def test_each_protocol_version_gets_its_own_failure(vnc, line, result, version):
    s, challenge = handshake(vnc.port, line)
    with s:
        s.sendall(answer_of("admin", challenge))
        assert s.recv(64, socket.MSG_WAITALL) == result
        assert closed_within(s, 2) < 2
    ev = vnc.wait_for(lambda e: e.code == EventCode.VNC_LOGIN_ATTEMPT)
    assert ev.data["VERSION"] == version and ev.data["VNC_PASSWORD"] == "admin"


# --- attacker bytes ------------------------------------------------------------------------------


def test_attacker_bytes_never_stop_it(start):
    r = start(VNCHoneypot, connection_timeout=2.0, connection_bytes=32768)
    rng = random.Random("vnc")
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(20)]
    junk += [b"RFB 003.008\n"[:cut] for cut in (1, 5, 11)]
    junk += [b"RFB 003.008\n\x01", b"RFB 003.008\n\x00", b"RFB 003.008\n\x02" + b"\xff" * 7,
             b"RFB 003.008\n\x02" + b"\xc3(\x1b[2J\xe2\x80\xae" * 4 + b"A" * 20000,
             b"RFB 00x.008\n", b"RFB 999.999\n\x02", b"GET / HTTP/1.1\r\n\r\n", b"\r\n" * 5000]
    throw(r.port, junk)
    slow = connect(r.port)  # a client that dribbles is cut at the time limit, others go on
    slow.sendall(b"RFB")
    s, challenge = handshake(r.port, b"RFB 003.008\n")
    with s:
        s.sendall(answer_of("letmein", challenge))
        assert s.recv(8, socket.MSG_WAITALL).startswith(b"\0\0\0\1")
    ev = r.wait_for(lambda e: e.data.get("VNC_PASSWORD") == "letmein")
    assert ev.data["VNC_SERVER_CHALLENGE"] == challenge.hex()
    assert closed_within(slow, 5) <= 5
    slow.close()
    # the one junk answer that came whole (the flood's first 16 bytes) is an attempt, nothing
    # else is, and all of it is text a console can show as it is
    assert len(attempts(r)) == 2
    for a in attempts(r):
        assert all(isinstance(v, str) and v.isprintable() for v in a.values()), a


# --- the pure parts ------------------------------------------------------------------------------


def test_key_derivation_and_the_common_list():
    assert des_key("a") == b"\x86" + b"\0" * 7  # 0x61 bit-reversed
    assert des_key("password-long") == des_key("password")
    challenge = bytes(range(16))
    for password in ("", "admin", "12345678", "P@ssw0rd"):
        assert response(password, challenge) == answer_of(password, challenge)
        assert common_password(challenge, answer_of(password, challenge)) == password
    assert common_password(challenge, answer_of("not-common", challenge)) is None
    assert len(COMMON_PASSWORDS) == len(set(COMMON_PASSWORDS))


def test_versions_as_rfc_6143_reads_them():
    assert chosen_version(b"RFB 003.003\n") == (3, 3)
    assert chosen_version(b"RFB 003.005\n") == (3, 3)  # an unknown minor: 3.3
    assert chosen_version(b"RFB 003.007\n") == (3, 7)
    assert chosen_version(b"RFB 004.001\n") == (3, 8)
    for bad in (b"RFB 003.008", b"RFB 3.8\n\n\n\n\n", b"rfb 003.008\n", b"RFB 003.008\r"):
        with pytest.raises(VNCDecodeError):
            chosen_version(bad)
