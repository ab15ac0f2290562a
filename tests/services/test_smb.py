"""The SMB honeypot against Samba's own client: shares listed, a login refused or let in by the
honey credential, files read and a write refused, on every SMB2/SMB3 dialect with signing
required; the recorded NTLMv2 response tells a defender which password was tried; then attacker
bytes, after which smbclient still gets in."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import random
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from Crypto.Hash import MD4  # test side only: the device keeps the NT hash, never MD4s anything

from firmware.config import SMBService
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event, masked
from firmware.services import ntlm
from firmware.services import smbwire as wire
from firmware.services.smb import MAX_UNSENT, Connection, SMBHoneypot
from firmware.services.smbshare import Tree
from tests.services.conftest import MemorySink, Running, make_config
from tests.services.test_base import closed_within, connect, throw
from tests.services.test_listeners import tool

HONEY_USER, HONEY_PASSWORD = "svc_backup", "Autumn-Ledger-42"
DIALECTS = ("SMB2_02", "SMB2_10", "SMB3_00", "SMB3_02", "SMB3_11")


def nt_hash(password: str) -> bytes:
    return MD4.new(password.encode("utf-16-le")).digest()


@pytest.fixture
def smb(tmp_path: Path) -> Iterator[Running]:
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, smb=SMBService(
        enabled=True, host="127.0.0.1", port=0, honey_user=HONEY_USER,
        honey_nt_hash=nt_hash(HONEY_PASSWORD).hex()), limits=dataclasses.replace(
        cfg.limits, connection_timeout=5.0, connection_bytes=1 << 20))
    sink = MemorySink()
    running = Running(SMBHoneypot(cfg, [sink]), sink)
    yield running
    running.stop()


def smbclient(r: Running, share: str, *args: str, user: str | None = None,
              dialect: str = "SMB3_11", commands: str = "") -> subprocess.CompletedProcess[str]:
    argv = [tool("smbclient"), f"//127.0.0.1/{share}", "-p", str(r.port),
            "--option", f"client max protocol={dialect}",
            "--option", "client signing=required" if user and not user.startswith("guest")
            else "client signing=auto", *args]
    argv += ["-U", user] if user is not None else ["-N"]
    if commands:
        argv += ["-c", commands]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def events(r: Running, code: EventCode) -> list[Event]:
    return [e for e in r.sink.events if e.code == code]


def test_anonymous_lists_the_shares(smb):
    out = smbclient(smb, "", "-L", "//127.0.0.1")
    assert "Documents" in out.stdout and "IPC$" in out.stdout, out.stdout + out.stderr
    login = smb.wait_for(lambda e: e.code == EventCode.SMB_LOGIN_ATTEMPT
                         and e.data["RESULT"] == "anonymous")
    assert login.data["DIALECT"] == "3.1.1" and login.src_host == "127.0.0.1"
    assert not events(smb, EventCode.SMB_TREE_CONNECT), "IPC$ alone is not a share connect"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_honey_credential_opens_the_share_signed_and_each_file_alarms_once(
        smb, tmp_path, dialect):
    local = tmp_path / "handbook.docx"
    out = smbclient(smb, "Documents", user=f"{HONEY_USER}%{HONEY_PASSWORD}", dialect=dialect,
                    commands=f'ls; cd HR; get "Employee handbook 2026.docx" {local}; '
                             f'get "Employee handbook 2026.docx" {local}; put /etc/hostname x')
    assert "Finance" in out.stdout and "Salary review 2026.xlsx" not in out.stdout
    assert "NT_STATUS_ACCESS_DENIED" in out.stdout + out.stderr  # the put
    node, _ = Tree.documents().find("HR\\Employee handbook 2026.docx")
    assert node is not None and node.size > 3 * 65536  # read in several pieces
    assert local.read_bytes() == node.content(0, node.size)
    login = smb.wait_for(lambda e: e.code == EventCode.SMB_LOGIN_ATTEMPT)
    assert login.data["RESULT"] == "honey" and login.data["USER"] == HONEY_USER
    assert login.data["DIALECT"] == {"SMB2_02": "2.0.2", "SMB2_10": "2.1", "SMB3_00": "3.0",
                                     "SMB3_02": "3.0.2", "SMB3_11": "3.1.1"}[dialect]
    smb.wait_for(lambda e: e.code == EventCode.SMB_FILE_OPEN and e.data["ACCESS"] == "write")
    opens = [(e.data["FILENAME"], e.data["ACCESS"], e.data["RESULT"])
             for e in events(smb, EventCode.SMB_FILE_OPEN)]
    assert opens == [("HR\\Employee handbook 2026.docx", "read", "opened"),
                     ("HR\\x", "write", "refused")]
    (connect_,) = events(smb, EventCode.SMB_TREE_CONNECT)
    assert connect_.data["SHARENAME"] == "Documents" and connect_.data["RESULT"] == "connected"


def test_a_wrong_password_is_refused_and_its_response_names_the_password(smb):
    out = smbclient(smb, "Documents", user="Administrator%Winter2026!", commands="ls")
    assert "NT_STATUS_LOGON_FAILURE" in out.stdout + out.stderr
    login = smb.wait_for(lambda e: e.code == EventCode.SMB_LOGIN_ATTEMPT
                         and e.data["USER"] == "Administrator")
    assert login.data["RESULT"] == "refused" and login.data["WORKSTATION"]
    line = str(login.data["NTLMV2_RESPONSE"])
    assert verifies(line, "Winter2026!") and not verifies(line, "Winter2025!")
    assert masked(login.data)["NTLMV2_RESPONSE"] == "********"
    assert not events(smb, EventCode.SMB_TREE_CONNECT)


def verifies(line: str, password: str) -> bool:
    """What a defender does with the record: check a candidate password (hashcat mode 5600)."""
    user, _, domain, challenge, proof, blob = line.split(":")
    key = hmac.new(nt_hash(password), (user.upper() + domain).encode("utf-16-le"),
                   "md5").digest()
    expected = hmac.new(key, bytes.fromhex(challenge) + bytes.fromhex(blob), "md5").hexdigest()
    return expected == proof


def test_guest_reads_anonymous_is_kept_out_and_admin_shares_are_refused(smb):
    out = smbclient(smb, "Documents", user="guest%", commands="ls IT\\*")
    assert "vpn-setup.txt" in out.stdout, out.stdout + out.stderr
    assert "NT_STATUS_ACCESS_DENIED" in smbclient(smb, "Documents", commands="ls").stdout
    admin = smbclient(smb, "C$", user=f"{HONEY_USER}%{HONEY_PASSWORD}", commands="ls")
    assert "NT_STATUS_ACCESS_DENIED" in admin.stdout + admin.stderr
    missing = smbclient(smb, "Backups", user=f"{HONEY_USER}%{HONEY_PASSWORD}", commands="ls")
    assert "NT_STATUS_BAD_NETWORK_NAME" in missing.stdout + missing.stderr
    smb.wait_for(lambda e: e.code == EventCode.SMB_TREE_CONNECT
                 and e.data["SHARENAME"] == "Backups")
    tried = {(e.data["USER"], e.data["SHARENAME"], e.data["RESULT"])
             for e in events(smb, EventCode.SMB_TREE_CONNECT)}
    assert tried == {("guest", "Documents", "connected"), ("", "Documents", "refused"),
                     (HONEY_USER, "C$", "refused"), (HONEY_USER, "Backups", "refused")}


def test_a_service_without_a_honey_credential_refuses_every_password(tmp_path):
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, smb=SMBService(enabled=True, host="127.0.0.1", port=0,
                                                  guest=False))
    sink = MemorySink()
    r = Running(SMBHoneypot(cfg, [sink]), sink)
    try:
        for user in (f"{HONEY_USER}%{HONEY_PASSWORD}", "guest%"):
            out = smbclient(r, "Documents", user=user, commands="ls")
            assert "NT_STATUS_LOGON_FAILURE" in out.stdout + out.stderr
        assert {e.data["RESULT"] for e in events(r, EventCode.SMB_LOGIN_ATTEMPT)} == {"refused"}
    finally:
        r.stop()


# --- attacker bytes -------------------------------------------------------------------------------

class Recorder:
    """A transport for a :class:`Connection` driven without sockets (the fuzz test)."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name in ("peername", "sockname") else default


def session_messages(smb: Running) -> list[bytes]:
    """The messages a real smbclient session sends (ls and get), recorded through a proxy."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sent: list[bytes] = []

    def proxy() -> None:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", smb.port))
        buf = b""
        client.settimeout(5)
        server.settimeout(0.2)
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                break
            if not data:
                break
            buf += data
            while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[1:4], "big"):
                size = 4 + int.from_bytes(buf[1:4], "big")
                sent.append(buf[4:size])
                buf = buf[size:]
            server.sendall(data)
            try:
                while True:
                    reply = server.recv(65536)
                    if not reply:
                        break
                    client.sendall(reply)
            except TimeoutError:
                pass
        client.close()
        server.close()

    thread = threading.Thread(target=proxy, daemon=True)
    thread.start()
    subprocess.run([tool("smbclient"), "//127.0.0.1/Documents", "-p", str(port), "-U",
                    "guest%", "-c", "ls; get IT\\vpn-setup.txt /dev/null"],
                   capture_output=True, timeout=30, check=False)
    thread.join(10)
    listener.close()
    assert len(sent) >= 6, "the proxy saw no SMB session"
    return sent


def mutations(message: bytes, rng: random.Random) -> list[bytes]:
    out = [message[:rng.randrange(len(message))]]
    for _ in range(6):
        m = bytearray(message)
        for _ in range(rng.randrange(1, 6)):
            m[rng.randrange(len(m))] = rng.randrange(256)
        out.append(bytes(m))
    m = bytearray(message)  # every 16-bit field set to a large value in turn at random spots
    at = rng.randrange(64, max(65, len(m) - 2))
    struct.pack_into("<H", m, min(at, len(m) - 2), 0xFFFF)
    out.append(bytes(m))
    return out


def test_mutated_sessions_never_raise_anything_but_a_closed_connection(smb):
    rng = random.Random(5000)
    recorded = session_messages(smb)
    for _ in range(60):
        for i, message in enumerate(recorded):
            for bad in mutations(message, rng):
                conn = Connection(smb.service)
                transport = Recorder()
                conn.connection_made(transport)  # type: ignore[arg-type]
                for earlier in recorded[:i]:
                    conn.data_received(wire.frame(earlier))
                conn.data_received(wire.frame(bad))  # raises nothing but closes or answers
    for e in smb.sink.events:
        for value in e.data.values():
            assert isinstance(value, int) or value.isprintable(), e


def test_attacker_bytes_leave_the_share_working(smb):
    rng = random.Random("smb")
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(20)]
    junk += [b"\x00\xff\xff\xff" + b"A" * 1000,  # a frame longer than any message
             wire.frame(b"\xfeSMB" + b"\x00" * 60),  # a header with no body
             wire.frame(b"\xffSMB\x72" + b"\x00" * 30 + b"\x02NT LM 0.12\x00"),  # SMB1 only
             wire.frame(b"\xfeSMB" + struct.pack("<H", 64) + b"\x00" * 14
                        + struct.pack("<I", 8) + b"\x00" * 40),  # a compound loop
             b"\x81\x00\x00\x44" + b" " * 68]  # a NetBIOS session request, then silence
    throw(smb.port, junk, 6)
    slow = connect(smb.port)
    slow.sendall(b"\x00\x00")
    out = smbclient(smb, "Documents", user=f"{HONEY_USER}%{HONEY_PASSWORD}",
                    commands="get IT\\vpn-setup.txt /dev/null")
    assert out.returncode == 0, out.stdout + out.stderr
    smb.wait_for(lambda e: e.code == EventCode.SMB_FILE_OPEN)
    assert closed_within(slow, 8) <= 8
    slow.close()


def test_a_netbios_session_request_is_taken_whole_and_bounded(smb):
    conn, transport = Connection(smb.service), Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    request = b"\x81\x00\x00\x44" + b" " * 68
    conn.data_received(request[:40])
    assert transport.written == b"", "not answered before it is whole"
    conn.data_received(request[40:] + b"\x85\x00\x00\x00")
    assert transport.written == b"\x82\x00\x00\x00" and not transport.closed
    conn, transport = Connection(smb.service), Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(b"\x81\x00\xff\xff" + b" " * 100)  # a 64 KiB "name": not NetBIOS
    assert transport.written == b"" and transport.closed


def test_the_security_blob_walk_is_bounded():
    nested = b"\x04\x02ab"
    for _ in range(12):
        nested = bytes([0x30, len(nested)]) + nested
    for blob in (nested, b"\x60\x85\xff\xff\xff\xff\xff", b"\x60\x05\x30\x03\x04\x10x",
                 b"\x30\x82\xff\xff"):
        with pytest.raises(ntlm.NTLMError):
            ntlm.ntlmssp_token(blob)
    token = ntlm.NTLMSSP + struct.pack("<I", 1) + b"\x00" * 8
    assert ntlm.ntlmssp_token(ntlm.spnego_challenge(token)) == token


def test_an_authenticate_message_with_fields_outside_it_is_refused():
    head = ntlm.NTLMSSP + struct.pack("<I", 3)
    fields = b"".join(struct.pack("<HHI", 24, 24, 0xFFFF0000) for _ in range(6))
    with pytest.raises(ntlm.NTLMError):
        ntlm.Authenticate.parse(head + fields + struct.pack("<I", 1))
    good = head + b"".join(struct.pack("<HHI", 0, 0, 64) for _ in range(6)) + b"\x01\x00\x00\x00"
    assert ntlm.Authenticate.parse(good).anonymous


def test_signing_matches_the_published_key_derivation():
    """MS-SMB2's SP800-108 derivation as smbclient checks it end to end; here its shape:
    3.1.1 keys depend on the pre-authentication hash, 3.0 keys do not, 2.x signs with the key."""
    key = bytes(range(16))
    assert wire.signing_key(0x0210, key, b"") == key
    assert wire.signing_key(0x0300, key, b"a") == wire.signing_key(0x0302, key, b"b")
    assert wire.signing_key(0x0311, key, b"a" * 64) != wire.signing_key(0x0311, key, b"b" * 64)
    expected = hmac.new(key, struct.pack(">I", 1) + b"SMB2AESCMAC\x00\x00SmbSign\x00"
                        + struct.pack(">I", 128), hashlib.sha256).digest()[:16]
    assert wire.signing_key(0x0300, key, b"") == expected


def test_a_client_that_does_not_read_gets_no_more_answers_until_it_does(smb):
    recorded = session_messages(smb)
    conn = Connection(smb.service)
    transport = Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(wire.frame(recorded[0]))  # NEGOTIATE: answered
    answered = len(transport.written)
    assert answered
    transport.get_write_buffer_size = lambda: 10 * MAX_UNSENT  # type: ignore[method-assign]
    conn.data_received(b"".join(wire.frame(m) for m in recorded[1:]))
    assert len(transport.written) == answered and conn.pending, "held, not answered"
    transport.get_write_buffer_size = lambda: 0  # type: ignore[method-assign]
    conn.resume_writing()
    assert len(transport.written) > answered, "answered once the client reads again"
