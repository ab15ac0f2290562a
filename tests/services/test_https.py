"""The HTTPS honeypot against curl over TLS 1.2 and 1.3, its certificate as a client sees it, the
ClientHello parser against published JA3/JA4 vectors, and attacker bytes on the TLS port.

Golden vectors: the ClientHello of ``pcap/tls12.pcap`` (Firefox to contile.services.mozilla.com)
and of ``pcap/tls-alpn-h2.pcap`` (a TLS 1.2 client to www.cloudflare.com) in FoxIO's JA4
repository (github.com/FoxIO-LLC/ja4, commit 0e54bc8), with the JA4 values FoxIO publishes for
them in ``python/test/testdata/tls12.pcap.json`` and ``tls-alpn-h2.pcap.json``.  The Firefox
JA3 string and hash are the ones tls.peet.ws publishes for that Firefox hello (and lists of
browser JA3s carry as Firefox's): 579ccef312d18482fc42e2b822ca2430.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from firmware.config import DeviceConfig, parse
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.services import tlscert
from firmware.services.https import HTTPSHoneypot
from firmware.services.tlswire import NotTLS, is_grease, parse_client_hello
from firmware.shared.errors import ConfigError, DecodeError
from tests.services.conftest import MemorySink, Running, make_config
from tests.services.test_base import closed_within, connect, throw
from tests.services.test_listeners import tool

FIREFOX = bytes.fromhex(
    "1603010200010001fc0303ecb2691addb2bf6c599c7aaae23de5f42561cc04eb41029acc6fc050a16ac1d220"
    "46f8617b580ac9358e2aa44e306d52466bcc989c87c8ca64309f5faf50ba7b4d0022130113031302c02bc02f"
    "cca9cca8c02cc030c00ac009c013c014009c009d002f00350100019100000021001f00001c636f6e74696c65"
    "2e73657276696365732e6d6f7a696c6c612e636f6d00170000ff01000100000a000e000c001d001700180019"
    "01000101000b00020100002300000010000e000c02683208687474702f312e31000500050100000000002200"
    "0a000804030503060302030033006b0069001d00208909858fbeb6ed2f1248ba5b9e2978bead0e840110192c"
    "61daed0096798b184400170041044d183d91f5eed35791fa982464e3b0214aaa5f5d1b78616d9b9fbebc22d1"
    "1f535b2f94c686143136aa795e6e5a875d6c08064ad5b76d44caad766e2483012748002b0005040304030300"
    "0d0018001604030503060308040805080604010501060102030201002d00020101001c000240010015007a"
) + bytes(122)  # the padding extension's zeros
FIREFOX_JA3 = ("771,4865-4867-4866-49195-49199-52393-52392-49196-49200-49162-49161-49171-49172-"
               "156-157-47-53,0-23-65281-10-11-35-16-5-34-51-43-13-45-28-21,29-23-24-25-256-257,0")
CLOUDFLARE = bytes.fromhex(
    "16030100e8010000e40303858226c04fbaeddef4246093b4cfdab38f9dcfef145360e417686575cac49c7000"
    "005cc030c02cc028c024c014c00a009f006b0039cca9cca8ccaaff8500c400880081009d003d003500c00084"
    "c02fc02bc027c023c013c009009e0067003300be0045009c003c002f00ba0041c011c00700050004c012c008"
    "0016000a00ff0100005f0000001700150000127777772e636c6f7564666c6172652e636f6d000b0002010000"
    "0a00080006001d00170018000d001c001a06010603efef0501050304010403eeeeeded030103030201020300"
    "10000e000c02683208687474702f312e31")


# --- the parser and the fingerprints ------------------------------------------------------------


def test_golden_client_hellos_give_the_published_ja3_and_ja4():
    firefox = parse_client_hello(FIREFOX)
    assert firefox is not None and len(FIREFOX) == 517
    assert firefox.ja4 == "t13d1715h2_5b57614c22b0_3d5424432f57"
    assert firefox.ja3_string == FIREFOX_JA3
    assert firefox.ja3 == "579ccef312d18482fc42e2b822ca2430"
    assert firefox.server_name == b"contile.services.mozilla.com"
    assert firefox.alpn == (b"h2", b"http/1.1")
    cloudflare = parse_client_hello(CLOUDFLARE)
    assert cloudflare is not None
    assert cloudflare.ja4 == "t12d4605h2_85626a9a5f7f_aaf95bb78ec9"
    assert cloudflare.ja3_string.startswith("771,49200-49196-49192-")


def with_grease(hello: bytes) -> bytes:
    """``hello`` with a GREASE cipher and a GREASE extension first, as Chrome sends them."""
    h = parse_client_hello(hello)
    assert h is not None
    body = bytearray(hello[9:])
    cipher_at = 2 + 32 + 1 + body[34]
    n = int.from_bytes(body[cipher_at:cipher_at + 2], "big")
    body[cipher_at:cipher_at + 2 + n] = ((n + 2).to_bytes(2, "big") + b"\x1a\x1a"
                                         + body[cipher_at + 2:cipher_at + 2 + n])
    ext_at = cipher_at + 2 + n + 2 + 1 + body[cipher_at + 2 + n + 2]
    grease_ext = b"\x3a\x3a\x00\x01\x00"
    size = int.from_bytes(body[ext_at:ext_at + 2], "big") + len(grease_ext)
    body[ext_at:ext_at + 2] = size.to_bytes(2, "big") + grease_ext
    out = bytes(body)
    out = (b"\x01" + len(out).to_bytes(3, "big") + out)
    return b"\x16\x03\x01" + len(out).to_bytes(2, "big") + out


def test_grease_values_change_neither_fingerprint():
    assert is_grease(0x0A0A) and is_grease(0xFAFA) and not is_grease(0x0A0B)
    assert not is_grease(0xEFEF)  # reserved-looking but no GREASE value: stays in (cloudflare)
    greased = parse_client_hello(with_grease(FIREFOX))
    plain = parse_client_hello(FIREFOX)
    assert greased is not None and plain is not None
    assert 0x1A1A in greased.ciphers and 0x3A3A in greased.extensions
    assert (greased.ja3, greased.ja4) == (plain.ja3, plain.ja4)


@pytest.mark.parametrize(("alpn", "expected"), [
    (b"h2", "h2"), (b"http/1.1", "h1"), (b"h", "hh"), (b"\xab", "ab"), (b"\x20", "20"),
    (b"\xab\xcd", "ad"), (b"\x20\x61", "21"), (b"\x30\xab", "3b"), (b"\x61\x20", "60"),
    (b"\x30\x31\xab\xcd", "3d"), (b"\x30\xab\xcd\x31", "01")])
def test_ja4_alpn_follows_the_spec_examples(alpn, expected):
    """FoxIO's JA4.md examples (its python and rust tools still print "99" for non-ASCII)."""
    h = parse_client_hello(FIREFOX)
    assert h is not None
    assert dataclasses.replace(h, alpn=(alpn,)).ja4[8:10] == expected
    assert dataclasses.replace(h, alpn=()).ja4[8:10] == "00"


def test_every_truncation_and_random_bytes_give_none_or_a_decode_error():
    for cut in range(len(FIREFOX)):
        assert parse_client_hello(FIREFOX[:cut]) is None  # a record still arriving
    rng = random.Random(12)
    for _ in range(3000):
        data = bytearray(FIREFOX)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(5, len(data))] = rng.randrange(256)
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        for candidate in (bytes(data), b"\x16\x03\x01" + blob, blob):
            try:
                parse_client_hello(candidate)
            except DecodeError:
                pass


def test_what_is_no_client_hello_is_told_apart():
    with pytest.raises(NotTLS):
        parse_client_hello(b"GET / HTTP/1.1\r\n")
    with pytest.raises(NotTLS):
        parse_client_hello(b"\x16\x01")
    with pytest.raises(DecodeError, match="record length"):
        parse_client_hello(b"\x16\x03\x01\xff\xff" + b"\x01" * 100)
    spanning = bytearray(FIREFOX[:200])
    spanning[3:5] = (195).to_bytes(2, "big")  # the record ends before the ClientHello does
    with pytest.raises(DecodeError, match="continues in a further record") as caught:
        parse_client_hello(bytes(spanning))
    assert caught.value.offset == 6
    with pytest.raises(DecodeError, match="not a ClientHello"):
        parse_client_hello(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00")


def test_the_certificate_subject_setting_is_validated():
    ok = parse({"services": {"https": {"cert_subject": r"CN=nas01, O=Acme\, Inc., c=de"}}})
    assert ok.listeners["https"].cert_subject == (("CN", "nas01"), ("O", "Acme, Inc."),
                                                  ("C", "DE"))
    assert ok.listeners["https"].port == 443 and not ok.listeners["https"].enabled
    with pytest.raises(ConfigError) as caught:
        parse({"services": {"https": {"cert_subject": "CN=a,XX=b,C=Germany,O=,L=\x1b[2J"}}})
    text = str(caught.value)
    for problem in ("'XX=b' is not ATTRIBUTE=VALUE", "C must be a two-letter country code",
                    "O must be 1-64 printable", "L must be 1-64 printable"):
        assert problem in text, text


# --- the certificate ---------------------------------------------------------------------------


def https_config(tmp_path: Path, **settings: object) -> DeviceConfig:
    cfg = make_config(tmp_path, connection_timeout=3.0)
    https = dataclasses.replace(cfg.listeners["https"], certificate=tmp_path / "https" / "tls.pem",
                                **settings)  # type: ignore[arg-type]
    return dataclasses.replace(cfg, listeners={**cfg.listeners, "https": https})


def test_the_certificate_is_kept_and_made_again_when_its_subject_changes(tmp_path):
    cfg = https_config(tmp_path, cert_subject=(("CN", "nas01"), ("O", "Synology Inc.")))
    assert "(new)" in HTTPSHoneypot.make_host_key(cfg)
    path = cfg.listeners["https"].certificate
    first = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "(kept)" in HTTPSHoneypot.make_host_key(cfg) and path.read_bytes() == first
    cert = x509.load_pem_x509_certificate(first)
    assert cert.subject.rfc4514_string() == "O=Synology Inc.,CN=nas01"
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3650
    assert cert.serial_number > 1 << 64
    moved = https_config(tmp_path, cert_subject=(("CN", "rt-ax88u"),))
    assert "subject changed" in HTTPSHoneypot.make_host_key(moved)
    assert path.read_bytes() != first
    path.write_bytes(b"garbage")
    assert "could not be read" in HTTPSHoneypot.make_host_key(moved)
    with pytest.raises(ConfigError, match="no group named"):
        tlscert.make_certificate(path, (("CN", "x"),), "coalmine-no-such-group")


def test_a_missing_certificate_is_an_error_that_names_the_fix(tmp_path):
    service = HTTPSHoneypot(https_config(tmp_path), [MemorySink()])
    with pytest.raises(ConfigError, match="does not exist") as caught:
        asyncio.run(service.start())
    assert "--make-host-key" in caught.value.hint and service.server is None


# --- the service against real clients ----------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def _serve(**settings: object) -> Running:
        cfg = https_config(tmp_path, **settings)
        HTTPSHoneypot.make_host_key(cfg)
        sink = MemorySink()
        running.append(Running(HTTPSHoneypot(cfg, [sink]), sink))
        return running[-1]

    yield _serve
    for r in running:
        r.stop()


def curl(r: Running, version: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([tool("curl"), "-sSkv", "--max-time", "10", f"--tlsv{version}",
                           "--tls-max", version, "-A", "Mozilla/5.0 probe", *args],
                          capture_output=True, timeout=30, check=False)


def events(r: Running, code: EventCode, count: int) -> list[Event]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in r.sink.events if e.code == code]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} {code!r}: {r.sink.events!r}")


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_curl_over_tls_gets_the_page_and_leaves_a_stable_fingerprint(serve, version):
    r = serve(banner="Apache")
    for _ in range(2):
        out = curl(r, version, "-i", f"https://127.0.0.1:{r.port}/webman/index.cgi")
        assert out.returncode == 0, out.stderr
        assert f"SSL connection using TLSv{version}".encode() in out.stderr
        assert out.stdout.startswith(b"HTTP/1.1 200 OK") and b"Server: Apache\r\n" in out.stdout
        assert b"ALPN: server accepted http/1.1" in out.stderr
    first, again = events(r, EventCode.HTTP_GET, 2)
    assert first.data["PATH"] == "/webman/index.cgi" and first.data["SKIN"] == "nas"
    assert first.data["USERAGENT"] == "Mozilla/5.0 probe"
    assert str(first.data["JA4"]).startswith(f"t1{version[-1]}i")  # no SNI to an address
    assert len(str(first.data["JA3"])) == 32 and first.data["ALPN"] == "h2,http/1.1"
    assert str(first.data["JA3_STRING"]).startswith("771,")
    assert (first.src_host, first.dst_port) == ("127.0.0.1", r.port)
    for key in ("JA3", "JA3_STRING", "JA4"):
        assert first.data[key] == again.data[key]


@pytest.mark.parametrize("skin", ["nas", "router", "basic"])
def test_a_login_on_each_skin_is_recorded_with_the_fingerprint(serve, skin):
    r = serve(skin=skin)
    base = f"https://127.0.0.1:{r.port}"
    page = curl(r, "1.3", "-i", f"{base}/")
    if skin == "basic":
        assert page.stdout.startswith(b"HTTP/1.1 401 Unauthorized")
        assert b'WWW-Authenticate: Basic realm="Intranet"' in page.stdout
        curl(r, "1.2", "-u", "svc_web:Intranet#1", f"{base}/")
        expected = ("svc_web", "Intranet#1", "/")
    else:
        assert b'name="password"' in page.stdout
        out = curl(r, "1.2", "-d", "username=admin&password=p%40ss", f"{base}/cgi-bin/login")
        assert b"incorrect" in out.stdout
        expected = ("admin", "p@ss", "/cgi-bin/login")
    (login,) = events(r, EventCode.HTTP_POST_LOGIN, 1)
    assert (login.data["USERNAME"], login.data["PASSWORD"], login.data["PATH"]) == expected
    assert login.data["SKIN"] == skin and str(login.data["JA4"]).startswith("t12i")


def test_the_client_sees_the_configured_certificate_subject(serve):
    r = serve(cert_subject=(("CN", "nas01.corp.example"), ("O", "Synology Inc."), ("C", "TW")))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", r.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="nas01.corp.example") as tls:
        der = tls.getpeercert(binary_form=True)
        assert tls.version() == "TLSv1.3"
        tls.sendall(b"GET /favicon.ico HTTP/1.1\r\nHost: nas01\r\nConnection: close\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 200 OK")
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.rfc4514_string() == "C=TW,O=Synology Inc.,CN=nas01.corp.example"
    assert cert.issuer == cert.subject
    (get,) = events(r, EventCode.HTTP_GET, 1)
    assert get.data["SNI"] == "nas01.corp.example" and str(get.data["JA4"]).startswith("t13d")
    out = subprocess.run([tool("openssl"), "s_client", "-connect", f"127.0.0.1:{r.port}"],
                         input=b"", capture_output=True, timeout=30, check=False)
    assert b"subject=CN = nas01.corp.example, O = Synology Inc., C = TW" in out.stdout


# --- attacker bytes on the TLS port -------------------------------------------------------------


def evil_names(hello: bytes) -> bytes:
    """The golden hello with invalid UTF-8 and an escape sequence as SNI and ALPN (same sizes)."""
    name = b"\xff\xfe\xc3(\x1b[2J\xe2\x80\xae" + b"a" * 16 + b"\x00"
    assert len(name) == len(b"contile.services.mozilla.com")
    return hello.replace(b"contile.services.mozilla.com", name).replace(b"\x02h2", b"\x02\xc3(")


def test_attacker_bytes_leave_an_event_each_and_curl_still_gets_in(serve):
    r = serve()
    rng = random.Random(443)
    throw(r.port, [
        bytes(rng.randrange(256) for _ in range(3000)).replace(b"\x16", b"\x17", 1),
        b"\x00" * 10,
        FIREFOX[:300],  # a truncated ClientHello, then the client gives up
        b"\x16\x03\x01\xff\xff" + b"\x01" * 1000,  # a record longer than TLS allows
        evil_names(FIREFOX)])
    slow = connect(r.port)  # dribbles the first bytes of a hello, then stalls
    slow.sendall(FIREFOX[:3])
    ok = curl(r, "1.3", "-u", "honest:pw", f"https://127.0.0.1:{r.port}/")
    assert ok.returncode == 0, ok.stderr
    assert closed_within(slow, 6) <= 6  # cut at the guard's time limit (3 s here)
    slow.close()
    login = r.wait_for(lambda e: e.data.get("USERNAME") == "honest")
    assert login.data["PASSWORD"] == "pw" and "JA4" in login.data
    failed = events(r, EventCode.HTTP_UNIMPLEMENTED_METHOD, 6)
    reasons = [str(e.data["TLS_ERROR"]) for e in failed]
    assert reasons[:2] == ["not TLS", "not TLS"], reasons
    assert failed[1].data["SEEN_HEX"] == "00" * 10 and failed[1].data["METHOD"] == ""
    assert failed[2].data["TLS_UNPARSED"] == "ClientHello incomplete"
    assert str(failed[2].data["TLS_ERROR"]).startswith("handshake failed")
    assert "record length 65535" in str(failed[3].data["TLS_UNPARSED"])
    evil = failed[4].data
    assert str(evil["SNI"]).startswith("\ufffd\ufffd\ufffd(\\x1b[2J\\u202e") and evil["JA3"]
    assert evil["ALPN"] == "\ufffd(,http/1.1" and str(evil["JA4"])[8:10] == "c8"
    assert "connection time limit" in reasons
    for e in r.sink.events:  # everything recorded is text a console can show as it is
        for value in e.data.values():
            assert isinstance(value, int) or value.isprintable(), e


def test_plain_http_on_the_tls_port_gets_nginx_answer_and_is_recorded(serve):
    r = serve()
    with connect(r.port) as s:
        s.sendall(b"GET /admin HTTP/1.1\r\nHost: nas\r\nUser-Agent: zgrab/0.x\r\n\r\n")
        reply = s.recv(1000)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n")
    assert b"The plain HTTP request was sent to HTTPS port" in reply
    (ev,) = events(r, EventCode.HTTP_UNIMPLEMENTED_METHOD, 1)
    assert {k: ev.data[k] for k in ("METHOD", "PATH", "HOSTNAME", "USERAGENT", "TLS_ERROR")} == {
        "METHOD": "GET", "PATH": "/admin", "HOSTNAME": "nas", "USERAGENT": "zgrab/0.x",
        "TLS_ERROR": "not TLS"}
