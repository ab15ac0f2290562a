"""What the port-scan detector decides, without a socket: which packets are probes, and how
they become one event per source, kind and window.

The pure core of :mod:`firmware.services.portscan` (its shell reads the packets), tested with
scapy-crafted packets and a hand-turned clock.  ``classify`` names a probe: one of nmap's
OS-detection probes (its six SEQ SYNs, ECN, T2-T7: each has its own flags, window and TCP
option layout, from "TCP/IP Fingerprinting Methods Supported by Nmap" and checked against nmap
7.93's packets), no flags (NULL), a lone FIN, FIN+PSH+URG (XMAS), or a SYN without ACK to a
port nobody listens on (``parse_listening`` reads ``/proc/net/tcp{,6}``); anything else is
traffic, not a probe.

``ScanTable`` aggregates: per source address and kind, a window opens at the first probe; one
second later (``PROMPT``) a report covers that second, so a new scan reaches the console at
once; when the window closes one more report sums the whole window, if anything came after the
first.  At most ``max_sources`` sources are tracked; probes from further sources (decoys,
``nmap -D``, spoofed floods) are counted in one catch-all bucket per kind with an empty source
and the number of distinct sources in it: counted, never dropped.  A full table makes room for a
newcomer by moving the oldest source that has sent one packet only (a spoofed SYN's) into the
catch-all, so a table filled with forged sources does not hide a real scanner that comes later:
only a source that probes twice keeps its place.  A bucket keeps at most
``MAX_PORTS`` distinct ports (two bytes each) and a count, so memory is bounded whatever the
attacker sends.
"""

from __future__ import annotations

import array
import enum
import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_PORTS = 16  # distinct ports kept per bucket (the count goes on)
MAX_OVERFLOW_SOURCES = 1024  # distinct sources counted per catch-all bucket
PROMPT = 1.0  # seconds after a window opens: its first report

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = (1 << i for i in range(8))


class Kind(enum.Enum):
    """What a probe is (each has its event code: ``portscan.CODES``)."""

    SYN = "SYN"  # to a closed port
    OS = "OS"  # one of nmap's OS-detection probes
    NULL = "NULL"
    XMAS = "XMAS"
    FIN = "FIN"


_T = ("WScale", "NOP", "MSS", "Timestamp", "SAckOK")  # the options of nmap's T2-T7
# (flags, window, TCP option kinds) -> nmap's name for the probe
OS_PROBES: dict[tuple[int, int, tuple[str, ...]], str] = {
    (SYN, 1, _T): "SEQ1",
    (SYN, 63, ("MSS", "WScale", "SAckOK", "Timestamp", "EOL")): "SEQ2",
    (SYN, 4, ("Timestamp", "NOP", "NOP", "WScale", "NOP", "MSS")): "SEQ3",
    (SYN, 4, ("SAckOK", "Timestamp", "WScale", "EOL")): "SEQ4",
    (SYN, 16, ("MSS", "SAckOK", "Timestamp", "WScale", "EOL")): "SEQ5",
    (SYN, 512, ("MSS", "SAckOK", "Timestamp")): "SEQ6",
    (SYN | ECE | CWR, 3, ("WScale", "NOP", "MSS", "SAckOK", "NOP", "NOP")): "ECN",
    (0, 128, _T): "T2",
    (SYN | FIN | PSH | URG, 256, _T): "T3",
    (ACK, 1024, _T): "T4",
    (SYN, 31337, _T): "T5",
    (ACK, 32768, _T): "T6",
    (FIN | PSH | URG, 65535, _T): "T7",
}


@dataclass(frozen=True)
class Segment:
    """What the classifier needs of one TCP segment sent to the device."""

    src: str
    dst: str
    dport: int
    flags: int
    window: int
    options: tuple[str, ...] = ()


def classify(seg: Segment, is_open: Callable[[str, int], bool]) -> tuple[Kind, str] | None:
    """The kind of probe ``seg`` is (and nmap's name for an OS probe), or None: not a probe."""
    probe = OS_PROBES.get((seg.flags & 0xFF, seg.window, seg.options))
    if probe is not None:
        return Kind.OS, probe
    low = seg.flags & (FIN | SYN | RST | PSH | ACK | URG)
    if low == 0:
        return Kind.NULL, ""
    if low == FIN:
        return Kind.FIN, ""
    if low == FIN | PSH | URG:
        return Kind.XMAS, ""
    if low & (SYN | ACK | RST | FIN) == SYN and not is_open(seg.dst, seg.dport):
        return Kind.SYN, ""
    return None


# --- aggregation (pure) ---------------------------------------------------------------------


@dataclass
class Bucket:
    """One source's probes of one kind in one window (``src`` empty: the catch-all)."""

    kind: Kind
    src: str
    dst: str
    opened: float
    first_port: int
    count: int = 0
    ports: array.array[int] = field(default_factory=lambda: array.array("H"))
    more_ports: bool = False
    probes: set[str] = field(default_factory=set)  # nmap's probe names: a closed set
    sources: set[str] = field(default_factory=set)  # the catch-all's (MAX_OVERFLOW_SOURCES)
    reported: int = 0  # packets already reported (by the prompt report)
    prompted: bool = False

    def add(self, port: int, probe: str, src: str) -> None:
        self.count += 1
        if port not in self.ports:
            if len(self.ports) < MAX_PORTS:
                self.ports.append(port)
            else:
                self.more_ports = True
        if probe:
            self.probes.add(probe)
        if not self.src and len(self.sources) < MAX_OVERFLOW_SOURCES:
            self.sources.add(src)


@dataclass(frozen=True)
class Report:
    """One event's worth of a bucket: ``window`` is the seconds its count covers."""

    kind: Kind
    src: str
    dst: str
    first_port: int
    count: int
    window: int
    ports: str
    probes: str
    sources: int  # distinct sources in the catch-all, up to MAX_OVERFLOW_SOURCES

    def logdata(self) -> dict[str, str | bytes | int]:
        data: dict[str, str | bytes | int] = {"COUNT": self.count, "WINDOW": self.window}
        if self.kind is Kind.OS:
            data["PROBES"] = self.probes
        else:
            data |= {"PORTS": self.ports, "FIRST_PORT": self.first_port}
        if not self.src:
            data["SOURCES"] = self.sources
        return data


class ScanTable:
    """Buckets by source and kind, bounded to ``max_sources`` sources plus the catch-all."""

    def __init__(self, window: float, max_sources: int) -> None:
        self.window = window
        self.max_sources = max_sources
        self.buckets: dict[str, dict[Kind, Bucket]] = {}
        self.once: OrderedDict[str, None] = OrderedDict()  # sources of one packet, oldest first

    def __len__(self) -> int:
        return sum(len(kinds) for kinds in self.buckets.values())

    def add(self, now: float, kind: Kind, probe: str, seg: Segment) -> None:
        key = seg.src
        if key in self.buckets:
            self.once.pop(key, None)
        elif len(self.buckets) - ("" in self.buckets) >= self.max_sources:
            if self.once:  # room for the newcomer: the oldest one-packet source to the catch-all
                self._fold(now, self.once.popitem(last=False)[0])
                self.once[key] = None
            else:
                key = ""  # the table is full: the catch-all counts it
        else:
            self.once[key] = None
        self._bucket(now, key, kind, seg.dst, seg.dport).add(seg.dport, probe, seg.src)

    def _bucket(self, now: float, key: str, kind: Kind, dst: str, port: int) -> Bucket:
        kinds = self.buckets.setdefault(key, {})
        bucket = kinds.get(kind)
        if bucket is None:
            bucket = kinds[kind] = Bucket(kind, key, dst, now, port)
        return bucket

    def _fold(self, now: float, src: str) -> None:
        """A one-packet source's bucket into the catch-all (unless already reported)."""
        for kind, bucket in self.buckets.pop(src).items():
            if bucket.count > bucket.reported:
                self._bucket(now, "", kind, bucket.dst, bucket.first_port).add(
                    bucket.first_port, next(iter(bucket.probes), ""), src)

    def tracked(self) -> list[str]:
        return [src for src in self.buckets if src]

    def due(self, now: float) -> list[Report]:
        """Reports whose time has come: a window's first second, a closed window's sum."""
        out: list[Report] = []
        for src, kinds in list(self.buckets.items()):
            for kind, bucket in list(kinds.items()):
                if not bucket.prompted and now >= bucket.opened + PROMPT:
                    bucket.prompted = True
                    bucket.reported = bucket.count
                    out.append(_report(bucket, PROMPT))
                if now >= bucket.opened + self.window:
                    if bucket.count > bucket.reported:
                        out.append(_report(bucket, self.window))
                    del kinds[kind]
            if not kinds:
                del self.buckets[src]
                self.once.pop(src, None)
        return out

    def flush(self) -> list[Report]:
        """Everything still held, reported now (the service is stopping)."""
        out = [_report(b, self.window) for kinds in self.buckets.values()
               for b in kinds.values() if b.count > b.reported]
        self.buckets.clear()
        self.once.clear()
        return out


def _report(bucket: Bucket, window: float) -> Report:
    ports = ",".join(str(p) for p in bucket.ports) + (",..." if bucket.more_ports else "")
    return Report(bucket.kind, bucket.src, bucket.dst, bucket.first_port, bucket.count,
                  max(1, round(window)), ports, ",".join(sorted(bucket.probes)),
                  len(bucket.sources))


def parse_listening(text: str) -> set[tuple[str, int]]:
    """``(address, port)`` of every listening socket in a ``/proc/net/tcp{,6}`` table."""
    out: set[tuple[str, int]] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # TCP_LISTEN
            continue
        host, _, port = fields[1].partition(":")
        raw = bytes.fromhex(host)
        # the kernel prints each 32-bit word of the address in host byte order
        words = b"".join(struct.pack("=I", int.from_bytes(raw[i:i + 4], "big"))
                         for i in range(0, len(raw), 4))
        out.add((str(ipaddress.ip_address(words)), int(port, 16)))
    return out
