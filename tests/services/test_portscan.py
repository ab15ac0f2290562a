"""The port-scan detector: its classifier and table (scanwire) against scapy-crafted packets
(nmap's own probe layouts, IPv6, fragments, truncated and random bytes), its kernel filter on
loopback, then the real thing: nmap -sS, -sN, -sF, -sX, -O and a decoy scan from one network
namespace against the detector in another, run with what its unit allows (only CAP_NET_RAW, no
W+X memory, only AF_UNIX, AF_PACKET and AF_NETLINK sockets)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop

from firmware.config import PortScan, parse
from firmware.eventpath import decode_datagram
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.services.portscan import (
    ETH_P_IP,
    ETH_P_IPV6,
    PACKET_HOST,
    Listening,
    PortScanDetector,
    bpf_program,
    make_decoder,
)
from firmware.services.scanwire import (
    MAX_PORTS,
    OS_PROBES,
    Kind,
    Segment,
    classify,
    parse_listening,
)
from tests.services.conftest import MemorySink, make_config
from tests.services.netns import SCANNER_IP, SCANNER_IP6, TARGET_IP, TARGET_IP6, NetnsPair

REPO = Path(__file__).resolve().parents[2]
OPEN = 8080  # the one port that listens in the target namespace
decode = make_decoder()


def segment(pkt: IP | IPv6) -> Segment | None:
    return decode(bytes(pkt), ETH_P_IPV6 if isinstance(pkt, IPv6) else ETH_P_IP)


def closed(host: str, port: int) -> bool:
    return False


def kind_of(pkt: IP | IPv6, is_open: Callable[[str, int], bool] = closed
            ) -> tuple[Kind, str] | None:
    seg = segment(pkt)
    assert seg is not None, pkt
    return classify(seg, is_open)


# --- the classifier -----------------------------------------------------------------------------


def test_scan_flags_are_classified_and_ordinary_traffic_is_not():
    to = IP(src="198.51.100.7", dst="192.0.2.1")
    assert kind_of(to / TCP(dport=22, flags="")) == (Kind.NULL, "")
    assert kind_of(to / TCP(dport=22, flags="F")) == (Kind.FIN, "")
    assert kind_of(to / TCP(dport=22, flags="FPU")) == (Kind.XMAS, "")
    assert kind_of(to / TCP(dport=22, flags="S", options=[("MSS", 1460)])) == (Kind.SYN, "")
    assert kind_of(to / TCP(dport=22, flags="SEC")) == (Kind.SYN, "")  # an ECN-capable client
    assert kind_of(to / TCP(dport=22, flags="S"), lambda h, p: p == 22) is None  # a connection
    for flags in ("SA", "A", "FA", "R", "RA", "PA", "FPA"):  # the rest of a conversation
        assert kind_of(to / TCP(dport=22, flags=flags)) is None, flags


def test_every_nmap_os_probe_is_named_and_plain_scans_are_not_taken_for_one():
    for (flags, window, kinds), name in OS_PROBES.items():
        options = [(k, {"MSS": 1460, "WScale": 10, "Timestamp": (0xFFFFFFFF, 0),
                        "SAckOK": b""}.get(k)) for k in kinds]
        pkt = IP(dst="192.0.2.1") / TCP(dport=1, flags=flags, window=window, options=options)
        assert kind_of(pkt) == (Kind.OS, name), name
    # nmap -sX and -sS send no such options: they are XMAS and SYN, not T7 and T5
    assert kind_of(IP() / TCP(flags="FPU", window=65535)) == (Kind.XMAS, "")
    assert kind_of(IP() / TCP(flags="S", window=31337)) == (Kind.SYN, "")


def test_ipv6_extension_headers_and_fragments():
    six = IPv6(src="2001:db8::7", dst="2001:db8::1")
    seg = segment(six / IPv6ExtHdrHopByHop() / TCP(dport=445, flags=""))
    assert seg is not None and (seg.src, seg.dst, seg.dport) == ("2001:db8::7", "2001:db8::1", 445)
    assert classify(seg, closed) == (Kind.NULL, "")
    first = six / IPv6ExtHdrFragment(m=1, offset=0) / TCP(dport=23, flags="F")
    assert kind_of(first) == (Kind.FIN, "")
    later = six / IPv6ExtHdrFragment(m=0, offset=3) / bytes(TCP(dport=23, flags="F"))
    assert segment(later) is None
    v4_later = IP(dst="192.0.2.1", frag=2, proto=6) / bytes(TCP(flags=""))
    assert segment(v4_later) is None  # no TCP header in a later fragment: nothing to read
    tiny = bytes(IP(dst="192.0.2.1", flags="MF") / TCP(dport=80, flags="S"))[:28]
    assert segment(IP(tiny)) is None  # nmap -f: the first fragment has no flags in it


def test_listening_ports_are_read_from_proc(tmp_path):
    tcp = tmp_path / "tcp"
    tcp.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
        "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
        "   2: 0100007F:0050 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0\n")
    tcp6 = tmp_path / "tcp6"
    tcp6.write_text("  sl  local_address ...\n   0: 00000000000000000000000000000000:01BB "
                    "00000000000000000000000000000000:0000 0A 0\n")
    assert parse_listening(tcp.read_text()) == {("0.0.0.0", 22), ("127.0.0.1", 8080)}
    is_open = Listening((tcp, tcp6, tmp_path / "missing"))
    assert is_open("192.0.2.1", 22) and is_open("2001:db8::1", 443)
    assert is_open("192.0.2.1", 443)  # a dual-stack listener on ::
    assert is_open("127.0.0.1", 8080) and not is_open("192.0.2.1", 8080)
    assert not is_open("127.0.0.1", 80)  # an established connection is not a listener


def test_the_live_proc_table_is_readable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert Listening()("127.0.0.1", port)


# --- the table ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def detector(tmp_path):
    """A detector fed by hand (``handle``), its clock the test's, on a loop of its own."""
    clock = Clock()
    sink = MemorySink()
    cfg = dataclasses.replace(make_config(tmp_path),
                              portscan=PortScan(enabled=True, window=60.0, max_sources=4))
    det = PortScanDetector(cfg, [sink], monotonic=clock)
    det.decode = decode
    det.loop = loop = asyncio.new_event_loop()  # never run: the test ticks by hand

    def feed(*pkts: IP | IPv6, pkttype: int = PACKET_HOST) -> None:
        for pkt in pkts:
            proto = ETH_P_IPV6 if isinstance(pkt, IPv6) else ETH_P_IP
            det.handle(bytes(pkt), ("x", proto, pkttype))

    def tick(seconds: float) -> list[Event]:
        clock.now += seconds
        before = len(sink.events)
        det.on_tick()
        return sink.events[before:]

    det.listening = lambda host, port: port == 22  # type: ignore[assignment]
    yield det, feed, tick, sink
    loop.close()


def syn(src: str, port: int) -> IP:
    return IP(src=src, dst="192.0.2.1") / TCP(sport=40000, dport=port, flags="S")


def test_a_scan_is_reported_after_a_second_then_summed_once_when_its_window_ends(detector):
    det, feed, tick, _ = detector
    feed(*(syn("198.51.100.7", p) for p in (80, 443, 22, 80)))  # 22 listens: not a probe
    assert tick(0.5) == []
    (first,) = tick(0.6)
    assert first.code == EventCode.PORT_SYN
    assert (first.src_host, first.src_port, first.dst_host, first.dst_port) == (
        "198.51.100.7", -1, "192.0.2.1", 80)
    assert first.data == {"COUNT": 3, "WINDOW": 1, "PORTS": "80,443", "FIRST_PORT": 80}
    feed(*(syn("198.51.100.7", p) for p in range(1000, 1100)))
    assert tick(30) == []  # counted, not sent
    (whole,) = tick(30)
    assert whole.data["COUNT"] == 103 and whole.data["WINDOW"] == 60
    ports = str(whole.data["PORTS"]).split(",")
    assert ports[:3] == ["80", "443", "1000"] and ports[-1] == "..."
    assert len(ports) == MAX_PORTS + 1
    assert len(det.table) == 0  # the window is over: its bucket is gone
    feed(syn("198.51.100.7", 25))  # a new window, a new prompt report
    assert [e.data["COUNT"] for e in tick(1.1)] == [1]
    assert tick(60) == []  # nothing came after the prompt report: no second event


def test_each_kind_has_its_own_window_and_outgoing_packets_are_ignored(detector):
    _, feed, tick, _ = detector
    src = IP(src="198.51.100.7", dst="192.0.2.1")
    feed(src / TCP(dport=1, flags=""), src / TCP(dport=2, flags="F"),
         src / TCP(dport=3, flags="FPU"), src / TCP(dport=4, flags="S"))
    feed(src / TCP(dport=5, flags=""), pkttype=4)  # PACKET_OUTGOING: the device's own
    got = {e.code: e.data for e in tick(1.1)}
    assert set(got) == {EventCode.NMAP_NULL, EventCode.NMAP_FIN, EventCode.NMAP_XMAS,
                        EventCode.PORT_SYN}
    assert got[EventCode.NMAP_NULL] == {"COUNT": 1, "WINDOW": 1, "PORTS": "1", "FIRST_PORT": 1}
    t2 = src / TCP(dport=22, flags="", window=128, options=[
        ("WScale", 10), ("NOP", None), ("MSS", 265), ("Timestamp", (0xFFFFFFFF, 0)),
        ("SAckOK", b"")])
    feed(t2, t2)
    (os_event,) = tick(1.1)
    assert os_event.code == EventCode.NMAP_OS
    assert os_event.data == {"COUNT": 2, "WINDOW": 1, "PROBES": "T2"}


def test_the_source_table_is_bounded_and_the_overflow_still_reported(detector):
    det, feed, tick, _ = detector
    sources = [f"203.0.113.{i}" for i in range(1, 31)]
    for src in sources:
        feed(syn(src, 80), syn(src, 81))
    assert len(det.table.tracked()) == 4  # max_sources
    events = tick(1.1)
    tracked = [e for e in events if e.src_host]
    assert [e.src_host for e in tracked] == sources[:4]
    (rest,) = [e for e in events if not e.src_host]
    assert rest.data == {"COUNT": 52, "WINDOW": 1, "PORTS": "80,81", "FIRST_PORT": 80,
                         "SOURCES": 26}
    assert sum(int(e.data["COUNT"]) for e in events) == 60  # every packet counted once
    tick(60)
    assert len(det.table) == 0
    feed(syn("192.0.2.99", 80))  # windows over: room again
    assert [e.src_host for e in tick(1.1)] == ["192.0.2.99"]


def test_packets_the_kernel_dropped_go_out_with_the_next_event(detector):
    det, feed, tick, _ = detector
    det.dropped = 812  # as count_drops() found them (PACKET_STATISTICS)
    feed(syn("198.51.100.7", 80), syn("198.51.100.8", 80))
    first, second = tick(1.1)
    assert first.data["DROPPED"] == 812 and "DROPPED" not in second.data
    assert det.dropped == 0


def test_attacker_bytes_cost_one_packet_never_the_detector(detector):
    det, _, tick, sink = detector
    rng = random.Random(12)
    good = [bytes(IP(src="198.51.100.7", dst="192.0.2.1") / TCP(dport=7, flags="F",
                                                                options=[("MSS", 1)])),
            bytes(IPv6(src="2001:db8::7", dst="2001:db8::1") / IPv6ExtHdrHopByHop()
                  / TCP(dport=7, flags="F"))]
    junk = [g[:cut] for g in good for cut in range(len(g))]  # truncated anywhere
    junk += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
             for _ in range(300)]
    junk += [g[:-4] + b"\x08\xff\x01\x02" for g in good]  # a TCP option longer than the header
    junk += [bytes([0x4F]) + g[1:] for g in good[:1]]  # IHL 60 bytes in a 44-byte packet
    junk += [b"\x60" + bytes(39) + b"\x00\x00\xff" * 20]  # hop-by-hop chain, nonsense lengths
    for i, data in enumerate(junk):
        for proto in (ETH_P_IP, ETH_P_IPV6, 0x0806):
            det.handle(data, ("x", proto, PACKET_HOST))
        if i % 100 == 0:
            tick(0.3)
    det.handle(good[0], ("x", ETH_P_IP, PACKET_HOST))
    events = tick(61)
    assert any(e.src_host == "198.51.100.7" for e in events)
    for e in sink.events:  # whatever came in, what goes out is addresses and short text
        assert e.code in det.event_codes
        for value in e.data.values():
            assert isinstance(value, int) or value.isprintable()
        assert len(str(e.data.get("PORTS", ""))) <= MAX_PORTS * 6 + 4


# --- the packet socket, on loopback in this process ---------------------------------------------


def test_the_bpf_program_is_well_formed():
    prog = bpf_program()
    for i, (code, jt, jf, _) in enumerate(prog):
        if code & 0x07 == 0x05:  # a jump: both targets inside the program
            assert i + 1 + jt < len(prog) and i + 1 + jf < len(prog), i
    assert prog[-2:] == [(0x06, 0, 0, 256), (0x06, 0, 0, 0)]


def test_the_kernel_filter_passes_tcp_to_this_host_once_and_nothing_else(tmp_path):
    """On lo every packet passes twice (out, then in): the filter keeps the inbound copy; UDP
    and segments with ACK (a connection's, past its SYN) never reach the detector (the spy sees
    every packet the kernel passes); a SYN to a closed loopback port becomes an event."""
    sink = MemorySink()
    cfg = dataclasses.replace(make_config(tmp_path),
                              portscan=PortScan(enabled=True, interfaces=("lo",), window=5.0))
    det = PortScanDetector(cfg, [sink])
    seen: list[Segment | None] = []
    protocols: list[int] = []

    def spy(data: bytes, proto: int) -> Segment | None:
        protocols.append(proto)
        seg = decode(data, proto)
        seen.append(seg)
        return seg

    async def scenario() -> int:
        await det.start()
        det.decode = spy
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])  # bound, never listening: closed
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"x", ("127.0.0.1", port))
        with socket.socket() as c:
            assert c.connect_ex(("127.0.0.1", port)) != 0
        await asyncio.sleep(1.6)
        await det.stop()
        return port

    port = asyncio.run(scenario())
    assert set(protocols) <= {ETH_P_IP, ETH_P_IPV6}
    assert None not in seen  # nothing but TCP passed the filter (UDP dissects to None)
    for seg in seen:  # nothing of a connection after its SYN: all of that carries ACK
        assert seg is not None and (not seg.flags & 0x10 or seg.window in (1024, 32768)), seg
    syns = [s for s in seen if s is not None and s.dport == port and s.flags == 0x02]
    assert len(syns) == 1, seen  # the inbound copy only
    # other programs on this host use loopback too: their SYNs to closed ports count as well
    reports = [e for e in sink.events if e.src_host == "127.0.0.1"]
    assert reports and {e.code for e in reports} == {EventCode.PORT_SYN}, sink.events
    assert reports[0].data["WINDOW"] == 1 and int(reports[0].data["COUNT"]) >= 1


def test_a_missing_interface_is_an_error_that_names_the_fix(tmp_path):
    cfg = dataclasses.replace(make_config(tmp_path),
                              portscan=PortScan(enabled=True, interfaces=("cm-nonexist0",)))
    det = PortScanDetector(cfg, [MemorySink()])
    with pytest.raises(Exception, match="cannot open a packet socket on cm-nonexist0") as info:
        asyncio.run(det.start())
    assert "interfaces" in getattr(info.value, "hint", "")


def test_configuration():
    cfg = parse({"services": {"portscan": {"enabled": True, "interfaces": ["eth0", "wlan0"],
                                           "window": 30, "max_sources": 64}}})
    assert cfg.portscan == PortScan(True, ("eth0", "wlan0"), 30.0, 64)
    assert not parse({}).portscan.enabled
    with pytest.raises(Exception, match="interfaces") as info:
        parse({"services": {"portscan": {"interfaces": "eth0", "window": -1}}})
    assert "window: must be positive" in str(info.value)


# --- nmap from another namespace, against the detector as its unit runs it ----------------------


class Detector:
    """The detector as a process in the target namespace, sending to a socket of this test."""

    def __init__(self, pair: NetnsPair, **settings: object) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="coalmine-portscan-"))
        self.dir.chmod(0o755)
        sock_dir = self.dir / "run" / "portscan"
        sock_dir.mkdir(parents=True)
        (self.dir / "run").chmod(0o755)
        sock_dir.chmod(0o755)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(sock_dir / "events.sock"))
        (sock_dir / "events.sock").chmod(0o777)
        self.sock.setblocking(False)
        table = "".join(f"{k} = {v!r}\n".replace("'", '"').replace("(", "[").replace(")", "]")
                        .replace("True", "true") for k, v in settings.items())
        conf = self.dir / "device.toml"
        conf.write_text(f'[device]\nrun_dir = "{self.dir / "run"}"\n'
                        f'data_dir = "{self.dir / "data"}"\n'
                        f"[services.portscan]\nenabled = true\n{table}")
        self.log = self.dir / "stderr"
        # root's uid (the host's Python lives under /root, 0700), but no capability other
        # than CAP_NET_RAW, and uid 0 gains none back at exec (noroot)
        sandbox = [shutil.which("setpriv") or "setpriv", "--securebits=+noroot,+noroot_locked",
                   "--inh-caps=-all,+net_raw", "--ambient-caps=-all,+net_raw",
                   "--bounding-set=-all,+net_raw", "--",
                   sys.executable, "-m", "tests.services.sandbox", "AF_UNIX,AF_PACKET,AF_NETLINK",
                   "--", sys.executable]
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                pair.in_target(*sandbox, "-m", "firmware.services", "portscan", "--config",
                               str(conf)),
                cwd=REPO, stdout=err, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
        self.events: list[Event] = []
        self.wait(lambda: "portscan watching" in self.stderr(), 30, "the detector to start")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def poll(self) -> list[Event]:
        while True:
            try:
                self.events.append(decode_datagram(self.sock.recv(9000), 9000))
            except BlockingIOError:
                return self.events

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if cond():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"detector exited {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; events {self.events}\n"
                             f"{self.stderr()}")

    def of(self, code: EventCode, src: str = SCANNER_IP) -> list[Event]:
        return [e for e in self.poll() if e.code == code and e.src_host == src]

    def terminate(self) -> list[Event]:
        """SIGTERM, as systemd stops it; returns every event, those it sent as it stopped too."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.poll()

    def stop(self) -> None:
        self.terminate()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_the_sandbox_the_detector_runs_in_refuses_what_the_unit_refuses():
    """The restrictions below are real: without them the nmap tests would prove nothing."""
    probe = ("import mmap, socket\n"
             "for fam in (socket.AF_INET, socket.AF_INET6):\n"
             "    try:\n        socket.socket(fam)\n        print('socket allowed')\n"
             "    except OSError as e:\n        print(e.errno)\n"
             "try:\n    mmap.mmap(-1, 4096, prot=7)\n    print('W+X allowed')\n"
             "except OSError as e:\n    print(e.errno)\n"
             "socket.socket(socket.AF_UNIX).close()\n")
    out = subprocess.run([sys.executable, "-m", "tests.services.sandbox",
                          "AF_UNIX,AF_PACKET,AF_NETLINK", "--", sys.executable, "-c", probe],
                         cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.split() == ["97", "97", "13"], out  # EAFNOSUPPORT twice, EACCES


@pytest.fixture
def lan() -> Iterator[NetnsPair]:
    """The namespace pair with one open port (OPEN, IPv4 and IPv6) in the target."""
    with NetnsPair() as pair:
        server = subprocess.Popen(pair.in_target(
            sys.executable, "-c",
            "import socket, time\n"
            f"s = socket.create_server(('::', {OPEN}), family=socket.AF_INET6, "
            "dualstack_ipv6=True)\ntime.sleep(600)\n"))
        try:
            yield pair
        finally:
            server.kill()
            server.wait()


@pytest.fixture
def start_detector(lan: NetnsPair) -> Iterator[Callable[..., Detector]]:
    running: list[Detector] = []

    def _start(**settings: object) -> Detector:
        d = Detector(lan, **settings)
        running.append(d)
        return d

    yield _start
    for d in running:
        d.stop()


def one_window(events: list[Event]) -> tuple[Event, list[Event]]:
    """The prompt report of a window and what followed it (at most its sum)."""
    assert events, "no event"
    assert events[0].data["WINDOW"] == 1, events
    return events[0], events[1:]


def test_nmap_scans_each_arrive_once_per_source_kind_and_window(lan, start_detector):
    det = start_detector(window=4.0)
    ports = f"1-50,{OPEN}"
    for flag, code in (("-sS", EventCode.PORT_SYN), ("-sN", EventCode.NMAP_NULL),
                       ("-sF", EventCode.NMAP_FIN), ("-sX", EventCode.NMAP_XMAS)):
        out = lan.nmap(flag, "--max-retries", "1", "-p", ports, TARGET_IP)
        assert re.search(rf"{OPEN}/tcp\s+open", out) and "50 closed" in out, out
        det.wait(lambda c=code: len(det.of(c)) >= 1, 10, f"{code.name} prompt report")
        time.sleep(4.5)  # let the window close
        first, rest = one_window(det.of(code))
        assert len(rest) <= 1, det.of(code)
        total = int((rest[0] if rest else first).data["COUNT"])
        assert (first.dst_host, first.src_port) == (TARGET_IP, -1)
        shown = str(first.data["PORTS"]).split(",")
        assert shown[-1] == "..." and len(shown) == MAX_PORTS + 1
        assert int(first.data["FIRST_PORT"]) == first.dst_port
        if code == EventCode.PORT_SYN:  # a SYN to the open port is a connection, not a scan
            assert total == 50 and str(OPEN) not in shown, det.of(code)
        else:  # the open port stays silent: nmap asked it twice (--max-retries 1)
            assert total == 52, det.of(code)
    assert {e.code for e in det.poll()} == {EventCode.PORT_SYN, EventCode.NMAP_NULL,
                                            EventCode.NMAP_FIN, EventCode.NMAP_XMAS}
    before = len(det.poll())
    lan.nmap("-sS", "-p", str(OPEN), TARGET_IP)  # nothing but the open port: no event
    time.sleep(2)
    assert len(det.poll()) == before, det.events[before:]


def test_nmap_os_detection_is_named_probe_by_probe(lan, start_detector):
    det = start_detector(window=60.0)
    out = lan.nmap("-O", "-p", f"{OPEN},1-5", TARGET_IP)
    assert "OS" in out
    det.wait(lambda: bool(det.of(EventCode.NMAP_OS)), 10, "the OS probes")
    events = det.terminate()  # what the window still holds is reported as it stops
    assert det.proc.returncode == 0, det.stderr()
    probes = set().union(*(set(str(e.data["PROBES"]).split(",")) for e in events
                           if e.code == EventCode.NMAP_OS))
    assert probes == {"SEQ1", "SEQ2", "SEQ3", "SEQ4", "SEQ5", "SEQ6", "ECN", "T2", "T3", "T4",
                      "T5", "T6", "T7"}
    assert len([e for e in events if e.code == EventCode.NMAP_OS]) == 2  # prompt + sum
    # nmap's OS probes are not also reported as SYN, NULL or XMAS scans of the port
    assert not [e for e in events if e.code == EventCode.NMAP_NULL]


def test_a_table_filled_with_forged_sources_still_names_a_real_scanner(detector):
    det, feed, tick, _ = detector
    forged = [f"203.0.113.{i}" for i in range(1, 41)]
    feed(*(syn(src, 445) for src in forged))  # one spoofed SYN each: the table is full
    assert len(det.table.tracked()) == 4
    feed(*(syn("198.51.100.66", port) for port in range(100, 110)))  # the scanner comes later
    events = tick(1.1)
    (scan,) = [e for e in events if e.src_host == "198.51.100.66"]
    assert scan.data["COUNT"] == 10
    (rest,) = [e for e in events if not e.src_host]
    assert rest.data["SOURCES"] == 37 and rest.data["COUNT"] == 37  # forged, folded, counted
    assert sum(int(e.data["COUNT"]) for e in events) == 50  # every packet counted once
    tick(60)
    assert len(det.table) == 0 and not det.table.once


def test_ipv6_scans_are_seen_too(lan, start_detector):
    det = start_detector(window=60.0)
    lan.nmap("-6", "-sS", "-p", "20-30", TARGET_IP6)
    det.wait(lambda: bool(det.of(EventCode.PORT_SYN, SCANNER_IP6)), 10, "the IPv6 scan")
    (event,) = det.of(EventCode.PORT_SYN, SCANNER_IP6)
    assert event.dst_host == TARGET_IP6 and event.data["COUNT"] == 11


def test_decoys_fill_a_bounded_table_and_are_still_counted(lan, start_detector):
    det = start_detector(window=60.0, max_sources=5)
    lan.nmap("-sS", "-D", "RND:20", "-p", "1-10", TARGET_IP)
    det.wait(lambda: any(not e.src_host for e in det.poll()), 10, "the catch-all report")
    time.sleep(1.5)
    syn = [e for e in det.poll() if e.code == EventCode.PORT_SYN]
    tracked = [e for e in syn if e.src_host]
    (rest,) = [e for e in syn if not e.src_host]
    assert len({e.src_host for e in tracked}) == len(tracked) == 5  # max_sources
    # 21 senders (20 decoys and nmap), 5 tracked at the end; nmap sends one probe from each in
    # turn, so a sender of one packet so far may have made room for a later one
    assert 16 <= int(rest.data["SOURCES"]) <= 21
    assert sum(int(e.data["COUNT"]) for e in syn) == 21 * 10


def test_garbage_frames_never_stop_the_detector(lan, start_detector):
    det = start_detector(window=60.0)
    mac = lan.mac()
    rng = random.Random(7)
    frames = [bytes(rng.randrange(256) for _ in range(rng.randrange(20, 200)))
              for _ in range(200)]
    good = bytes(IP(src="198.51.100.9", dst=TARGET_IP) / TCP(dport=99, flags="FPU"))
    frames += [good[:cut] for cut in range(len(good))]
    frames += [bytes(IPv6(src="2001:db8::9", dst=TARGET_IP6) / IPv6ExtHdrFragment(offset=9)
                     / bytes(range(40)))]
    frames += [bytes(IP(dst=TARGET_IP, proto=6, ihl=15) / (b"\xff" * 10))]
    frames += [bytes(IP(dst=TARGET_IP) / UDP(dport=53) / (b"C" * 300))]
    script = (
        "import socket, sys, pickle\n"
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
        "s.bind((sys.argv[1], 0))\n"
        "for ethertype, body in pickle.load(sys.stdin.buffer):\n"
        "    s.send(DST + bytes(6) + ethertype.to_bytes(2, 'big') + body)\n")
    payload = [(et, f) for f in frames for et in (0x0800, 0x86DD)]
    payload.append((0x0800, good))  # and then one honest XMAS probe
    dst = bytes.fromhex(mac.replace(":", ""))
    subprocess.run(lan.in_scanner(sys.executable, "-c",
                                  script.replace("DST", repr(dst)), lan.scanner_if),
                   input=pickle.dumps(payload), check=True, timeout=30)
    det.wait(lambda: bool(det.of(EventCode.NMAP_XMAS, "198.51.100.9")), 10, "the honest probe")
    assert det.proc.poll() is None


def test_a_dead_packet_socket_ends_the_process_for_systemd_to_restart(lan, start_detector):
    det = start_detector(interfaces=(lan.target_if,))
    subprocess.run(["ip", "-n", lan.target, "link", "del", lan.target_if], check=True,
                   timeout=30)
    try:
        code = det.proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the detector kept running with a dead socket:\n{det.stderr()}")
    assert code == 69, det.stderr()  # EX_UNAVAILABLE: Restart=on-failure restarts it
    assert "error: portscan: the packet socket failed" in det.stderr()
    assert "ENETDOWN" in det.stderr()


# --- the unit -----------------------------------------------------------------------------------

UNIT = REPO / "overlay/usr/lib/systemd/system/coalmine-portscan.service"


def test_the_unit_holds_cap_net_raw_only_and_scores_at_most_1_5():
    fields: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            fields.setdefault(key, []).append(value)
    assert fields["CapabilityBoundingSet"] == fields["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert fields["User"] == ["coalmine-portscan"] and fields["IPAddressDeny"] == ["any"]
    assert fields["RestrictAddressFamilies"] == ["AF_PACKET AF_UNIX AF_NETLINK"]
    assert fields["MemoryDenyWriteExecute"] == ["yes"] and fields["MemoryMax"]
    assert "PrivateNetwork" not in fields and "WantedBy" not in fields  # off by default
    assert "ReadWritePaths" not in fields and fields["ProtectSystem"] == ["strict"]
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing"
    proc = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, check=False, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 1.5, proc.stdout
