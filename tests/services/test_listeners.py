"""FTP, Telnet and Redis honeypots against the real clients an intruder uses: lftp and curl,
inetutils' telnet, redis-cli; then attacker bytes (random, invalid UTF-8, overlong, split
anywhere, slow) against each, after which it still records an honest attempt."""

from __future__ import annotations

import dataclasses
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.services.ftp import FTPHoneypot
from firmware.services.http import (
    MAX_BODY,
    BadRequest,
    HTTPHoneypot,
    parse_request,
    posted_fields,
)
from firmware.services.lines import MAX_LINE
from firmware.services.redis import (
    MAX_EVENTS,
    ProtocolError,
    RedisHoneypot,
    _logdata,
    parse_command,
)
from firmware.services.telnet import TelnetFilter, TelnetHoneypot
from tests.services.conftest import MemorySink, Running, make_config
from tests.services.test_base import closed_within, connect, throw


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: `make deps` installs it (scripts/deps/apt-test.txt)"
    return found


def run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=30, check=False)


def code(c: EventCode) -> Callable[[Event], bool]:
    return lambda e: e.code == c


def logins(r: Running, c: EventCode) -> list[tuple[object, object]]:
    return [(e.data["USERNAME"], e.data["PASSWORD"]) for e in r.sink.events if e.code == c]


# --- FTP ---------------------------------------------------------------------------------------


@pytest.fixture
def ftp(start):
    return start(FTPHoneypot, connection_timeout=5.0)


def test_lftp_login_is_recorded_and_refused(ftp):
    out = run([tool("lftp"), "-u", "backup,Winter2026!", "-e",
               "set ftp:ssl-allow no; set net:max-retries 1; ls; bye",
               f"ftp://127.0.0.1:{ftp.port}"])
    assert out.returncode != 0 and b"530" in out.stderr + out.stdout
    ev = ftp.wait_for(code(EventCode.FTP_LOGIN_ATTEMPT))
    assert ev.data == {"USERNAME": "backup", "PASSWORD": "Winter2026!"}
    assert (ev.src_host, ev.dst_host, ev.dst_port) == ("127.0.0.1", "127.0.0.1", ftp.port)


def test_curl_ftp_and_anonymous_logins_are_refused(ftp):
    out = run([tool("curl"), "-sS", "--max-time", "10", f"ftp://127.0.0.1:{ftp.port}/"])
    assert out.returncode == 67, out  # curl: "the user name, password ... was not accepted"
    ev = ftp.wait_for(code(EventCode.FTP_LOGIN_ATTEMPT))
    assert ev.data["USERNAME"] == "anonymous"  # curl's default: anonymous is refused as well


def test_ftp_banner_is_the_configured_one_and_three_failures_end_it(ftp):
    with connect(ftp.port) as s:
        assert s.recv(200) == b"220 (vsFTPd 3.0.5)\r\n"
        for i in range(3):
            s.sendall(f"USER u{i}\r\n".encode())
            assert s.recv(200).startswith(b"331 ")
            s.sendall(f"PASS p{i}\r\n".encode())
            assert s.recv(200).startswith(b"530 Login incorrect.")
        assert closed_within(s, 5) < 5
    assert logins(ftp, EventCode.FTP_LOGIN_ATTEMPT) == [(f"u{i}", f"p{i}") for i in range(3)]


# --- Telnet ------------------------------------------------------------------------------------


@pytest.fixture
def telnet(start):
    return start(TelnetHoneypot, connection_timeout=8.0)


def test_telnet_client_login_is_recorded_and_refused(telnet):
    """inetutils' telnet with its stdin piped, as a script kiddie's loop drives it."""
    proc = subprocess.Popen([tool("telnet"), "127.0.0.1", str(telnet.port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for text in (b"admin\n", b"hunter2 with spaces\n"):  # telnet sends CR LF
            time.sleep(0.5)
            proc.stdin.write(text)
            proc.stdin.flush()
        ev = telnet.wait_for(code(EventCode.TELNET_LOGIN_ATTEMPT))
    finally:
        proc.stdin.close()
        proc.kill()
        shown = proc.stdout.read()
    assert ev.data == {"USERNAME": "admin", "PASSWORD": "hunter2 with spaces"}
    assert b"login: " in shown and b"Login incorrect" in shown


def test_telnet_turns_the_clients_echo_off_for_the_password_only(telnet):
    with connect(telnet.port) as s:
        got = b""
        while b"login: " not in got:
            got += s.recv(4096)
        s.sendall(b"root\r\n")
        while b"Password: " not in got:
            got += s.recv(4096)
        assert got.endswith(b"\xff\xfb\x01Password: "), "WILL ECHO before the prompt"
        s.sendall(b"\xff\xfd\x01toor\r\n")  # DO ECHO: the client agrees, then types
        while b"Login incorrect" not in got:
            got += s.recv(4096)
    assert b"\xff\xfc\x01\r\nLogin incorrect" in got, "WONT ECHO once the password is in"
    assert got.count(b"\xff") == 2, "the client's yes to our offer is not refused"
    assert telnet.wait_for(code(EventCode.TELNET_LOGIN_ATTEMPT)).data["PASSWORD"] == "toor"


def test_telnet_negotiation_is_declined_and_split_anywhere():
    stream = (b"\xff\xfb\x18\xff\xfd\x03\xff\xfa\x18\x00xterm\xff\xf0ro\xff\xffot\r\x00"
              b"pw\r\nnext\r")
    for cut in range(len(stream) + 1):
        f = TelnetFilter()
        assert f.feed(stream[:cut]) + f.feed(stream[cut:]) == b"ro\xffot\npw\nnext\n"
        assert bytes(f.replies) == b"\xff\xfe\x18\xff\xfc\x03"  # DONT TTYPE, WONT SGA


def test_telnet_three_failures_end_the_session(telnet):
    with connect(telnet.port) as s:
        s.sendall(b"a\r\n1\r\nb\r\n2\r\nc\r\n3\r\n")
        assert closed_within(s, 5) < 5
    assert logins(telnet, EventCode.TELNET_LOGIN_ATTEMPT) == [("a", "1"), ("b", "2"), ("c", "3")]


# --- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def redis(start):
    return start(RedisHoneypot, connection_timeout=5.0)


def test_redis_cli_auth_and_commands_are_recorded(redis):
    cli = [tool("redis-cli"), "-h", "127.0.0.1", "-p", str(redis.port), "--no-auth-warning"]
    out = run([*cli, "--user", "ops", "--pass", "s3cr3t-redis", "CONFIG", "GET", "dir"])
    assert b"WRONGPASS" in out.stdout + out.stderr
    auth = redis.wait_for(lambda e: e.data.get("CMD") == "AUTH")
    assert auth.data == {"CMD": "AUTH", "USERNAME": "ops", "PASSWORD": "s3cr3t-redis",
                         "ARGS": ""}
    out = run([*cli, "CONFIG", "SET", "dir", "/root/.ssh"])
    assert b"NOAUTH" in out.stdout + out.stderr
    config = redis.wait_for(lambda e: e.data.get("CMD") == "CONFIG"
                            and e.data.get("ARGS") == "SET dir /root/.ssh")
    assert config.dst_port == redis.port and "PASSWORD" not in config.data


def test_redis_inline_commands_and_protocol_errors(redis):
    with connect(redis.port) as s:
        s.sendall(b"INFO server\r\n")
        assert s.recv(200) == b"-NOAUTH Authentication required.\r\n"
        s.sendall(b"*1\r\n$-5\r\n")
        assert s.recv(200).startswith(b"-ERR Protocol error")
        assert closed_within(s, 5) < 5
    assert redis.wait_for(lambda e: e.data.get("CMD") == "INFO").data["ARGS"] == "server"


def test_resp_parser_bounds_and_splits():
    whole = b"*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$2\r\npw\r\n"
    for cut in range(1, len(whole)):
        buf = bytearray(whole[:cut])
        assert parse_command(buf) is None
        buf += whole[cut:]
        assert parse_command(buf) == [b"AUTH", b"user", b"pw"] and not buf
    for bad in (b"*99999\r\n", b"*1\r\n$99999\r\n", b"*1\r\n:1\r\n", b"*1\r\n$2\r\nabcd",
                b"*" + b"9" * 40, b"x" * (MAX_LINE + 1)):
        with pytest.raises(ProtocolError):
            parse_command(bytearray(bad))


def test_redis_records_a_bounded_number_of_commands_per_connection(redis):
    with connect(redis.port) as s:
        s.sendall(b"PING\r\n" * (MAX_EVENTS + 50) + b"AUTH stolen-at-last\r\n")
        got = b""
        while got.count(b"\r\n") < MAX_EVENTS + 51:
            got += s.recv(65536)
    auth = redis.wait_for(lambda e: e.data.get("CMD") == "AUTH")
    assert auth.data["PASSWORD"] == "stolen-at-last", "a credential is recorded however late"
    assert len([e for e in redis.sink.events if e.data.get("CMD") == "PING"]) == MAX_EVENTS


def test_redis_credentials_never_show_in_args():
    for args, user, password in (
            ([b"HELLO", b"AUTH", b"default", b"Secret1"], "default", "Secret1"),
            ([b"HELLO", b"3", b"AUTH", b"ops", b"pw2", b"SETNAME", b"x"], "ops", "pw2"),
            ([b"MIGRATE", b"h", b"6379", b"", b"0", b"500", b"AUTH2", b"ops", b"pw3", b"KEYS",
              b"k"], "ops", "pw3"),
            ([b"CONFIG", b"SET", b"masterauth", b"pw4", b"dir", b"/tmp"], None, "pw4")):
        data = _logdata(args[0].decode(), args[1:])
        assert data["PASSWORD"] == password.encode()
        assert data.get("USERNAME") == (user.encode() if user else None)
        shown = data["ARGS"]
        assert isinstance(shown, bytes)
        assert password.encode() not in shown and b"********" in shown


# --- HTTP --------------------------------------------------------------------------------------


@pytest.fixture
def http(start):
    return start(HTTPHoneypot, connection_timeout=5.0)


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return run([tool("curl"), "-sS", "--max-time", "10", "-A", "Mozilla/5.0 (X11) probe", *args])


def test_curl_sees_the_login_page_and_each_request_is_recorded(http):
    base = f"http://127.0.0.1:{http.port}"
    out = curl("-i", f"{base}/webman/index.cgi?lang=en")
    assert out.stdout.startswith(b"HTTP/1.1 200 OK") and b"Server: nginx\r\n" in out.stdout
    assert b'name="password"' in out.stdout
    ev = http.wait_for(code(EventCode.HTTP_GET))
    assert ev.data == {"HOSTNAME": f"127.0.0.1:{http.port}", "PATH": "/webman/index.cgi?lang=en",
                       "SKIN": "nas", "USERAGENT": "Mozilla/5.0 (X11) probe"}


def test_a_posted_form_and_basic_auth_are_login_attempts(http):
    base = f"http://127.0.0.1:{http.port}"
    out = curl("-d", "username=admin&password=p%40ss+word", f"{base}/login")
    assert b"incorrect" in out.stdout
    curl("-u", "svc_backup:Basic:Pw", f"{base}/")
    got = [e.data for e in http.sink.events if e.code == EventCode.HTTP_POST_LOGIN]
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        got = [e.data for e in http.sink.events if e.code == EventCode.HTTP_POST_LOGIN]
    assert [(d["USERNAME"], d["PASSWORD"], d["PATH"]) for d in got] == [
        ("admin", "p@ss word", "/login"), ("svc_backup", "Basic:Pw", "/")]
    curl("-X", "PROPFIND", f"{base}/")
    assert http.wait_for(code(EventCode.HTTP_UNIMPLEMENTED_METHOD)).data["METHOD"] == "PROPFIND"


def test_credentials_anywhere_in_a_request_are_a_login_and_never_in_path(http):
    base = f"http://127.0.0.1:{http.port}"
    curl("-H", "Content-Type: application/json", "-d", '{"User": "jadmin", "pw": "j-pw"}',
         f"{base}/api/auth")
    curl(f"{base}/login?username=qadmin&password=q-pw&lang=en")
    curl("-d", "token=abc&remember=1", f"{base}/login")
    logins: list[dict[str, object]] = []
    deadline = time.monotonic() + 5
    while len(logins) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        logins = [dict(e.data) for e in http.sink.events if e.code == EventCode.HTTP_POST_LOGIN]
    assert [(d["USERNAME"], d["PASSWORD"]) for d in logins] == [
        ("jadmin", "j-pw"), ("qadmin", "q-pw"), ("", "")]
    assert logins[1]["PATH"] == "/login?username=qadmin&password=********&lang=en"
    assert logins[2]["FIELDS"] == "remember,token", "a post with no known field says what it had"
    assert posted_fields(b"&".join(b"f%d=1" % i for i in range(40))) == {}, \
        "more fields than parse_qs takes: none, not a ValueError out of data_received"
    with connect(http.port) as s:  # absolute form with user information, as proxies see it
        s.sendall(b"GET http://uadmin:u-pw@10.0.0.9/ HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(4096)
    ev = http.wait_for(lambda e: e.data.get("USERNAME") == "uadmin")
    assert ev.data["PASSWORD"] == "u-pw" and "u-pw" not in str(ev.data["PATH"])
    for e in http.sink.events:
        assert "-pw" not in str(e.data.get("PATH", "")), e


def test_a_request_the_server_refuses_is_recorded_too(http):
    for raw, status in ((b"POST /login HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", b"400"),
                        (b"GARBAGE\r\n\r\n", b"400"),
                        (b"POST /up HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413")):
        with connect(http.port) as s:
            s.sendall(raw)
            assert s.recv(4096).startswith(b"HTTP/1.1 " + status)
    http.wait_for(lambda e: e.data.get("METHOD") == "POST" and e.data.get("PATH") == "/up")
    refused = [e.data for e in http.sink.events if e.code == EventCode.HTTP_UNIMPLEMENTED_METHOD]
    assert [(d["METHOD"], d["REASON"]) for d in refused] == [
        ("POST", "400 Bad Request"), ("GARBAGE", "400 Bad Request"),
        ("POST", "413 Content Too Large")]


def test_the_basic_skin_asks_for_a_password(tmp_path):
    cfg = make_config(tmp_path)
    listeners = {**cfg.listeners, "http": dataclasses.replace(cfg.listeners["http"],
                                                             skin="basic", banner="Apache")}
    sink = MemorySink()
    r = Running(HTTPHoneypot(dataclasses.replace(cfg, listeners=listeners), [sink]), sink)
    try:
        out = curl("-i", f"http://127.0.0.1:{r.port}/")
        assert out.stdout.startswith(b"HTTP/1.1 401 Unauthorized")
        assert b'WWW-Authenticate: Basic realm="Intranet"' in out.stdout
        assert b"Server: Apache\r\n" in out.stdout
    finally:
        r.stop()


def test_http_parser_bounds():
    whole = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde"
    for cut in range(len(whole)):
        assert parse_request(bytearray(whole[:cut])) is None
    request = parse_request(bytearray(whole))
    assert request is not None and request.body == b"abcde" and request.headers["host"] == "x"
    for bad in (b"GET /\r\n\r\n", b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
                b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                f"POST / HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(),
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", b"G" * 9000):
        with pytest.raises(BadRequest):
            parse_request(bytearray(bad))


# --- attacker bytes against every one of them --------------------------------------------------

HONEST: dict[type, Callable[[socket.socket], None]] = {
    FTPHoneypot: lambda s: s.sendall(b"USER honest\r\nPASS pw\r\n"),
    TelnetHoneypot: lambda s: s.sendall(b"honest\r\npw\r\n"),
    RedisHoneypot: lambda s: s.sendall(b"*3\r\n$4\r\nAUTH\r\n$6\r\nhonest\r\n$2\r\npw\r\n"),
    HTTPHoneypot: lambda s: s.sendall(b"GET / HTTP/1.1\r\nAuthorization: Basic aG9uZXN0OnB3\r\n"
                                      b"\r\n"),
}


@pytest.mark.parametrize("cls", list(HONEST), ids=lambda c: c.name)
def test_attacker_bytes_never_stop_a_service(start, cls):
    r = start(cls, connection_timeout=2.0, connection_bytes=32768)
    rng = random.Random(cls.name)
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(20)]
    junk += [b"USER \xff\xfe\xc3(\r\nPASS \xed\xa0\x80\x00\x1b[2J\r\n",
             b"\xe2\x80\xaeadmin\r\n\x00\r\n", b"A" * 40000, b"\xff" * 5000, b"\r\n" * 5000,
             b"*64\r\n" + b"$4096\r\n" + b"B" * 4096 + b"\r\n"]
    throw(r.port, junk)
    slow = connect(r.port)  # a client that dribbles is cut at the time limit, others go on
    slow.sendall(b"U")
    with connect(r.port) as s:
        HONEST[cls](s)
        ev = r.wait_for(lambda e: e.data.get("USERNAME") == "honest")
    assert closed_within(slow, 5) <= 5
    slow.close()
    assert ev.data["PASSWORD"] == "pw"
    for e in r.sink.events:  # everything recorded is text a console can show as it is
        for value in e.data.values():
            assert isinstance(value, int) or value.isprintable(), e
