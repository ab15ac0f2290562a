"""The MySQL honeypot against MariaDB's own client, then attacker bytes, then the parser's bounds.

MariaDB's client (Connector/C) sends its password in clear whenever the server asks, with or
without ``--enable-cleartext-plugin`` (Oracle's client needs the flag or
``LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN=Y``); a client that refuses is played by MariaDB's with a
plugin directory that lacks ``mysql_clear_password.so``: it sends an empty packet, as a client
does that will not give its password in clear.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import socket
import subprocess

import pytest

from firmware.protocol.catalogue import SECRET_KEYS, EventCode
from firmware.protocol.event import masked
from firmware.services.mysql import (
    CAPABILITIES,
    CONNECT_ATTRS,
    CONNECT_WITH_DB,
    LENENC_AUTH,
    MAX_ATTRS,
    MAX_FIELD,
    MAX_PACKET,
    PLUGIN_AUTH,
    PROTOCOL_41,
    SECURE_CONNECTION,
    SSL,
    MySQLDecodeError,
    MySQLHoneypot,
    greeting,
    make_scramble,
    packet,
    parse_response,
    take_packet,
)
from tests.services.conftest import MemorySink, Running, make_config
from tests.services.test_base import closed_within, connect, throw
from tests.services.test_listeners import run, tool

PASSWORD = "Tr0ub4dor&3"


@pytest.fixture
def mysql(start):
    return start(MySQLHoneypot, connection_timeout=5.0)


def mariadb(port: int, *extra: str, user: str = "dba",
            password: str | None = PASSWORD) -> subprocess.CompletedProcess[bytes]:
    pw = [f"-p{password}"] if password is not None else []
    return run([tool("mariadb"), *extra, "-h", "127.0.0.1", "-P", str(port), "-u", user, *pw,
                "-D", "shop", "--connect-timeout=10", "-e", "SELECT 1"])


def native(password: bytes, scramble: bytes) -> bytes:
    """mysql_native_password: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))."""
    stage1 = hashlib.sha1(password).digest()
    mix = hashlib.sha1(scramble + hashlib.sha1(stage1).digest()).digest()
    return bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


def lenenc(data: bytes) -> bytes:
    if len(data) < 0xFB:
        return bytes([len(data)]) + data
    return b"\xfc" + len(data).to_bytes(2, "little") + data


def response(user: bytes = b"honest", auth: bytes = b"x" * 20, db: bytes = b"shop",
             plugin: bytes = b"mysql_native_password",
             attrs: tuple[tuple[bytes, bytes], ...] = ((b"_client_name", b"raw"),)) -> bytes:
    caps = (PROTOCOL_41 | SECURE_CONNECTION | LENENC_AUTH | CONNECT_WITH_DB | PLUGIN_AUTH
            | CONNECT_ATTRS)
    body = b"".join(lenenc(k) + lenenc(v) for k, v in attrs)
    return (caps.to_bytes(4, "little") + (1 << 24).to_bytes(4, "little") + b"\x21" + b"\0" * 23
            + user + b"\0" + lenenc(auth) + db + b"\0" + plugin + b"\0" + lenenc(body))


def read_packet(s: socket.socket) -> tuple[int, bytes]:
    head = s.recv(4, socket.MSG_WAITALL)
    size = int.from_bytes(head[:3], "little")
    return head[3], s.recv(size, socket.MSG_WAITALL) if size else b""


def logins(r: Running) -> list[dict[str, object]]:
    return [dict(e.data) for e in r.sink.events if e.code == EventCode.MYSQL_LOGIN_ATTEMPT]


# --- the real client -----------------------------------------------------------------------------


def test_mariadb_cleartext_login_is_recorded_and_refused(mysql):
    out = mariadb(mysql.port, "--enable-cleartext-plugin")
    assert out.returncode == 1
    assert (b"ERROR 1045 (28000): Access denied for user 'dba'@'127.0.0.1' (using password: YES)"
            in out.stderr)
    ev = mysql.wait_for(lambda e: e.code == EventCode.MYSQL_LOGIN_ATTEMPT)
    assert ev.data["USERNAME"] == "dba" and ev.data["PASSWORD"] == PASSWORD
    assert ev.data["DATABASE"] == "shop" and ev.data["PLUGIN"] == "mysql_native_password"
    assert str(ev.data["CLIENT"]).startswith("libmariadb 3.") and ev.data["PROGRAM"] == "mysql"
    assert "SCRAMBLE" not in ev.data
    assert (ev.src_host, ev.dst_host, ev.dst_port) == ("127.0.0.1", "127.0.0.1", mysql.port)


def test_a_client_that_refuses_cleartext_leaves_a_crackable_scramble(mysql, tmp_path):
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    out = mariadb(mysql.port, f"--plugin-dir={empty}")
    assert out.returncode == 1 and b"mysql_clear_password" in out.stderr
    ev = mysql.wait_for(lambda e: e.code == EventCode.MYSQL_LOGIN_ATTEMPT)
    assert "PASSWORD" not in ev.data and ev.data["USERNAME"] == "dba"
    tag, _, rest = str(ev.data["SCRAMBLE"]).partition("$mysqlna$")
    salt, _, answer = rest.partition("*")
    assert tag == "" and len(salt) == len(answer) == 40
    assert native(PASSWORD.encode(), bytes.fromhex(salt)) == bytes.fromhex(answer)
    assert native(b"not-the-password", bytes.fromhex(salt)) != bytes.fromhex(answer)
    assert "SCRAMBLE" in SECRET_KEYS and masked(ev.data)["SCRAMBLE"] == "********"


def test_no_password_is_using_password_no(mysql):
    out = mariadb(mysql.port, user="root", password=None)
    assert b"Access denied for user 'root'@'127.0.0.1' (using password: NO)" in out.stderr
    ev = mysql.wait_for(lambda e: e.code == EventCode.MYSQL_LOGIN_ATTEMPT)
    assert ev.data["USERNAME"] == "root" and ev.data["PASSWORD"] == ""


def test_the_greeting_is_a_real_servers_and_the_banner_configurable(tmp_path):
    cfg = make_config(tmp_path)
    banner = "11.4.4-MariaDB-deb12"
    listeners = {**cfg.listeners, "mysql": dataclasses.replace(cfg.listeners["mysql"],
                                                              banner=banner)}
    sink = MemorySink()
    r = Running(MySQLHoneypot(dataclasses.replace(cfg, listeners=listeners), [sink]), sink)
    try:
        with connect(r.port) as s:
            seq, hello = read_packet(s)
        assert seq == 0 and hello[0] == 10 and hello[1:].split(b"\0")[0] == banner.encode()
        rest = hello[len(banner) + 2:]
        assert rest[15] == 45 and not rest[13] & 1  # MariaDB's charset, no CLIENT_MYSQL
        out = mariadb(r.port, "--enable-cleartext-plugin")
        assert b"Access denied" in out.stderr
        r.wait_for(lambda e: e.data.get("PASSWORD") == PASSWORD)
    finally:
        r.stop()


# --- attacker bytes ------------------------------------------------------------------------------


def test_attacker_bytes_never_stop_it(start):
    r = start(MySQLHoneypot, connection_timeout=2.0, connection_bytes=32768)
    rng = random.Random("mysql")
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(20)]
    good = response()
    junk += [packet(1, good[:cut]) for cut in (0, 4, 31, 32, 33, 40, len(good) - 3)]
    junk += [good[:cut] for cut in (1, 3, 5, 30)]  # a packet cut short, then EOF
    junk += [b"\xff\xff\xff\x01" + b"A" * 40000,  # 16 MiB announced
             packet(1, response(user=b"\xff\xfe\xc3(\x1b[2J\xe2\x80\xae")),
             packet(1, response(auth=b"\xfe" + b"\xff" * 8)),
             packet(1, good[:36] + b"\xfc\xff\xff" + b"B" * 100),  # auth longer than the packet
             packet(1, response(attrs=((b"k" * 300, b"v"),))),
             packet(1, response(attrs=tuple((b"k%d" % i, b"v") for i in range(500)))),
             packet(2, good), packet(1, (SSL | PROTOCOL_41).to_bytes(4, "little") + b"\0" * 28),
             packet(1, good) + packet(7, b"pw\0"), b"\r\n" * 5000]
    throw(r.port, junk)
    slow = connect(r.port)  # a client that dribbles is cut at the time limit, others go on
    slow.sendall(b"\x10")
    with connect(r.port) as s:
        read_packet(s)
        s.sendall(packet(1, response()))
        seq, switch = read_packet(s)
        assert seq == 2 and switch.startswith(b"\xfemysql_clear_password\0")
        s.sendall(packet(3, b"pw\0"))
        seq, err = read_packet(s)
        assert seq == 4 and err.startswith(b"\xff\x15\x04#28000Access denied for user 'honest'")
        ev = r.wait_for(lambda e: e.data.get("USERNAME") == "honest" and "PASSWORD" in e.data)
    assert closed_within(slow, 5) <= 5
    slow.close()
    assert ev.data["PASSWORD"] == "pw" and ev.data["CLIENT"] == "raw"
    for e in r.sink.events:  # everything recorded is text a console can show as it is
        for value in e.data.values():
            assert isinstance(value, int) or value.isprintable(), e
    assert len(logins(r)) < len(junk)


def test_a_client_that_hangs_up_after_the_switch_is_recorded(mysql):
    with connect(mysql.port) as s:
        _, hello = read_packet(s)
        scramble = hello[hello.index(b"\0") + 5:][:8] + hello[-35:-23]
        s.sendall(packet(1, response(auth=native(b"guess", scramble))))
        assert read_packet(s)[1].startswith(b"\xfemysql_clear_password\0")
    ev = mysql.wait_for(lambda e: e.code == EventCode.MYSQL_LOGIN_ATTEMPT)
    salt, answer = str(ev.data["SCRAMBLE"]).removeprefix("$mysqlna$").split("*")
    assert native(b"guess", bytes.fromhex(salt)) == bytes.fromhex(answer)
    assert bytes.fromhex(salt) == scramble


# --- the parser's bounds -------------------------------------------------------------------------


def test_packets_are_bounded_before_anything_is_kept():
    whole = packet(1, b"abc") + packet(2, b"")
    buf = bytearray(whole[:6])
    assert take_packet(buf) is None and len(buf) == 6
    buf = bytearray(whole)
    assert take_packet(buf) == (1, b"abc") and take_packet(buf) == (2, b"") and not buf
    assert take_packet(bytearray(packet(0, b"x" * MAX_PACKET))) == (0, b"x" * MAX_PACKET)
    with pytest.raises(MySQLDecodeError):
        take_packet(bytearray((MAX_PACKET + 1).to_bytes(3, "little") + b"\0"))


def test_handshake_response_parsing_and_bounds():
    attrs = tuple((b"k%d" % i, b"v") for i in range(MAX_ATTRS + 5))
    got = parse_response(response(attrs=attrs))
    assert (got.user, got.auth, got.database, got.plugin) == (
        b"honest", b"x" * 20, b"shop", b"mysql_native_password")
    assert len(got.attrs) == MAX_ATTRS and got.attr(b"k0") == b"v"
    long = parse_response(response(attrs=((b"k" * 300, b"v"), (b"x", b"y"))))
    assert long.attrs == ((b"k" * MAX_FIELD, b"v"), (b"x", b"y"))
    broken = parse_response(response(attrs=((b"_client_name", b"raw"),)) + b"\xfe")
    assert broken.user == b"honest" and broken.attr(b"_client_name") == b"raw"
    short = parse_response(response()[:-2])  # the attribute block says more than the packet has
    assert short.user == b"honest" and short.attrs == ()
    whole = response()
    for cut in range(len(whole)):  # a cut response is refused or read as far as it goes
        try:
            parse_response(whole[:cut])
        except MySQLDecodeError:
            pass
    for bad in (response(user=b"u" * (MAX_FIELD + 1)), response(auth=b"a" * (MAX_FIELD + 1)),
                whole[:32] + b"u\0\xfb", whole[:32] + b"u\0\xff",
                whole[:32] + b"u\0\xfe" + b"\xff" * 8,
                (SSL | PROTOCOL_41).to_bytes(4, "little") + b"\0" * 28,
                SECURE_CONNECTION.to_bytes(4, "little") + b"\0" * 40):
        with pytest.raises(MySQLDecodeError):
            parse_response(bad)


def test_greeting_offers_plugin_auth_and_no_tls():
    scramble = make_scramble()
    assert len(scramble) == 20 and 0 not in scramble and b"$" not in scramble
    assert max(scramble) < 128
    hello = greeting("8.0.40", 7, scramble)
    rest = hello[len(b"\x0a8.0.40\0"):]
    assert rest[:4] == (7).to_bytes(4, "little") and rest[4:12] == scramble[:8]
    caps = int.from_bytes(rest[13:15], "little") | int.from_bytes(rest[18:20], "little") << 16
    assert caps == CAPABILITIES and not caps & SSL
    assert caps & PLUGIN_AUTH and caps & SECURE_CONNECTION and caps & PROTOCOL_41
    assert rest[20] == 21 and rest[31:43] == scramble[8:]
    assert rest[43:] == b"\0mysql_native_password\0"

