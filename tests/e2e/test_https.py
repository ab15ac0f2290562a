"""End to end on loopback: curl over TLS -> the HTTPS honeypot (its certificate made by
``--make-host-key`` first, as on the device) -> agent -> unbound -> console; the login arrives
with its credentials, masked by default, and the client's JA3 and JA4."""

import shutil
import subprocess

import pytest

from scripts.lab import Lab


@pytest.fixture(scope="module")
def lab():
    with Lab(heartbeat=5, with_ssh=False, listeners=("https",),
             service_settings={"https": {"cert_subject": "CN=diskstation,O=Synology Inc."}}
             ) as running:
        yield running


def test_an_https_login_reaches_the_console_with_the_client_fingerprint(lab):
    curl = shutil.which("curl")
    assert curl, "curl is missing: `make deps` installs it"
    port = lab.listener_ports["https"]
    out = subprocess.run([curl, "-sSkv", "--tlsv1.3", "-d", "username=nasadmin&password=tls-pw",
                          f"https://127.0.0.1:{port}/webman/login.cgi"],
                         capture_output=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert b"subject: CN=diskstation; O=Synology Inc." in out.stderr
    event = lab.wait_event(lambda e: e["logtype"] == 3001
                           and e["logdata"].get("USERNAME") == "nasadmin", timeout=30)
    data = event["logdata"]
    assert data["PASSWORD"] == "tls-pw" and data["PATH"] == "/webman/login.cgi"
    assert data["JA4"].startswith("t13i") and len(data["JA3"]) == 32
    assert data["JA3_STRING"].startswith("771,")
    assert event["node_id"] == "lab-device" and event["dst_port"] == port
    masked = [e for e in lab.events(show_passwords=False) if e["logtype"] == 3001]
    assert masked and all(e["logdata"]["PASSWORD"] == "********" for e in masked)
