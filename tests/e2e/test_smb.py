"""End to end on loopback: smbclient -> the SMB honeypot -> agent -> unbound -> console; a
refused login, the honey credential's login, its share and the file it copies arrive, the
NTLMv2 response masked by default."""

import subprocess

import pytest
from Crypto.Hash import MD4

from scripts.lab import Lab
from tests.services.test_listeners import tool

USER, PASSWORD = "svc_scan", "Copier-Tray-7"


@pytest.fixture(scope="module")
def lab():
    honey = {"honey_user": USER,
             "honey_nt_hash": MD4.new(PASSWORD.encode("utf-16-le")).hexdigest()}
    with Lab(heartbeat=5, with_ssh=False, listeners=("smb",),
             service_settings={"smb": honey}) as running:
        yield running


def smbclient(lab: Lab, user: str, commands: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("smbclient"), "//127.0.0.1/Documents", "-p",
                           str(lab.listener_ports["smb"]), "-U", user, "-c", commands],
                          capture_output=True, text=True, timeout=30, check=False)


def test_a_copied_file_and_the_logins_reach_the_console(lab):
    refused = smbclient(lab, "administrator%Summer2026", "ls")
    assert "NT_STATUS_LOGON_FAILURE" in refused.stdout + refused.stderr
    copied = smbclient(lab, f"{USER}%{PASSWORD}",
                       'get "Finance\\Payroll Q3 2026.xlsx" /dev/null')
    assert copied.returncode == 0, copied.stdout + copied.stderr
    opened = lab.wait_event(lambda e: e["logtype"] == 5000, timeout=30)
    assert opened["logdata"]["FILENAME"] == "Finance\\Payroll Q3 2026.xlsx"
    assert opened["logdata"]["USER"] == USER and opened["node_id"] == "lab-device"
    assert opened["dst_port"] == lab.listener_ports["smb"]
    lab.wait_event(lambda e: e["logtype"] == 5011 and e["logdata"]["SHARENAME"] == "Documents")
    logins = {e["logdata"]["USER"]: e for e in lab.events() if e["logtype"] == 5010}
    assert logins["administrator"]["logdata"]["RESULT"] == "refused"
    assert logins[USER]["logdata"]["RESULT"] == "honey"
    assert logins["administrator"]["logdata"]["NTLMV2_RESPONSE"].startswith("administrator::")
    masked = [e for e in lab.events(show_passwords=False) if e["logtype"] == 5010]
    assert masked and all(e["logdata"]["NTLMV2_RESPONSE"] == "********" for e in masked)
