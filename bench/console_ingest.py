"""Console ingest benchmark: valid encrypted beacons per second on one core over loopback.

Pre-generates unique, valid heartbeat queries for several enrolled devices, starts the real
console (``python3 -m console serve``) on 127.0.0.1, drives it with Debian's ``dnsperf`` and
reads the server's CPU time from /proc/PID/stat before and after: µs of server CPU per query
is the figure that decides how many devices one core can serve.  Also prints, in process, the
cost of the hand-written codec versus dnslib for the same query (parse + build), which is the
justification written at the top of console/dnswire.py.  Figures, not a pass/fail test.

Run: python3 -m bench.console_ingest [--queries 200000] [--devices 8]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from console import config, dnswire
from console.core import Console
from console.handler import Responder
from console.store import Store
from firmware.protocol.frame import seal
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import Heartbeat, encode_body
from firmware.protocol.names import encode_frame
from firmware.protocol.replay import make_counter

ZONE = "c.test"
ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def run(argv: list[str], timeout: float = 600) -> str:
    """The one subprocess helper: argv list, logged once, checked, stdout returned."""
    print("$", shlex.join(argv), file=sys.stderr)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def make_names(console_pk: PeerPublicKey, devices: list[OwnPrivateKey], n: int) -> list[str]:
    """``n`` unique heartbeat query names, round robin over the devices, counters rising."""
    keys = [(d.public().device_id(), d.shared_key(console_pk)) for d in devices]
    names = []
    for i in range(n):
        device_id, shared = keys[i % len(keys)]
        counter = make_counter(1, i // len(keys) + 1)
        frame = seal(shared, device_id, counter, encode_body(Heartbeat(i, 0)))
        names.append(".".join([*encode_frame(frame), ZONE]))
    return names


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def setup(state: Path, n_devices: int) -> tuple[PeerPublicKey, list[OwnPrivateKey]]:
    console_key = config.init_state(state, ZONE)
    store = Store(state / config.DB_FILE)
    devices = [OwnPrivateKey.generate() for _ in range(n_devices)]
    for i, d in enumerate(devices):
        store.enroll(f"bench-{i}", d.public().text(), d.public().device_id(), time.time())
    store.close()
    return console_key.public(), devices


def dnsperf_run(state: Path, names: list[str], clients: int) -> None:
    data = state / "queries.txt"
    data.write_text("".join(f"{name} TXT\n" for name in names))
    server = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--state", str(state),
         "--listen", "127.0.0.1:0"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = re.search(r"127\.0\.0\.1:(\d+)", server.stdout.readline())
    if port is None:
        server.kill()
        raise SystemExit("the console did not start")
    try:
        before = cpu_seconds(server.pid)
        out = run(["dnsperf", "-s", "127.0.0.1", "-p", port.group(1), "-d", str(data),
                   "-n", "1", "-c", str(clients), "-q", "200", "-t", "2"])
        cpu = cpu_seconds(server.pid) - before
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    stats = run([sys.executable, "-m", "console", "stats", "--state", str(state)])
    accepted = re.search(r"accepted\t(\d+)", stats)
    print(f"dnsperf: {completed}/{len(names)} queries answered, {qps:,.0f} queries/s "
          f"(wall clock, server on one core)")
    print(f"server CPU: {cpu:.2f} s for {completed} queries = {cpu / completed * 1e6:.1f} us/query"
          f" -> {completed / cpu:,.0f} valid beacons/s per core")
    print(f"console accepted (as stored by the console): {accepted.group(1) if accepted else '?'}")


def in_process(state: Path, names: list[str], n: int) -> None:
    """Pure CPU cost per query without sockets: whole console, hand-written codec, dnslib."""
    cfg = config.load(state)
    store = Store(":memory:")
    for row in Store(cfg.db_path).devices():
        store.enroll(row.name, row.public_key, row.device_id, row.enrolled)
    core = Console(cfg.zone, cfg.private_key, store)
    responder = Responder(core, cfg.zone, cfg.soa_mname, cfg.soa_rname)
    queries = [dnswire.build_query(
        [label.encode() for label in name.split(".")], dnswire.TYPE_TXT, qid=i & 0xFFFF)
        for i, name in enumerate(names[:n])]
    t0 = time.perf_counter()
    for q in queries:
        responder.respond(q)
    whole = (time.perf_counter() - t0) / len(queries)
    t0 = time.perf_counter()
    for q in queries:
        parsed = dnswire.parse_query(q)
        dnswire.build_response(parsed, answers=(dnswire.txt_answer(b"x" * 22),))
    codec = (time.perf_counter() - t0) / len(queries)
    print(f"in process: whole console {whole * 1e6:.1f} us/query, "
          f"hand-written parse+build {codec * 1e6:.1f} us/query")
    print(f"dnslib parse+reply+pack: {dnslib_cost(queries[:5000]) * 1e6:.1f} us/query")


def dnslib_cost(queries: list[bytes]) -> float:
    import dnslib

    t0 = time.perf_counter()
    for q in queries:
        record = dnslib.DNSRecord.parse(q)
        reply = record.reply()
        reply.add_answer(dnslib.RR(record.q.qname, dnslib.QTYPE.TXT, ttl=0,
                                   rdata=dnslib.TXT(b"x" * 22)))
        reply.pack()
    return (time.perf_counter() - t0) / len(queries)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coalmine-bench-") as tmp:
        state = Path(tmp) / "state"
        console_pk, devices = setup(state, args.devices)
        names = make_names(console_pk, devices, args.queries)
        print(f"console ingest: {args.queries} unique valid heartbeats from "
              f"{args.devices} devices, zone {ZONE}")
        in_process(state, names, min(50_000, args.queries))
        if shutil.which("dnsperf") is None:
            print("dnsperf not installed: skipping the loopback run (apt-get install dnsperf)")
            return
        dnsperf_run(state, names, args.clients)


if __name__ == "__main__":
    main()
