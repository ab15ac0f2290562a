"""What the device exposes: its listening sockets (/proc/self/net) and its network interfaces.

A canary must listen only where a honeypot service listens: anything else (a resolver answering
LLMNR, a debug service, something an intruder left behind) tells an attacker what the box is or
that it was tampered with.  The agent reads the network namespace's socket tables, keeps the
listeners that are reachable from the network (not loopback), and reports them as an event at
start and whenever they change, so the console shows what the device exposes.  Likewise the
network interfaces (/sys/class/net): the device uses exactly one, and a second one (a USB
adapter someone plugged in) is kept down by systemd-networkd and shows up here.
"""

from __future__ import annotations

import fcntl
import ipaddress
import re
import socket
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

from firmware.shared.readfile import read_bounded

TCP_LISTEN = "0A"
TABLES = {"tcp": "TCP", "tcp6": "TCP", "udp": "UDP", "udp6": "UDP"}
PROC_NET = Path("/proc/self/net")
SYS_NET = Path("/sys/class/net")
IFF_UP = 0x1
MAX_INTERFACES = 32
SIOCGIFADDR = 0x8915
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def parse_table(text: str, proto: str) -> set[int]:
    """Ports listened on from one /proc/net table, loopback-only sockets left out."""
    ports: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[1]:
            continue
        address, _, port = fields[1].rpartition(":")
        if proto == "TCP" and fields[3] != TCP_LISTEN:
            continue
        if proto == "UDP" and fields[2].rpartition(":")[2] != "0000":
            continue  # a connected UDP socket (a client), not a listener
        if _loopback(address):
            continue
        ports.add(int(port, 16))
    return ports


def _loopback(hex_address: str) -> bool:
    try:
        raw = bytes.fromhex(hex_address)
    except ValueError:
        return False
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1]).is_loopback
    if len(raw) == 16:  # four little-endian 32-bit words
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = ipaddress.IPv6Address(words)
        return ip.is_loopback or (ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)
    return False


def listeners(tables: Mapping[str, str]) -> dict[str, str]:
    """{"TCP": "22", "UDP": "68"}-style summary from table name -> contents."""
    found: dict[str, set[int]] = {"TCP": set(), "UDP": set()}
    for name, text in tables.items():
        proto = TABLES.get(name)
        if proto:
            found[proto] |= parse_table(text, proto)
    return {proto: " ".join(str(p) for p in sorted(ports)) for proto, ports in found.items()}


def read_listeners(proc_net: Path = PROC_NET) -> dict[str, str]:
    """The device's network listeners now (tables that cannot be read count as empty)."""
    tables = {}
    for name in TABLES:
        try:
            tables[name] = (proc_net / name).read_text()
        except OSError:
            continue
    return listeners(tables)


def ipv4_address(name: str) -> str | None:
    """The interface's IPv4 address (SIOCGIFADDR), None when it has none: a new MAC address
    usually means a new DHCP lease, and the operator must know where the canary now is."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR,
                                 struct.pack("256s", name.encode("ascii", "replace")[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(packed[20:24])


def read_interfaces(sys_net: Path = SYS_NET,
                    address_of: Callable[[str], str | None] = ipv4_address) -> dict[str, str]:
    """{"NAMES": "eth0 eth1", "UP": "eth0", "MAC": "eth0=70:10:5c:.. eth1=..", "IPV4":
    "eth0=192.0.2.7"}: the interfaces but loopback, those up, their hardware addresses (what
    the LAN sees: a personality's vendor prefix, or a USB adapter's own) and IPv4 addresses
    (``address_of``: this machine's, by default)."""
    try:
        names = sorted(p.name for p in sys_net.iterdir() if p.name != "lo")[:MAX_INTERFACES]
    except OSError:
        names = []
    up, macs, ipv4 = [], [], []
    for name in names:
        mac = read_bounded(sys_net / name / "address", 64).decode("ascii", "replace").strip()
        if MAC.fullmatch(mac):
            macs.append(f"{name}={mac}")
        address = address_of(name)
        if address:
            ipv4.append(f"{name}={address}")
        try:
            flags = int((sys_net / name / "flags").read_text().strip(), 16)
        except (OSError, ValueError):
            continue
        if flags & IFF_UP:
            up.append(name)
    return {"NAMES": " ".join(names), "UP": " ".join(up), "MAC": " ".join(macs),
            "IPV4": " ".join(ipv4)}

