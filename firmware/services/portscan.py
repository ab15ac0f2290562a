"""The port-scan detector: nmap's SYN, NULL, FIN and XMAS scans and its OS-detection probes.

A scan is usually the first thing an intruder does on a new network, long before they log in
anywhere, so a canary that notices it raises the alarm earliest.  No honeypot port sees a scan
(a SYN scan never completes a handshake; NULL, FIN and XMAS probes are not connections at all),
so this service reads the packets sent to the device itself: one ``AF_PACKET`` socket (the unit
holds ``CAP_NET_RAW`` and nothing else), cooked (``SOCK_DGRAM``: the network header first, the
same on Ethernet, Wi-Fi and loopback), with a classic BPF program attached that lets through
only IPv4/IPv6 TCP addressed to this host (``PACKET_HOST``: never what the device sends) that
can be a probe (no ACK, so no connection's traffic after its SYN, or one of the two ACK windows
nmap's OS probes use), and only the first ``SNAP`` bytes of each (headers, no payload).  What
the kernel drops because the detector fell behind (a flood) goes out as ``DROPPED``.  Scapy
dissects the packets (IPv4, IPv6 with extension headers, TCP options): it is imported when the
service starts, never when the module is imported, because every service process imports every
service module (``discover``) and scapy's layers cost ~46 MB resident.  The filter is assembled
here rather than compiled by scapy, which would need libpcap or tcpdump on the device.

What is a probe and how probes become events is :mod:`firmware.services.scanwire` (pure).
Here: listening ports are read from ``/proc/self/net/tcp`` and ``tcp6`` (this network
namespace, at most once a second): that is the truth, sockets systemd holds included, where the
configured services could disagree with what really listens.  Events carry the packet's source
address as ``src_host`` (``PacketEnds``: the base fills addresses from it as from a socket).

Attacker bytes are data: a frame that does not dissect costs that frame only.  The socket failing
(an interface that went away) is fatal: ``serve_until`` raises, the process exits non-zero and
systemd restarts it, so a dead sniffer is never a silent one.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from firmware.config import DeviceConfig
from firmware.eventpath import EventSink
from firmware.protocol.catalogue import EventCode
from firmware.services.base import Service
from firmware.services.scanwire import (
    PROMPT,
    Kind,
    Report,
    ScanTable,
    Segment,
    classify,
    parse_listening,
)
from firmware.shared.errors import EnvironmentFault

log = logging.getLogger(__name__)

ETH_P_ALL, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0800, 0x86DD
PACKET_HOST = 0  # sll_pkttype of a packet addressed to this host
SO_ATTACH_FILTER = 26
SOL_PACKET, PACKET_STATISTICS = 263, 6
SNAP = 256  # bytes kept of each packet: IPv6 + extension headers + a TCP header with options
READ_BURST = 256  # packets read per wake-up before other work gets a turn
PROC_TCP = (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6"))

class Listening:
    """Which ports listen here, re-read at most once per ``every`` seconds."""

    def __init__(self, paths: tuple[Path, ...] = PROC_TCP, every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths, self.every, self.clock = paths, every, clock
        self.read_at = -every
        self.ports: set[tuple[str, int]] = set()

    def refresh(self) -> None:
        ports: set[tuple[str, int]] = set()
        for path in self.paths:
            try:
                ports |= parse_listening(path.read_text())
            except FileNotFoundError:  # no IPv6 in this kernel
                continue
            except (OSError, ValueError) as exc:
                raise EnvironmentFault(
                    f"portscan: cannot read the listening ports in {path}: {exc}",
                    hint="the unit must not hide /proc/self/net") from None
        self.ports, self.read_at = ports, self.clock()

    def __call__(self, host: str, port: int) -> bool:
        if self.clock() - self.read_at >= self.every:
            self.refresh()
        wild = "::" if ":" in host else "0.0.0.0"
        return any(p in self.ports for p in ((host, port), (wild, port), ("::", port)))


# --- the packet socket ----------------------------------------------------------------------


# classic BPF opcodes (linux/filter.h)
LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_H_IND, LD_B_IND, LDX_B_MSH = 0x20, 0x28, 0x30, 0x48, 0x50, 0xB1
JEQ, JSET, RET = 0x15, 0x45, 0x06
SKF_AD = -0x1000 & 0xFFFFFFFF  # ancillary data: SKF_AD_PROTOCOL at +0, SKF_AD_PKTTYPE at +4
ACK_WINDOWS = (1024, 32768)  # nmap's T4 and T6: the only probes that carry ACK


def bpf_program() -> list[tuple[int, int, int, int]]:
    """Classic BPF, ``(code, jt, jf, k)`` with the data at the network header: TCP to this host
    that can be a probe, the first ``SNAP`` bytes of it.  Every segment of a connection after
    its SYN carries ACK, so the kernel drops those (all but nmap's T4 and T6 windows) and the
    detector never spends time on a download; IPv4 fragments after the first carry no TCP header
    and are dropped too; IPv6 behind extension headers is left to the dissector."""
    prog: list[tuple[int, int, int, int | str]] = []

    def op(code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        prog.append((code, jt, jf, k))  # type: ignore[arg-type]

    def label(name: str) -> None:
        prog.append((-1, 0, 0, name))

    op(LD_W_ABS, SKF_AD + 4)
    op(JEQ, PACKET_HOST, 0, "drop")
    op(LD_H_ABS, SKF_AD)
    op(JEQ, ETH_P_IP, 0, "v6")
    op(LD_B_ABS, 9)  # IPv4: protocol
    op(JEQ, 6, 0, "drop")
    op(LD_H_ABS, 6)  # fragment offset
    op(JSET, 0x1FFF, "drop", 0)
    op(LDX_B_MSH, 0)  # x = the IPv4 header's length
    op(LD_B_IND, 13)  # TCP flags
    op(JSET, 0x10, 0, "accept")  # no ACK: a candidate
    op(LD_H_IND, 14)  # TCP window
    op(JEQ, ACK_WINDOWS[0], "accept", 0)
    op(JEQ, ACK_WINDOWS[1], "accept", "drop")
    label("v6")
    op(JEQ, ETH_P_IPV6, 0, "drop")
    op(LD_B_ABS, 6)  # IPv6: next header
    op(JEQ, 6, "tcp6", 0)
    for ext in (0, 43, 44):  # hop-by-hop, routing, fragment (and destination options)
        op(JEQ, ext, "accept", 0)
    op(JEQ, 60, "accept", "drop")
    label("tcp6")
    op(LD_B_ABS, 40 + 13)
    op(JSET, 0x10, 0, "accept")
    op(LD_H_ABS, 40 + 14)
    op(JEQ, ACK_WINDOWS[0], "accept", 0)
    op(JEQ, ACK_WINDOWS[1], "accept", "drop")
    label("accept")
    op(RET, SNAP)
    label("drop")
    op(RET, 0)
    return _resolve(prog)


def _resolve(prog: list[tuple[int, int, int, int | str]]) -> list[tuple[int, int, int, int]]:
    """Labels (``(-1, 0, 0, name)``) taken out, jump targets by name turned into offsets."""
    where: dict[str, int] = {}
    out: list[tuple[int, int | str, int | str, int]] = []
    for code, jt, jf, k in prog:
        if code == -1:
            where[str(k)] = len(out)
        else:
            out.append((code, jt, jf, int(k)))

    def offset(i: int, target: int | str) -> int:
        return target if isinstance(target, int) else where[target] - i - 1

    return [(code, offset(i, jt), offset(i, jf), k) for i, (code, jt, jf, k) in enumerate(out)]


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """``SO_ATTACH_FILTER`` with ``program`` (struct sock_fprog: a length and a pointer)."""
    insns = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(insns)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("@HP", len(program), ctypes.addressof(buf)))


def open_sockets(interfaces: tuple[str, ...]) -> list[socket.socket]:
    """One filtered packet socket per interface (one for all when ``interfaces`` is empty)."""
    socks: list[socket.socket] = []
    try:
        for name in interfaces or ("",):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            socks.append(sock)
            attach_filter(sock, bpf_program())
            if name:
                sock.bind((name, ETH_P_ALL))
            sock.setblocking(False)
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise EnvironmentFault(
            f"portscan: cannot open a packet socket{' on ' + name if name else ''}: "
            f"{exc.strerror or exc}",
            hint="the detector needs CAP_NET_RAW (AmbientCapabilities= in its unit) and the "
                 "interfaces named in [services.portscan] interfaces") from None
    return socks


Decoder = Callable[[bytes, int], Segment | None]


def make_decoder() -> Decoder:
    """A scapy dissector for cooked packets (imported here: see the module's docstring)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Packet

    logging.getLogger("scapy").setLevel(logging.ERROR)  # no warning per odd attacker packet

    def decode(data: bytes, protocol: int) -> Segment | None:
        pkt: Packet
        if protocol == ETH_P_IP:
            pkt = IP(data)
        elif protocol == ETH_P_IPV6:
            pkt = IPv6(data)
        else:
            return None
        tcp = pkt.getlayer(TCP)
        if tcp is None:  # a later fragment, a truncated header: nothing to classify
            return None
        options = tuple(str(name) for name, _ in tcp.options)
        return Segment(src=str(pkt.src), dst=str(pkt.dst), dport=int(tcp.dport),
                       flags=int(tcp.flags), window=int(tcp.window), options=options)

    return decode


@dataclass(frozen=True)
class PacketEnds:
    """The two ends of what a packet-based service saw, in the shape the base reads a socket's
    (``get_extra_info``): the packet's source, the local address and port it was sent to."""

    src: str
    dst: str
    dst_port: int

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.src, -1)  # many packets, many source ports: none of them
        if name == "sockname":
            return (self.dst, self.dst_port)
        return default


class PortScanDetector(Service):
    name = "portscan"
    default_port = 0  # it listens on no port
    event_codes = frozenset({EventCode.PORT_SYN, EventCode.NMAP_OS, EventCode.NMAP_NULL,
                             EventCode.NMAP_XMAS, EventCode.NMAP_FIN})
    codes: ClassVar[dict[Kind, EventCode]] = {
        Kind.SYN: EventCode.PORT_SYN, Kind.OS: EventCode.NMAP_OS, Kind.NULL: EventCode.NMAP_NULL,
        Kind.XMAS: EventCode.NMAP_XMAS, Kind.FIN: EventCode.NMAP_FIN}

    def __init__(self, cfg: DeviceConfig, sinks: Sequence[EventSink],
                 *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(cfg, sinks, clock=clock)
        self.monotonic = monotonic
        self.table = ScanTable(cfg.portscan.window, cfg.portscan.max_sources)
        self.listening = Listening()
        self.socks: list[socket.socket] = []
        self.decode: Decoder | None = None
        self.failed: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tick: asyncio.TimerHandle | None = None
        self.undecodable = 0  # packets that did not dissect
        self.dropped = 0  # by the kernel, not reported yet

    @classmethod
    def enabled(cls, cfg: DeviceConfig) -> bool:
        return cfg.portscan.enabled

    @property
    def port(self) -> int:
        return -1

    async def start(self) -> None:
        self.loop = loop = asyncio.get_running_loop()
        self.failed = loop.create_future()
        self.decode = make_decoder()
        self.listening.refresh()  # fail now, not at the first SYN, if /proc is hidden
        self.socks = open_sockets(self.cfg.portscan.interfaces)
        for sock in self.socks:
            loop.add_reader(sock.fileno(), self.readable, sock)
        log.info("portscan watching %s (window %g s, at most %d sources)",
                 ", ".join(self.cfg.portscan.interfaces) or "every interface",
                 self.cfg.portscan.window, self.cfg.portscan.max_sources)

    async def serve_until(self, stop: asyncio.Event) -> None:
        assert self.failed is not None, "start() first"
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({stopping, self.failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if self.failed.done():
            self.failed.result()  # raises what killed the sniffer

    async def stop(self) -> None:
        self.count_drops()
        self.close()
        self.report(self.table.flush())  # counts held are reported, not lost
        if self.failed is not None and self.failed.done() and not self.failed.cancelled():
            self.failed.exception()  # retrieved: serve_until raised it

    def close(self) -> None:
        if self.tick is not None:
            self.tick.cancel()
            self.tick = None
        if self.socks and self.loop is not None:
            for sock in self.socks:
                self.loop.remove_reader(sock.fileno())
                sock.close()
            self.socks = []

    # --- packets ---------------------------------------------------------------------------

    def readable(self, sock: socket.socket) -> None:
        """Read what waits on ``sock``; a socket error ends the service (systemd restarts it)."""
        for _ in range(READ_BURST):
            try:
                data, addr = sock.recvfrom(SNAP)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.fail(exc)
                return
            self.handle(data, addr)

    def fail(self, exc: OSError) -> None:
        log.error("portscan: the packet socket failed: %s", exc.strerror or exc)
        self.close()
        if self.failed is not None and not self.failed.done():
            self.failed.set_exception(EnvironmentFault(
                f"portscan: the packet socket failed: {errno.errorcode.get(exc.errno or 0, '')} "
                f"{exc.strerror or exc}".replace("  ", " "),
                hint="an interface it watches went down or away; systemd restarts the detector"))

    def handle(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """One packet as the socket gave it: counted if it is a probe, never raises."""
        if len(addr) < 3 or addr[2] != PACKET_HOST or self.decode is None:
            return
        try:
            seg = self.decode(data, int(addr[1]))
            found = classify(seg, self.listening) if seg is not None else None
        except EnvironmentFault as exc:
            self.fail(OSError(errno.EIO, exc.message))
            return
        except Exception:  # attacker bytes cost one packet, never the sniffer
            self.undecodable += 1
            if self.undecodable == 1 or self.undecodable % 1000 == 0:
                log.warning("portscan: %d packets could not be read", self.undecodable,
                            exc_info=self.undecodable == 1)
            return
        if seg is None or found is None:
            return
        self.table.add(self.monotonic(), found[0], found[1], seg)
        if self.tick is None and self.loop is not None:
            self.tick = self.loop.call_later(PROMPT / 4, self.on_tick)

    def on_tick(self) -> None:
        self.tick = None
        self.count_drops()
        self.report(self.table.due(self.monotonic()))
        if len(self.table) and self.loop is not None:
            self.tick = self.loop.call_later(PROMPT / 4, self.on_tick)

    def count_drops(self) -> None:
        """Packets the kernel dropped because the detector fell behind (a flood): they go out
        as ``DROPPED`` in the next event, so a flood that hides probes is not silent."""
        for sock in self.socks:
            try:
                _, drops = struct.unpack("=II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            except OSError:
                continue
            if drops:  # reading the statistics resets them
                log.warning("portscan: the kernel dropped %d packets (the detector fell behind)",
                            drops)
                self.dropped += drops

    def report(self, reports: list[Report]) -> None:
        for r in reports:
            data = r.logdata()
            if self.dropped:
                data["DROPPED"], self.dropped = self.dropped, 0
            self.emit(self.codes[r.kind], PacketEnds(r.src, r.dst, r.first_port), data)
