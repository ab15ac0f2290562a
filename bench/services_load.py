"""Device runtime memory, idle and under a connection flood, in the shipped configuration.

Everything runs as the lab starts it (scripts/lab.py: console + unbound + the device runtime on
loopback, each service its own ``python3 -m firmware.services NAME`` process, the default
``[limits]``): the agent, the SSH honeypot, ftp, http, https, telnet, redis, mysql, vnc, rdp
and smb, and the port-scan detector when this machine lets it open a packet socket on ``lo``
(root; it is started like tests/e2e/test_portscan.py starts it, with a config layer enabling
it): eleven services.  A service that ``firmware.services.base.discover()`` does not have is
named and skipped.

1. Memory: VmRSS and VmHWM (/proc/PID/status) of every device process, and its Pss
   (/proc/PID/smaps_rollup: shared pages divided among the processes sharing them, so the Pss
   sum is what the runtime really holds; the VmRSS sum counts the shared interpreter pages once
   per process).  Measured once the processes have started, and again after each service has
   served one honest connection (OpenSSH + sshpass, smbclient with the honey credential, curl
   over HTTP and HTTPS, redis-cli, mariadb, FreeRDP's NLA login; a socket exchange for ftp,
   telnet and VNC; one SYN to a closed port for the detector)
   and its event has reached the console.  Beside them: the figures the issue quotes and, as
   the machine reference, the peak RSS of a bare ``python3 -c pass`` of the same interpreter
   (best of 3); the "x bare" column is each figure divided by it.
2. Flood: ``--connections`` (500) concurrent TCP connections each to the SSH and to the SMB
   honeypot, opened from ``--sources`` (199) loopback addresses 127.0.0.2 and up (bind()), so
   at most ceil(500/199) = 3 come from one address and the per-source cap (16) refuses none;
   the total cap (256 per service, by design) refuses the rest.  SSH connections read the
   banner and send a client version line, SMB ones send an SMB2 NEGOTIATE (2.0.2-3.0.2) and
   read the answer; then all hold for ``--hold`` seconds (under the 30 s connection limit).
   "Accepted" = the banner or the NEGOTIATE answer came, "refused" = the connection was reset
   or closed before it.  While they are held an honest OpenSSH login and an smbclient login
   from 127.0.0.1 are tried (their client's outcome, and whether their event reached the
   console), and again after the flood is released.  Printed: VmHWM of each process (peak up
   to then) during the hold and at the end, VmRSS after release; the console's counters
   (``console stats``) before the flood and once its events have drained: events stored,
   DNS queries answered, events stored per query; then the agent is stopped with SIGTERM (it
   flushes flood control's counts into its queue) and started again (it sends them), and the
   EVENTS_AGGREGATED (1114) events stored are counted.  py-ref (bench/_reference.py) is
   sampled during the flood as the reference for its few timings.

Figures, not a pass/fail test.  About 2 minutes.

Run: python3 -m bench.services_load [--connections 500] [--sources 199] [--hold 15]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import ROOT, Checkout, percentile, table
from bench._reference import Sampler
from console.store import Store
from firmware import config
from firmware.services import smbwire
from firmware.services.base import discover
from firmware.shared.cli import main_guard
from firmware.shared.errors import EnvironmentFault
from scripts.lab import HOST, Lab, free_port

# what the issue quotes, in MB as it wrote them
ISSUE_SSH_MB, ISSUE_AGENT_MB = 43, 31
OPENCANARY_MB, OPENCANARY_SERVICES = 67, 10
GOAL_MB, GOAL_SERVICES = 100, 10

LISTENERS = ("ftp", "http", "https", "telnet", "redis", "mysql", "vnc", "rdp", "smb")
WANTED = ("ssh", *LISTENERS, "portscan")  # the services this benchmark looks for
HONEY_USER, HONEY_PASSWORD = "bench_honey", "Bench-Honey-1"
HONEY_NT_HASH = "8a6433a4527f4dc9a822222b1b60a5fa"  # MD4(UTF-16LE(HONEY_PASSWORD))
SSH_CLIENT_VERSION = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
SMB_DIALECTS = (0x0202, 0x0210, 0x0300, 0x0302)
EVENTS_AGGREGATED, BOOT = 1114, 1000
SSH_LOGIN, SMB_LOGIN = 4002, 5010


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


# --- memory ------------------------------------------------------------------------------------


def memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon (status) and Pss (smaps_rollup) of ``pid``, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            out[key] = int(value.split()[0])
    with contextlib.suppress(OSError):
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
        if match:
            out["Pss"] = int(match.group(1))
    return out


def bare_python_kib(runs: int = 3, code: str = "") -> int:
    """Peak RSS (KiB) of a bare interpreter (this one), best of ``runs``.

    The child reports its own VmHWM as it ends (``-c`` printing /proc/self/status, nothing
    imported that ``pass`` does not import): a parent's ``ru_maxrss`` of the child would count
    the pages of this big process the child shared between fork and exec.
    """
    code += "print(open('/proc/self/status').read())"
    best = 0
    for _ in range(runs):
        text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=60, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
        match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
        kib = int(match.group(1)) if match else 0
        best = kib if not best else min(best, kib)
    return best


def snapshot(lab: Lab, names: list[str]) -> dict[str, dict[str, int]]:
    return {n: memory(lab.procs[n].pid) for n in names if n in lab.procs}


# --- honest connections ----------------------------------------------------------------------


def expect(sock: socket.socket, token: bytes, timeout: float = 10) -> bytes:
    """Read from ``sock`` until ``token`` has come (or the peer closed, or ``timeout``)."""
    sock.settimeout(timeout)
    got = b""
    while token not in got:
        data = sock.recv(4096)
        if not data:
            break
        got += data
    return got


def ftp_login(port: int, user: str) -> None:
    with socket.create_connection((HOST, port), timeout=10) as s:
        expect(s, b"220 ")
        s.sendall(f"USER {user}\r\n".encode())
        expect(s, b"331 ")
        s.sendall(b"PASS ftp-pw\r\n")
        expect(s, b"530 ")
        s.sendall(b"QUIT\r\n")
        expect(s, b"221 ")


def telnet_login(port: int, user: str) -> None:
    with socket.create_connection((HOST, port), timeout=10) as s:
        expect(s, b"login: ")
        s.sendall(user.encode() + b"\r\n")
        expect(s, b"Password: ")
        s.sendall(b"telnet-pw\r\n")
        expect(s, b"Login incorrect")


def vnc_login(port: int) -> None:
    """RFB 3.8 up to the refused answer (any 16 bytes: the password does not matter here)."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        expect(s, b"\n")
        s.sendall(b"RFB 003.008\n")
        expect(s, b"\x02")
        s.sendall(b"\x02")
        s.settimeout(10)
        s.recv(16, socket.MSG_WAITALL)
        s.sendall(bytes(16))
        expect(s, b"failed")


def smbclient(port: int, user: str, password: str, commands: str = "ls"
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("smbclient") or "smbclient", f"//{HOST}/Documents",
                           "-p", str(port), "-U", f"{user}%{password}", "-c", commands],
                          capture_output=True, text=True, timeout=40, check=False)


PROBE_SOURCE = "127.0.0.254"  # the detector's probe comes from an address of its own


def closed_port_syn() -> int:
    """One connection attempt to a closed loopback port (the detector's SYN), from
    PROBE_SOURCE: the detector watches all of ``lo``, other programs' loopback traffic too,
    and a source of its own gets a window (and a prompt report) of its own."""
    port = free_port()
    with socket.socket() as s, contextlib.suppress(OSError):
        s.settimeout(2)
        s.bind((PROBE_SOURCE, 0))
        s.connect((HOST, port))
    return port


Match = Callable[[dict[str, Any]], bool]


def serve_one(lab: Lab, name: str) -> Match:
    """Let ``name`` serve one honest connection; the match for the event it leads to."""
    user = f"bench-{name}"
    if name == "ssh":
        lab.ssh_attempt(user, "ssh-pw")
        return lambda e: e["logtype"] == SSH_LOGIN and e["logdata"].get("USERNAME") == user
    if name == "portscan":
        port = closed_port_syn()
        return lambda e: e["logtype"] == 5001 and e.get("src_host") == PROBE_SOURCE \
            and str(port) in str(e["logdata"].get("PORTS", "")).split(",")
    port = lab.listener_ports[name]
    if name == "ftp":
        ftp_login(port, user)
        return lambda e: e["logtype"] == 2000 and e["logdata"].get("USERNAME") == user
    if name == "telnet":
        telnet_login(port, user)
        return lambda e: e["logtype"] == 6001 and e["logdata"].get("USERNAME") == user
    if name in ("http", "https"):
        subprocess.run(["curl", "-sSk", "-o", "/dev/null", "-d",
                        f"username={user}&password=http-pw", f"{name}://{HOST}:{port}/login"],
                       capture_output=True, timeout=30, check=False)
        return lambda e: e["logtype"] == 3001 and e["logdata"].get("USERNAME") == user
    if name == "mysql":
        subprocess.run(["mariadb", "-h", HOST, "-P", str(port), "-u", user, "-pdb-pw",
                        "--connect-timeout=10", "-e", "SELECT 1"],
                       capture_output=True, timeout=30, check=False)
        return lambda e: e["logtype"] == 8001 and e["logdata"].get("USERNAME") == user
    if name == "vnc":
        vnc_login(port)
        return lambda e: e["logtype"] == 12001
    if name == "rdp":
        subprocess.run(["xvfb-run", "-a", "xfreerdp", "/auth-only", "/cert:ignore",
                        f"/v:{HOST}:{port}", f"/u:{user}", "/p:rdp-pw"],
                       capture_output=True, timeout=60, check=False)
        return lambda e: e["logtype"] == 14001 and e["logdata"].get("USER") == user
    if name == "redis":
        subprocess.run(["redis-cli", "-h", HOST, "-p", str(port), "--no-auth-warning", "-a",
                        "redis-pw", "KEYS", "*"], capture_output=True, timeout=30, check=False)
        return lambda e: e["logtype"] == 17001 and e["logdata"].get("CMD") == "KEYS"
    if name == "smb":
        smbclient(port, HONEY_USER, HONEY_PASSWORD)
        return lambda e: e["logtype"] == SMB_LOGIN and e["logdata"].get("USER") == HONEY_USER
    raise ValueError(name)


def start_portscan(lab: Lab) -> str:
    """Start the detector on ``lo`` beside the lab; '' or why it could not run here."""
    if os.geteuid() != 0:
        return "not root: the detector needs CAP_NET_RAW for its packet socket"
    layer = lab.dir / "portscan.toml"
    layer.write_text('[services.portscan]\nenabled = true\ninterfaces = ["lo"]\n')
    lab.spawn("portscan", [sys.executable, "-m", "firmware.services", "portscan", "--config",
                           str(lab.device_conf), "--config", str(layer)])
    try:
        lab.wait_for(lambda: "portscan watching" in lab.log("portscan"), 30, "the detector")
    except EnvironmentFault as exc:
        lab.kill("portscan")
        return f"it did not start: {exc.message.splitlines()[0]}"
    return ""


# --- the flood ---------------------------------------------------------------------------------


def smb_negotiate(message_id: int) -> bytes:
    """An SMB2 NEGOTIATE request offering 2.0.2-3.0.2 (no 3.1.1: no negotiate contexts)."""
    header = smbwire.HEADER.pack(smbwire.SMB2_MAGIC, smbwire.HEADER_SIZE, 0, 0, 0, 1, 0, 0,
                                 message_id, 0, 0, 0, bytes(16))
    guid = message_id.to_bytes(16, "little")
    body = struct.pack("<HHHHI16sIHH", 36, len(SMB_DIALECTS), 0x1, 0, 0, guid, 0, 0, 0)
    body += struct.pack(f"<{len(SMB_DIALECTS)}H", *SMB_DIALECTS)
    return smbwire.frame(header + body)


@dataclass
class Side:
    """One flooded service: what became of its connections."""

    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    by_source: collections.Counter[str] = field(default_factory=collections.Counter)
    cut_while_held: int = 0


class Flood:
    """Concurrent connections from many loopback sources, held until :meth:`release`.

    Runs its own event loop in a thread, so the benchmark can measure and try honest clients
    meanwhile.  ``ready`` is set once every connection has its outcome.
    """

    def __init__(self, ports: dict[str, int], count: int, sources: list[str],
                 timeout: float) -> None:
        self.ports, self.count, self.sources, self.timeout = ports, count, sources, timeout
        self.per_source = 16  # the cap the flood is sized against (set from the limits)
        self.held_for = 0.0  # seconds from every connection's outcome until the release
        self.sides = {name: Side() for name in ports}
        self.ready = threading.Event()
        self.decided = 0
        self.seconds = 0.0  # from the first connect until every connection had its outcome
        self._start = 0.0
        self._loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(self.timeout * 3 + 30):
            raise EnvironmentFault("the flood's connections did not settle")

    def release(self) -> None:
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        self._thread.join(60)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self.ready.set()
            self._loop.close()

    async def _main(self) -> None:
        self._release = asyncio.Event()
        released = asyncio.ensure_future(self._release.wait())
        self._start = time.monotonic()
        tasks = [asyncio.ensure_future(self._one(name, port, i, released))
                 for i in range(self.count) for name, port in self.ports.items()]
        await asyncio.gather(*tasks)
        released.cancel()

    def _decide(self, side: Side, outcome: str) -> None:
        side.outcomes[outcome] += 1
        self.decided += 1
        if self.decided == self.count * len(self.ports):
            self.seconds = time.monotonic() - self._start
            self.ready.set()

    async def _one(self, name: str, port: int, i: int, released: asyncio.Future[Any]) -> None:
        side, source = self.sides[name], self.sources[i % len(self.sources)]
        writer: asyncio.StreamWriter | None = None
        try:
            reader, opened = await asyncio.wait_for(
                asyncio.open_connection(HOST, port, local_addr=(source, 0)), self.timeout)
            writer = opened
            if name == "ssh":
                line = await asyncio.wait_for(reader.readline(), self.timeout)
                ok = line.startswith(b"SSH-")
                if ok:
                    opened.write(SSH_CLIENT_VERSION)
                    await opened.drain()
            else:
                opened.write(smb_negotiate(i))
                await opened.drain()
                head = await asyncio.wait_for(reader.readexactly(4), self.timeout)
                body = await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(head[1:], "big")), self.timeout)
                ok = body[:4] == smbwire.SMB2_MAGIC and struct.unpack_from("<I", body, 8)[0] == 0
            outcome = "accepted" if ok else "refused"
        except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
            outcome = "refused"
        except TimeoutError:
            outcome = "no answer"
        except OSError as exc:
            outcome = f"connect failed ({exc.strerror or exc})"
        self._decide(side, outcome)
        if outcome == "accepted" and writer is not None:
            side.by_source[source] += 1
            if await self._hold(reader, released):
                side.cut_while_held += 1
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await writer.wait_closed()

    @staticmethod
    async def _hold(reader: asyncio.StreamReader, released: asyncio.Future[Any]) -> bool:
        """Read (and drop) what the server sends until released; True if it cut us first."""
        while not released.done():
            read = asyncio.ensure_future(reader.read(65536))
            done, _ = await asyncio.wait({read, released}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                read.cancel()
                return False
            if read.exception() is not None or not read.result():
                return True
        return False


@dataclass
class Honest:
    """One honest client's try: what its client saw, and when its event reached the console."""

    label: str
    client: str
    event_s: float | None  # seconds until stored; None: not within the wait
    stored_by_end: bool = False
    match: Match | None = None


def ssh_login(lab: Lab, user: str, timeout: float = 10) -> str:
    """One OpenSSH password attempt (Lab.ssh_attempt's command); what its client said."""
    argv = ["sshpass", "-p", "honest-pw", "ssh", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "PreferredAuthentications=password",
            "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1",
            "-o", f"ConnectTimeout={int(timeout)}", "-p", str(lab.ssh_port), f"{user}@{HOST}",
            "true"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10,
                         check=False)
    text = out.stdout + out.stderr
    if "Permission denied" in text:
        return "login refused (reached the honeypot)"
    for what in ("reset by peer", "Connection closed", "kex_exchange_identification",
                 "timed out"):
        if what in text:
            return f"connection failed: {what}"
    return f"exit {out.returncode}: {text.strip()[-60:]}"


def honest_ssh(lab: Lab, user: str, wait: float) -> Honest:
    start = time.monotonic()
    client = ssh_login(lab, user)

    def match(e: dict[str, Any]) -> bool:
        return bool(e["logtype"] == SSH_LOGIN and e["logdata"].get("USERNAME") == user)

    return Honest(f"ssh login {user}", client, waited(lab, match, wait, start), match=match)


def honest_smb(lab: Lab, user: str, wait: float) -> Honest:
    start = time.monotonic()
    out = smbclient(lab.listener_ports["smb"], user, "honest-pw")
    text = out.stdout + out.stderr
    status = re.search(r"NT_STATUS_\w+", text)
    client = status.group(0) if status else f"exit {out.returncode}"

    def match(e: dict[str, Any]) -> bool:
        return bool(e["logtype"] == SMB_LOGIN and e["logdata"].get("USER") == user)

    return Honest(f"smbclient login {user}", client, waited(lab, match, wait, start),
                  match=match)


def waited(lab: Lab, match: Match, wait: float, start: float) -> float | None:
    try:
        lab.wait_event(match, timeout=wait)
    except EnvironmentFault as exc:
        if "timed out" not in exc.message:
            raise  # a process died: that is the finding, not a missing event
        return None
    return time.monotonic() - start


# --- console -------------------------------------------------------------------------------


def stats(lab: Lab) -> dict[str, int]:
    return Checkout("lab", ROOT).stats(lab.state)


def settle(lab: Lab, most: float, quiet: float = 4.0) -> float:
    """Wait until the console has stored nothing new for ``quiet`` s (at most ``most`` s);
    the monotonic time of the last change seen."""
    start = time.monotonic()
    last, since = -1, time.monotonic()
    while time.monotonic() - start < most:
        now = stats(lab).get("events_stored", 0)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.5)
    return since


LOG_PATTERNS = {"refused by the guard": "refused:", "cut by the guard": " cut: ",
                "sink found the agent's socket full": "not reachable at",
                "sink lost events": "are lost",
                "console answer without data, retried": "frame rejected or lost",
                "agent rejected datagrams": "rejected event datagram"}


def log_counts(lab: Lab, names: list[str]) -> dict[str, dict[str, int]]:
    """Lines of each process's log matching LOG_PATTERNS (only the non-zero ones)."""
    out: dict[str, dict[str, int]] = {}
    for name in names:
        lines = lab.log(name).splitlines()
        found = {label: sum(pattern in line for line in lines)
                 for label, pattern in LOG_PATTERNS.items()}
        if any(found.values()):
            out[name] = {k: v for k, v in found.items() if v}
    return out


def stored_records(lab: Lab) -> list[dict[str, Any]]:
    """Every stored event as the console shows it, plus ``_delay``: seconds from the event's
    own time (the honeypot's clock) until the console stored it."""
    store = Store(lab.state / "console.db")
    try:
        out = []
        for row in store.events():
            record = row.record(mask_secrets=False)
            record["_delay"] = row.received - json.loads(row.compact)["t"] / 1_000_000
            out.append(record)
        return out
    finally:
        store.close()


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Memory:
    label: str
    by_proc: dict[str, dict[str, int]]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=500, help="per flooded service")
    ap.add_argument("--sources", type=int, default=199,
                    help="loopback source addresses 127.0.0.2 and up (at most 252)")
    ap.add_argument("--hold", type=float, default=15.0,
                    help="seconds the flood is held once it is open (the limit cuts at 30)")
    ap.add_argument("--connect-timeout", type=float, default=15.0,
                    help="seconds a flood connection may take to be answered")
    ap.add_argument("--honest-wait", type=float, default=10.0,
                    help="seconds to wait for an honest client's event during the flood")
    ap.add_argument("--drain-timeout", type=float, default=90.0,
                    help="most seconds to wait for the flood's events to reach the console")
    ap.add_argument("--no-flood", action="store_true", help="memory only")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the lab's state and process logs here (default: a temporary "
                         "directory, removed)")
    args = ap.parse_args(argv)
    if not 1 <= args.sources <= 252:
        ap.error("--sources: 1 to 252")
    missing = [t for t in ("unbound", "ssh", "sshpass", "smbclient", "curl", "redis-cli")
               if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        print(f"  missing {', '.join(missing)} (make deps): no figures")
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, _nofile(4 * args.connections + 256))
    known = discover()
    bare = bare_python_kib()
    imported = bare_python_kib(code="from firmware.services.base import discover\ndiscover()\n")
    print(f"  reference: `python3 -c pass` ({sys.executable}, Python "
          f"{sys.version.split()[0]}) peak RSS {mib(bare)} MiB (best of 3); for comparison "
          f"the same interpreter after `discover()` (what every service process imports: "
          f"every service module) {mib(imported)} MiB")
    print(f"  the issue: SSH honeypot {ISSUE_SSH_MB} MB, agent {ISSUE_AGENT_MB} MB; OpenCanary "
          f"{OPENCANARY_SERVICES} services in one {OPENCANARY_MB} MB process; goal: the whole "
          f"runtime with {GOAL_SERVICES} services <= {GOAL_MB} MB idle")
    skipped = [f"{n}: not in firmware.services.base.discover() ({', '.join(sorted(known))})"
               for n in WANTED if n not in known]
    honey = {"honey_user": HONEY_USER, "honey_nt_hash": HONEY_NT_HASH}
    listeners = tuple(n for n in LISTENERS if n in known)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with Lab(args.workdir, heartbeat=3600, with_ssh=True, listeners=listeners,
             service_settings={"smb": honey}) as lab:
        lab.wait_event(lambda e: e["logtype"] == BOOT)
        limits = config.load([lab.device_conf]).limits
        device = ["agent", "ssh", *listeners]
        if "portscan" in known:
            why = start_portscan(lab)
            if why:
                skipped.append(f"portscan: {why}")
            else:
                device.append("portscan")
        for note in skipped:
            print(f"  skipped {note}")
        time.sleep(2)
        started = Memory("after start", snapshot(lab, device))
        for name in device[1:]:
            lab.wait_event(serve_one(lab, name), timeout=30)
        time.sleep(1)
        served = Memory("after one connection each", snapshot(lab, device))
        others = snapshot(lab, ["console", "unbound"])
        memory_report(device, started, served, others, bare)
        if args.no_flood:
            return
        flood_run(lab, device, served, limits, bare, args)


def _nofile(want: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= want:
        return max(soft, want), hard
    return hard, hard


def memory_report(device: list[str], started: Memory, served: Memory,
                  others: dict[str, dict[str, int]], bare: int) -> None:
    print(f"\n  resident memory of the device runtime, MiB ({len(device) - 1} services + "
          "agent, each its own process):")
    rows = []
    for name in device:
        a, b = started.by_proc[name], served.by_proc[name]
        rows.append([name, mib(a["VmRSS"]), mib(a["VmHWM"]), mib(b["VmRSS"]), mib(b["VmHWM"]),
                     mib(b.get("Pss", 0)), mib(b.get("RssAnon", 0)),
                     f"{b['VmRSS'] / bare:.2f}"])

    def total(m: Memory, key: str) -> int:
        return sum(m.by_proc[n].get(key, 0) for n in device)

    rows.append(["sum (whole runtime)", mib(total(started, "VmRSS")),
                 mib(total(started, "VmHWM")), mib(total(served, "VmRSS")),
                 mib(total(served, "VmHWM")), mib(total(served, "Pss")),
                 mib(total(served, "RssAnon")), f"{total(served, 'VmRSS') / bare:.2f}"])
    print(table(["", "VmRSS start", "VmHWM start", "VmRSS served", "VmHWM served",
                 "Pss served", "RssAnon served", "RSS x bare"], rows))
    services = [n for n in device if n != "agent"]
    per = statistics.median(served.by_proc[n]["VmRSS"] for n in services)
    per_pss = statistics.median(served.by_proc[n].get("Pss", 0) for n in services)
    more = max(0, GOAL_SERVICES - len(services))
    print(f"  issue's figures beside them: ssh {ISSUE_SSH_MB} MB (here "
          f"{mib(served.by_proc['ssh']['VmRSS'])} MiB), agent {ISSUE_AGENT_MB} MB (here "
          f"{mib(served.by_proc['agent']['VmRSS'])} MiB); OpenCanary {OPENCANARY_SERVICES} "
          f"services {OPENCANARY_MB} MB; goal <= {GOAL_MB} MB for {GOAL_SERVICES} services")
    print(f"  {len(services)} of the goal's {GOAL_SERVICES} services exist; projected with "
          f"{more} more at the median service here ({mib(per)} MiB RSS, {mib(per_pss)} MiB "
          f"Pss): {mib(total(served, 'VmRSS') + more * per)} MiB RSS sum, "
          f"{mib(total(served, 'Pss') + more * per_pss)} MiB Pss sum (a projection, not a "
          "measurement)")
    print("  not on the device (the lab's network side): " + ", ".join(
        f"{n} {mib(m['VmRSS'])} MiB" for n, m in others.items()))


def flood_run(lab: Lab, device: list[str], idle: Memory, limits: config.Limits, bare: int,
              args: argparse.Namespace) -> None:
    sources = [f"127.0.0.{2 + i}" for i in range(args.sources)]
    ports = {"ssh": lab.ssh_port, "smb": lab.listener_ports["smb"]}
    print(f"\n  flood: {args.connections} concurrent connections each to ssh and smb from "
          f"{len(sources)} sources ({sources[0]}-{sources[-1]}), held {args.hold:g} s; "
          f"limits as shipped: {limits.connections_per_source} per source, "
          f"{limits.connections_total} per service, {limits.connection_timeout:g} s per "
          f"connection; flood control {limits.flood_burst} events per (source, code, port) "
          f"per {limits.flood_window:g} s", flush=True)
    time.sleep(1.2)  # one console flush: its counters are current
    before = stats(lab)
    flood = Flood(ports, args.connections, sources, args.connect_timeout)
    flood.per_source = limits.connections_per_source
    with Sampler() as sampler:
        flood_started = time.monotonic()
        flood.start()
        opened = time.monotonic()
        held = Memory("held", snapshot(lab, device))
        during = [honest_ssh(lab, "honest-during", args.honest_wait),
                  honest_smb(lab, "honest-during", args.honest_wait)]
        time.sleep(max(0.0, args.hold - (time.monotonic() - opened)))
        end_of_hold = Memory("end of hold", snapshot(lab, device))
        flood.release()
        released_at = time.monotonic()
        flood.held_for = released_at - opened
        time.sleep(1)
        released = Memory("released", snapshot(lab, device))
        after = [honest_ssh(lab, "honest-after", args.drain_timeout),
                 honest_smb(lab, "honest-after", args.drain_timeout)]
        py_us = sampler.py_us
    last = settle(lab, args.drain_timeout)
    drained, span = last - released_at, last - flood_started
    time.sleep(1.2)
    counted = stats(lab)
    records = stored_records(lab)
    for h in during + after:
        h.stored_by_end = any(h.match(r) for r in records) if h.match else False
    peak = Memory("peak", snapshot(lab, device))
    logs = log_counts(lab, device)
    lab.kill("agent")  # SIGTERM: flood control's counts go into the queue
    lab.start_agent()  # and the new agent sends them
    settle(lab, 60)
    time.sleep(1.2)
    final, records = stats(lab), stored_records(lab)
    flood_report(flood, sources, during, after, device, idle, held, end_of_hold, released, peak,
                 bare, py_us)
    console_report(lab, flood, before, counted, final, records, set(sources), drained, span)
    print("  log lines of the device processes during the run: " + ("; ".join(
        f"{n}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for n, c in logs.items())
        or "nothing notable"))


def flood_report(flood: Flood, sources: list[str], during: list[Honest], after: list[Honest],
                 device: list[str], idle: Memory, held: Memory, end: Memory, released: Memory,
                 peak: Memory, bare: int, py_us: float) -> None:
    rows = []
    for name, side in flood.sides.items():
        other = {k: v for k, v in side.outcomes.items()
                 if k not in ("accepted", "refused", "no answer")}
        rows.append([name, f"{sum(side.outcomes.values())}", f"{side.outcomes['accepted']}",
                     f"{side.outcomes['refused']}", f"{side.outcomes['no answer']}",
                     " ".join(f"{k}: {v}" for k, v in other.items()) or "0",
                     f"{side.cut_while_held}", f"{len(side.by_source)}",
                     f"{max(side.by_source.values(), default=0)}"])
    print(table(["", "opened", "accepted", "refused", "no answer", "other", "cut while held",
                 "sources accepted", "most from one source"], rows))
    print(f"  every connection had its outcome {flood.seconds:.1f} s after the first connect, "
          f"then they were held {flood.held_for:.1f} s "
          f"(py-ref sampled during the flood: {py_us:.1f} µs); refused = reset or closed "
          "before the banner / NEGOTIATE answer: the total cap of 256 per service, by design "
          f"(at most {-(-flood.count // len(sources))} connections came from one source: "
          + ("under the per-source cap)" if -(-flood.count // len(sources)) <= flood.per_source else
             "the per-source cap refused some too)"))
    rows = [[h.label, h.client,
             f"{h.event_s:.1f} s" if h.event_s is not None else "not within the wait",
             "yes" if h.stored_by_end else "no"] for h in during]
    rows += [[h.label, h.client, f"{h.event_s:.1f} s" if h.event_s is not None else "no",
              "yes" if h.stored_by_end else "no"] for h in after]
    print("  honest clients from 127.0.0.1, during the hold (-during) and after the release "
          "(-after):")
    print(table(["", "client saw", "event stored after", "stored by the end"], rows, "    "))
    print("  memory under the flood, MiB (VmHWM = peak since the process started):")
    rows = []
    for name in device:
        rows.append([name, mib(idle.by_proc[name]["VmRSS"]), mib(held.by_proc[name]["VmRSS"]),
                     mib(end.by_proc[name]["VmHWM"]), mib(released.by_proc[name]["VmRSS"]),
                     mib(peak.by_proc[name]["VmHWM"]),
                     f"{peak.by_proc[name]['VmHWM'] / bare:.2f}"])

    def total(m: Memory, key: str) -> int:
        return sum(m.by_proc[n][key] for n in device)

    rows.append(["sum", mib(total(idle, "VmRSS")), mib(total(held, "VmRSS")),
                 mib(total(end, "VmHWM")), mib(total(released, "VmRSS")),
                 mib(total(peak, "VmHWM")), f"{total(peak, 'VmHWM') / bare:.2f}"])
    print(table(["", "VmRSS idle", "VmRSS held", "VmHWM end of hold", "VmRSS released",
                 "VmHWM after drain", "HWM x bare"], rows, "    "))


def console_report(lab: Lab, flood: Flood, before: dict[str, int], counted: dict[str, int],
                   final: dict[str, int], records: list[dict[str, Any]], sources: set[str],
                   drained: float, span: float) -> None:
    def delta(key: str) -> int:
        return counted.get(key, 0) - before.get(key, 0)

    stored, queries = delta("events_stored"), delta("queries")
    print(f"  console, from before the flood until its events had drained (the last stored "
          f"{drained:.0f} s after the release):")
    print(f"    events stored {stored:,}; DNS queries answered {queries:,}; frames accepted "
          f"{delta('accepted'):,}; events stored per DNS query "
          f"{stored / queries if queries else 0:.3f}")
    flood_events = collections.Counter(r["logtype"] for r in records
                                       if r.get("src_host") in sources)
    ssh = flood.sides["ssh"].outcomes["accepted"]
    held_by_code: collections.Counter[int] = collections.Counter()
    for r in records:
        if r["logtype"] == EVENTS_AGGREGATED and r.get("src_host") in sources:
            held_by_code[int(r["logdata"].get("CODE", 0))] += int(r["logdata"].get("COUNT", 0))
    print(f"    the flood's events stored, by code (its {ssh} accepted ssh connections each "
          "make one 4000 and one 4001; smb NEGOTIATE makes none): " + (", ".join(
              f"{code}: {n}" for code, n in sorted(flood_events.items())) or "none")
          + "; neither stored nor counted by flood control: " + ", ".join(
              f"{max(0, ssh - flood_events[c] - held_by_code[c])} {c}" for c in (4000, 4001)))
    delays = [r["_delay"] for r in records if r.get("src_host") in sources
              and r["logtype"] in (4000, 4001)]
    if delays:
        print(f"    the flood's events, honeypot -> stored: p50 {percentile(delays, 50):.1f} s, "
              f"p95 {percentile(delays, 95):.1f} s, max {max(delays):.1f} s; stored at "
              f"{stored / span if span > 0 else 0:.1f} events/s from the flood's start to the "
              f"last ({span:.0f} s)")
    aggregated = [r for r in records if r["logtype"] == EVENTS_AGGREGATED]
    held = sum(int(r["logdata"].get("COUNT", 0)) for r in aggregated)
    print(f"  flood control: {len(aggregated)} EVENTS_AGGREGATED (1114) events stored after "
          f"the agent's graceful stop and restart, counting {held:,} events held back"
          + (f" (codes {sorted({r['logdata'].get('CODE') for r in aggregated})})"
             if aggregated else ""))
    print(f"    console totals at the end: events stored {final.get('events_stored', 0):,}, "
          f"queries {final.get('queries', 0):,}, accepted {final.get('accepted', 0):,}")
    if lab.procs.get("agent") is None:
        print("    (the agent did not come back)")


if __name__ == "__main__":
    sys.exit(main_guard(main))
