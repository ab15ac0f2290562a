"""End to end on loopback: lftp, curl, telnet and redis-cli -> the FTP, HTTP, Telnet and Redis
honeypots -> agent -> unbound -> console; each attempt arrives with its credentials, masked by
default."""

import shutil
import subprocess
import time

import pytest

from scripts.lab import Lab


@pytest.fixture(scope="module")
def lab():
    with Lab(heartbeat=5, with_ssh=False, listeners=("ftp", "http", "telnet", "redis")) as running:
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
