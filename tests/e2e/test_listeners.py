"""End to end on loopback: lftp, curl, telnet, redis-cli, mariadb, vncdotool and FreeRDP -> the
FTP, HTTP, Telnet, Redis, MySQL, VNC and RDP honeypots -> agent -> unbound -> console; each
attempt arrives with its credentials, masked by default."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.lab import Lab


@pytest.fixture(scope="module")
def lab():
    with Lab(heartbeat=5, with_ssh=False,
             listeners=("ftp", "http", "telnet", "redis", "mysql", "vnc", "rdp")) as running:
        yield running


SERVICE_OF = {2000: "ftp", 3001: "http", 6001: "telnet", 17001: "redis"}


def client(*argv: str, stdin: bytes = b"") -> None:
    path = shutil.which(argv[0])
    assert path, f"{argv[0]} is missing: `make deps` installs it"
    subprocess.run([path, *argv[1:]], input=stdin, capture_output=True, timeout=30,
                   check=False)


def test_each_service_attempt_reaches_the_console_through_unbound(lab):
    ports = lab.listener_ports
    client("lftp", "-u", "ftpadmin,ftp-pw", "-e", "set ftp:ssl-allow no; ls; bye",
           f"ftp://127.0.0.1:{ports['ftp']}")
    client("curl", "-sS", "-d", "username=webadmin&password=http-pw",
           f"http://127.0.0.1:{ports['http']}/login")
    client("redis-cli", "-h", "127.0.0.1", "-p", str(ports["redis"]), "--no-auth-warning",
           "-a", "redis-pw", "KEYS", "*")
    proc = subprocess.Popen(["telnet", "127.0.0.1", str(ports["telnet"])],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None
        for line in (b"telnetadmin\n", b"telnet-pw\n"):
            time.sleep(0.5)  # a person at the prompt
            proc.stdin.write(line)
            proc.stdin.flush()
        expected = {2000: ("ftpadmin", "ftp-pw"), 3001: ("webadmin", "http-pw"),
                    6001: ("telnetadmin", "telnet-pw"), 17001: ("default", "redis-pw")}
        for code, (user, password) in expected.items():
            event = lab.wait_event(lambda e, c=code, u=user: e["logtype"] == c
                                   and e["logdata"].get("USERNAME") == u, timeout=30)
            assert event["logdata"]["PASSWORD"] == password
            assert event["node_id"] == "lab-device" and event["src_host"] == "127.0.0.1"
            assert event["dst_port"] == ports[SERVICE_OF[code]]
    finally:
        proc.kill()
        proc.wait()
    masked = [e for e in lab.events(show_passwords=False)
              if e["logtype"] in SERVICE_OF and "PASSWORD" in e["logdata"]]
    assert {e["logtype"] for e in masked} == set(SERVICE_OF)
    assert masked and all(e["logdata"]["PASSWORD"] == "********" for e in masked)
    keys = lab.wait_event(lambda e: e["logtype"] == 17001 and e["logdata"]["CMD"] == "KEYS")
    assert keys["logdata"]["ARGS"] == "*"


def test_mysql_and_vnc_attempts_reach_the_console_with_their_secrets_masked(lab):
    ports = lab.listener_ports
    client("mariadb", "-h", "127.0.0.1", "-P", str(ports["mysql"]), "-u", "dba", "-pdb-pw",
           "--connect-timeout=10", "-e", "SELECT 1")
    client(str(Path(sys.executable).parent / "vncdo"), "-s", f"127.0.0.1::{ports['vnc']}",
           "-p", "password", "key", "a")
    mysql = lab.wait_event(lambda e: e["logtype"] == 8001, timeout=30)
    assert mysql["logdata"]["USERNAME"] == "dba" and mysql["logdata"]["PASSWORD"] == "db-pw"
    vnc = lab.wait_event(lambda e: e["logtype"] == 12001, timeout=30)
    assert vnc["logdata"]["VNC_PASSWORD"] == "password" and vnc["dst_port"] == ports["vnc"]
    assert len(bytes.fromhex(vnc["logdata"]["VNC_CLIENT_RESPONSE"])) == 16
    shown = {e["logtype"]: e["logdata"] for e in lab.events(show_passwords=False)}
    assert shown[8001]["PASSWORD"] == "********"
    assert shown[12001]["VNC_CLIENT_RESPONSE"] == shown[12001]["VNC_PASSWORD"] == "********"
    assert shown[12001]["VNC_SERVER_CHALLENGE"] == vnc["logdata"]["VNC_SERVER_CHALLENGE"]


def test_an_rdp_login_reaches_the_console_with_its_ntlmv2_response_masked(lab):
    port = lab.listener_ports["rdp"]
    client("xvfb-run", "-a", "xfreerdp", "/auth-only", "/cert:ignore", f"/v:127.0.0.1:{port}",
           "/u:CORP\\rdpadmin", "/p:rdp-pw")
    rdp = lab.wait_event(lambda e: e["logtype"] == 14001, timeout=30)
    data = rdp["logdata"]
    assert (data["USERNAME"], data["USER"], data["DOMAIN"]) == ("rdpadmin", "rdpadmin", "CORP")
    assert data["NTLMV2_RESPONSE"].startswith("rdpadmin::CORP:") and len(data["JA3"]) == 32
    shown = [e["logdata"] for e in lab.events(show_passwords=False) if e["logtype"] == 14001]
    assert shown[0]["NTLMV2_RESPONSE"] == "********" and shown[0]["USER"] == "rdpadmin"
