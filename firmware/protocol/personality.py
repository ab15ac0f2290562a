"""Personalities: one setting that makes the whole device look like one kind of machine.

An intruder who finds a "file server" whose MAC address says Raspberry Pi, whose packets leave
with Linux's TTL of 64 while its RDP says Windows, or whose SSH banner says Debian beside a
Synology login page, has found the canary.  So the parts that give a machine away are chosen
together here, per kind of machine: which honeypots run on which ports, what each says first
(banners, versions, prompts, the web server's name, certificate subjects, the SMB server's
names), the host name, the network card's vendor prefix (the rest of the MAC address comes from
the device's id, so two canaries of one personality never share an address), the DHCP host
name and vendor class (option 60), and the IP TTL.  Each claims a current product: what such a
machine shows today, never a honeypot's default or a decade-old version; the tests run
``nmap -sV`` against each personality's services and hold it to its claim (``NMAP``).

``device.personality`` in the signed settings picks one; every other setting still wins over
it, so an operator can move a port or rename the host and keep the rest.  Pure data and pure
functions, shared by the console (to validate) and the device's applier (to put it in effect).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LINUX_TTL = 64  # what the device's kernel uses when no personality says otherwise


@dataclass(frozen=True)
class Personality:
    claims: str  # what it says it is, for people
    settings: Mapping[str, Any]  # dotted settings keys (and the services' own keys)
    oui: str  # the network card's vendor prefix, "aa:bb:cc"
    vendor_class: str  # DHCP option 60 ("" sends none, as most Linux clients do)
    ttl: int
    nmap: Mapping[str, str]  # service -> what nmap -sV says of it (held by the tests)


PERSONALITIES: dict[str, Personality] = {
    "windows-file-server": Personality(
        claims="Windows Server 2022 file server on a Dell PowerEdge",
        settings={
            "device.hostname": "fs01",
            "services.ssh.enabled": False,
            "services.smb.enabled": True, "services.smb.port": 445,
            "services.smb.server_name": "FS01", "services.smb.domain": "CORP",
            "services.rdp.enabled": True, "services.rdp.port": 3389,
        },
        oui="d8:9e:f3",  # Dell
        vendor_class="MSFT 5.0",  # what every Windows since 2000 sends
        ttl=128,
        nmap={"smb": "microsoft-ds", "rdp": "ms-wbt-server Microsoft Terminal Services"},
    ),
    "synology-nas": Personality(
        claims="Synology DiskStation on DSM 7.2",
        settings={
            "device.hostname": "diskstation",
            "services.ssh.enabled": True, "services.ssh.port": 22,
            "services.ssh.version": "SSH-2.0-OpenSSH_8.2",  # DSM 7.2's sshd says no more
            "services.http.enabled": True, "services.http.port": 5000,
            "services.http.skin": "nas", "services.http.banner": "nginx",
            "services.https.enabled": True, "services.https.port": 5001,
            "services.https.skin": "nas", "services.https.banner": "nginx",
            "services.https.cert_subject": "CN=synology,O=Synology Inc.,L=Taipei,C=TW",
            "services.ftp.enabled": True, "services.ftp.port": 21,
            "services.ftp.banner": "220 DiskStation FTP server ready.",
            "services.smb.enabled": True, "services.smb.port": 445,
            "services.smb.server_name": "DISKSTATION", "services.smb.domain": "WORKGROUP",
        },
        oui="90:09:d0",  # Synology
        vendor_class="",
        ttl=64,
        nmap={"ssh": "OpenSSH 8.2 (protocol 2.0)", "http": "nginx", "https": "nginx",
              "ftp": "Synology DiskStation NAS ftpd", "smb": "microsoft-ds"},
    ),
    "cisco-router": Personality(
        claims="Cisco ISR router on IOS XE, its web server off as hardening guides say",
        settings={
            "device.hostname": "rtr-edge01",
            "services.ssh.enabled": True, "services.ssh.port": 22,
            "services.ssh.version": "SSH-2.0-Cisco-1.25",
            "services.telnet.enabled": True, "services.telnet.port": 23,
            "services.telnet.banner": "\nUser Access Verification",
            "services.telnet.prompt": "Username: ",
        },
        oui="70:10:5c",  # Cisco Systems
        vendor_class="ciscopnp",  # IOS XE's Plug and Play agent
        ttl=255,
        nmap={"ssh": "Cisco SSH 1.25 (protocol 2.0)", "telnet": "Cisco router telnetd"},
    ),
}


def expand(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with its personality's settings under them (explicit settings win)."""
    chosen = PERSONALITIES.get(values.get("device.personality", ""))
    return {**(chosen.settings if chosen else {}), **values}


def mac_address(oui: str, device_id: bytes) -> str:
    """The vendor's prefix and three bytes of a hash of the device id: stable for one device,
    different between devices (2^24 suffixes: a hundred canaries of one personality on one
    network clash with a chance of 1 in 3,300)."""
    tail = hashlib.sha256(b"coalmine mac\x00" + device_id).digest()[:3]
    return oui + ":" + tail.hex(":")
