"""The RDP honeypot against FreeRDP's client (NLA in auth-only mode, TLS alone, standard RDP
security), nmap's service detection, hand-made X.224 requests, then attacker bytes.

FreeRDP opens an X display before it connects even with ``/auth-only``, so it runs under
``xvfb-run``.  The recorded NTLMv2 response is checked against the password with pycryptodome's
MD4 and the standard library's HMAC, not the service's own code, so a response a defender could
not crack cannot pass.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import random
import socket
import ssl
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from Crypto.Hash import MD4
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from firmware.config import DeviceConfig
from firmware.protocol.catalogue import SECRET_KEYS, EventCode
from firmware.protocol.event import Event, masked
from firmware.services import tlscert
from firmware.services.rdp import RDPHoneypot, host_names
from firmware.services.rdpwire import (
    ConnectionRequest,
    RDPDecodeError,
    TSRequest,
    take_der,
    take_tpkt,
    ts_request,
)
from firmware.shared.errors import DecodeError
from tests.services.conftest import MemorySink, Running, make_config
from tests.services.test_base import closed_within, connect, throw
from tests.services.test_listeners import run, tool

HOST = "fileserver01"


def rdp_config(tmp_path: Path, **limits: object) -> DeviceConfig:
    cfg = make_config(tmp_path, connection_timeout=3.0, **limits)
    rdp = dataclasses.replace(cfg.listeners["rdp"], certificate=tmp_path / "rdp" / "tls.pem")
    return dataclasses.replace(cfg, node_name=HOST, listeners={**cfg.listeners, "rdp": rdp})


@pytest.fixture
def rdp(tmp_path: Path) -> Iterator[Running]:
    cfg = rdp_config(tmp_path)
    RDPHoneypot.make_host_key(cfg)
    sink = MemorySink()
    running = Running(RDPHoneypot(cfg, [sink]), sink)
    yield running
    running.stop()


def xfreerdp(port: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run([tool("xvfb-run"), "-a", tool("xfreerdp"), "/auth-only", "/cert:ignore",
                f"/v:127.0.0.1:{port}", "/log-level:WARN", *args])


def connections(r: Running, count: int = 1) -> list[Event]:
    r.wait_for(lambda e: sum(x.code == EventCode.RDP_CONNECTION for x in r.sink.events) >= count)
    return [e for e in r.sink.events if e.code == EventCode.RDP_CONNECTION]


def ntlmv2_matches(hashcat: str, password: str) -> bool:
    """MS-NLMP 3.3.2 done independently on hashcat's -m 5600 line."""
    user, _, domain, server_challenge, proof, blob = hashcat.split(":")
    nt_hash = MD4.new(password.encode("utf-16-le")).digest()
    key = hmac.new(nt_hash, (user.upper() + domain).encode("utf-16-le"), hashlib.md5).digest()
    got = hmac.new(key, bytes.fromhex(server_challenge + blob), hashlib.md5).hexdigest()
    return hmac.compare_digest(got, proof)


# --- FreeRDP -------------------------------------------------------------------------------------


def test_freerdp_with_nla_gives_its_identity_and_a_response_that_cracks(rdp):
    out = xfreerdp(rdp.port, "/u:CORP\\alice", "/p:Winter2024!")
    assert out.returncode != 0 and b"STATUS_LOGON_FAILURE" in out.stdout + out.stderr, out
    ev, = connections(rdp)
    d = ev.data
    assert (d["USERNAME"], d["PROTOCOLS"], d["SELECTED"]) == ("alice", "ssl hybrid", "hybrid")
    assert (d["USER"], d["DOMAIN"], d["STAGE"], d["END"]) == ("alice", "CORP", "authenticate",
                                                              "logon failure")
    assert d["WORKSTATION"] and d["CREDSSP_VERSION"] == 6
    response = str(d["NTLMV2_RESPONSE"])
    assert response.startswith("alice::CORP:")
    assert ntlmv2_matches(response, "Winter2024!")
    assert not ntlmv2_matches(response, "Winter2025!")
    # the client's fingerprint, and the target information a Windows server named HOST gives
    assert len(str(d["JA3"])) == 32 and str(d["JA4"]).startswith("t1")
    assert HOST.upper().encode("utf-16-le").hex() in response
    assert (ev.src_host, ev.dst_port) == ("127.0.0.1", rdp.port)
    assert "NTLMV2_RESPONSE" in SECRET_KEYS and masked(d)["NTLMV2_RESPONSE"] == "********"


def test_each_connection_gets_a_fresh_challenge(rdp):
    for _ in range(2):
        xfreerdp(rdp.port, "/u:bob", "/p:hunter2")
    first, second = connections(rdp, 2)
    assert first.data["NTLMV2_RESPONSE"] != second.data["NTLMV2_RESPONSE"]
    for ev in (first, second):
        assert ev.data["DOMAIN"] == "" and ntlmv2_matches(str(ev.data["NTLMV2_RESPONSE"]),
                                                           "hunter2")


def test_a_client_that_chose_tls_alone_names_its_computer(rdp):
    out = xfreerdp(rdp.port, "/sec:tls", "/u:bob", "/p:x")
    assert out.returncode != 0
    ev, = connections(rdp)
    assert (ev.data["SELECTED"], ev.data["STAGE"], ev.data["END"]) == ("ssl", "mcs",
                                                                       "client data read")
    assert ev.data["USERNAME"] == "bob" and ev.data["CLIENT_NAME"]
    assert str(ev.data["DESKTOP"]).count("x") == 1 and int(ev.data["CLIENT_BUILD"]) > 0


def test_standard_rdp_security_is_told_that_nla_is_required(rdp):
    out = xfreerdp(rdp.port, "/sec:rdp", "/u:bob", "/p:x")
    assert b"HYBRID_REQUIRED_BY_SERVER" in out.stdout + out.stderr, out
    ev, = connections(rdp)
    assert (ev.data["PROTOCOLS"], ev.data["STAGE"], ev.data["END"]) == (
        "rdp", "x224", "refused: NLA required")


def test_nmap_names_it_microsoft_terminal_services(rdp):
    out = run([tool("nmap"), "-sV", "-Pn", "-n", "-p", str(rdp.port), "127.0.0.1"])
    assert f"{rdp.port}/tcp open  ms-wbt-server Microsoft Terminal Services".encode() \
        in out.stdout, out.stdout
    assert b"OS: Windows" in out.stdout


# --- the certificate -----------------------------------------------------------------------------


def test_the_certificate_is_windows_own_kind_and_renewed_before_it_runs_out(tmp_path, rdp):
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    with connect(rdp.port) as s:
        s.sendall(x224(b"Cookie: mstshash=eve\r\n", protocols=1))
        assert s.recv(19, socket.MSG_WAITALL)[11:] == struct.pack("<BBHI", 2, 0x1F, 8, 1)
        with tls.wrap_socket(s) as t:
            der = t.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.rfc4514_string() == f"CN={HOST}"
    assert 180 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 183
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    path = tmp_path / "rdp" / "tls.pem"
    cfg = rdp_config(tmp_path)
    assert "(kept)" in RDPHoneypot.make_host_key(cfg)
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=160)
    _, done = tlscert.make_certificate(path, (("CN", HOST),), now=soon,
                                       profile=tlscert.WINDOWS_RDP)
    assert "about to" in done
    assert host_names("My Box_01.lan") == ("MYBOX01", "MyBox01")
    assert host_names("") == ("WIN-SERVER", "WIN-SERVER")


# --- by hand and attacker bytes ------------------------------------------------------------------


def x224(cookie: bytes = b"", *, protocols: int | None = None) -> bytes:
    """An X.224 Connection Request as mstsc sends it (TPKT, then the TPDU)."""
    neg = b"" if protocols is None else struct.pack("<BBHI", 1, 0, 8, protocols)
    body = b"\xe0\x00\x00\x00\x00\x00" + cookie + neg
    tpdu = bytes([len(body)]) + body
    return b"\x03\x00" + struct.pack(">H", 4 + len(tpdu)) + tpdu


def test_attacker_bytes_never_stop_it(tmp_path):
    cfg = rdp_config(tmp_path, connection_bytes=65536)
    RDPHoneypot.make_host_key(cfg)
    sink = MemorySink()
    r = Running(RDPHoneypot(cfg, [sink]), sink)
    try:
        rng = random.Random("rdp")
        hello = x224(b"Cookie: mstshash=\xc3(\x1b[2J\xe2\x80\xae" + b"A" * 200 + b"\r\n",
                     protocols=3)
        junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
                for _ in range(15)]
        junk += [hello[:cut] for cut in (1, 3, 4, 9, 20)]
        junk += [b"\x03\x00\xff\xff" + b"\x00" * 70000, b"\x03\x00\x00\x05\x00",
                 x224(b"Cookie: mstshash=x"), x224(protocols=2)[:-1] + b"\x00\x00",
                 x224(protocols=1) + b"\x16\x03\x01\x00\x10" + b"\x01" * 16,
                 x224(protocols=2) + b"GET / HTTP/1.1\r\n\r\n", hello + b"\x16\x03" * 9000]
        throw(r.port, junk)
        slow = connect(r.port)  # a client that dribbles is cut at the time limit
        slow.sendall(hello[:5])
        out = xfreerdp(r.port, "/u:admin", "/p:P@ssw0rd")
        assert out.returncode != 0
        ev = r.wait_for(lambda e: e.data.get("USER") == "admin")
        assert ntlmv2_matches(str(ev.data["NTLMV2_RESPONSE"]), "P@ssw0rd")
        assert closed_within(slow, 5) <= 5
        slow.close()
        for e in connections(r, len(junk)):
            for value in e.data.values():
                assert isinstance(value, int) or str(value).isprintable(), e.data
        cookies = [e.data["USERNAME"] for e in r.sink.events if "\ufffd" in str(e.data["USERNAME"])]
        assert cookies and all("\x1b" not in str(c) for c in cookies)
        assert any("SEEN_HEX" in e.data for e in r.sink.events)
    finally:
        r.stop()


def test_the_parsers_raise_only_decode_errors():
    request = ConnectionRequest.parse(x224(b"Cookie: mstshash=bob\r\n", protocols=11)[4:])
    assert (request.cookie, request.protocol_names) == (b"bob", "ssl hybrid hybrid_ex")
    token = ConnectionRequest.parse(x224(b"Cookie: msts=1.2.3\r\n")[4:])
    assert token.routing_token == b"msts=1.2.3" and not token.negotiated
    message = ts_request(6, b"NTLMSSP\x00\x01\x00\x00\x00" + bytes(24))
    assert TSRequest.parse(message).version == 6
    buf = bytearray(message[:-1])
    assert take_der(buf) is None  # still arriving
    with pytest.raises(RDPDecodeError):
        take_der(bytearray(b"\x30\x84\xff\xff\xff\xff"))
    with pytest.raises(RDPDecodeError):
        take_tpkt(bytearray(b"\x03\x00\xff\xff"))
    rng = random.Random(14001)
    for sample in (message, x224(b"Cookie: mstshash=a\r\n", protocols=3)[4:]):
        for _ in range(3000):
            data = bytearray(sample)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = data[:rng.randrange(len(data) + 1)]
            for parse in (TSRequest.parse, ConnectionRequest.parse):
                try:
                    parse(bytes(data))
                except DecodeError:
                    pass
