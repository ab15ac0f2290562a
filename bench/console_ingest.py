"""Console ingest: heartbeats and SSH login events the console **stored**, per core and per second.

What is measured, for the old console (protocol v1, ``--old`` checkout) and this one side by
side, in one run:

* heartbeats: unique valid heartbeat queries from ``--devices`` enrolled devices;
* events: SSH password login attempts (user name, a 40-character random password, client and
  honeypot version strings: 2-3 fragments each in v1, 1-2 in v2, the table says how many; "CPU
  per fragment query" compares the two without that difference), every fragment its
  own query, fragments of one event adjacent, as a device sends them.

Each checkout builds its own queries with its own protocol code (bench/_workload.py, in a
process of its own), then its real server (``python3 -m console serve``) runs on 127.0.0.1 and
Debian's ``dnsperf`` sends every query once over UDP.  The server's CPU time comes from
/proc/PID/stat before and after; what counts is what the console **stored**, read with
``console stats`` after a graceful SIGTERM (which flushes): ``accepted`` frames and
``events_stored``, not what dnsperf saw answered.  The same kind of queries also go through
each console in process (no sockets, rounds of 100 queries, one commit per round): the cost
without the server loop, and the console's own DNS codec against dnslib on the same queries.
``python3 bench/_workload.py --in-process --profile FILE`` (PYTHONPATH=a checkout) writes a
CPU-time cProfile of that loop.  Last, both consoles take the same kind of events in turns, in
process, 50 events a turn (``--paired-events``): this machine's speed swings by 2x within
seconds, so two runs minutes apart compare moments as much as code, while two adjacent turns
meet one moment; NEW/OLD there is the median over the pairs of turns, the steadiest figure.

Every CPU figure stands beside a reference measured in the same run, at the same moments
(bench/_reference.py): fixed pure-Python work ("py-ref") sampled during each server run, or
between the rounds in process; secretbox, dnslib and a durable SQLite commit are measured just
before each run.  The ratio to py-ref, and NEW/OLD, are the figures to track.  Figures, not a
pass/fail test.

Run: python3 -m bench.console_ingest [--old /tmp/old] [--events 6000] [--repeat 3]
     [--paired-events 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import ROOT, Checkout, console_server, table
from bench._reference import Reference, Sampler
from firmware.shared.cli import main_guard
from firmware.shared.proc import output

WORKLOAD = ROOT / "bench" / "_workload.py"
GOAL_EVENTS_PER_CORE = 5000
ISSUE_V1_EVENTS_PER_CORE = 1800  # the issue's in-process figure for the v1 console


@dataclass
class Run:
    """One checkout, one kind of traffic: what was sent, what the console did and stored."""

    checkout: Checkout
    kind: str  # heartbeats | events
    ref: Reference  # measured just before the run
    workload: dict[str, Any]
    py_us: float = 0.0  # py-ref sampled during the run: the figures' reference
    cpu: float = 0.0  # console CPU seconds during the run
    wall: float = 0.0  # seconds (dnsperf's run time, or the in-process loop)
    stats: dict[str, int] = field(default_factory=dict)
    dnsperf: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)  # codec_us, dnslib_us (in process)

    @property
    def queries(self) -> int:
        return self.stats.get("queries", 0)

    @property
    def stored(self) -> int:
        return self.stats.get("events_stored", 0)


def workload(checkout: Checkout, state: Path, kind: str, count: int, devices: int,
             *extra: str) -> dict[str, Any]:
    """Let ``checkout`` make a state directory and its queries (bench/_workload.py)."""
    text = checkout.output(WORKLOAD, "--state", state, "--kind", kind, "--count", str(count),
                           "--devices", str(devices), *extra)
    result: dict[str, Any] = json.loads(text)
    return result


def through_server(checkout: Checkout, work: Path, kind: str, count: int,
                   args: argparse.Namespace) -> Run:
    state, data = work / f"{checkout.label}-{kind}", work / f"{checkout.label}-{kind}.txt"
    made = workload(checkout, state, kind, count, args.devices, "--queries-out", str(data))
    run = Run(checkout, kind, Reference.measure(work), made)
    with console_server(checkout, state) as server, Sampler() as sampler:
        before, start = server.cpu(), time.monotonic()
        text = output(["dnsperf", "-s", "127.0.0.1", "-p", str(server.port), "-d", data,
                       "-n", "1", "-l", str(args.time_limit), "-c", str(args.clients),
                       "-q", str(args.outstanding), "-t", "5"],
                      timeout=args.time_limit + 60)
        run.cpu, elapsed = server.cpu() - before, time.monotonic() - start
    run.py_us = sampler.py_us
    run.dnsperf = _dnsperf_figures(text)
    run.wall = run.dnsperf.get("run_time", elapsed)
    run.stats = checkout.stats(state)  # after SIGTERM: flushed
    data.unlink()
    shutil.rmtree(state)
    return run


def in_process(checkout: Checkout, work: Path, kind: str, count: int,
               args: argparse.Namespace) -> Run:
    state = work / f"{checkout.label}-{kind}-inproc"
    ref = Reference.measure(work)
    made = workload(checkout, state, kind, count, args.devices, "--in-process")
    figures = made.pop("in_process")
    run = Run(checkout, kind, ref, made, figures["py_ref"], figures["cpu"], figures["wall"])
    run.extra = {k: figures[k] for k in ("codec_us", "dnslib_us")}
    run.stats = {"queries": figures["queries"], "accepted": figures["accepted"],
                 "events_stored": figures["events_stored"]}
    shutil.rmtree(state)
    return run


@dataclass
class Paired:
    """Rounds of the same events through two consoles in process, alternating round by round."""

    rounds: dict[str, list[dict[str, float]]]  # checkout label -> one dict per round
    ratios: list[float]  # NEW/OLD CPU per stored event, per pair of adjacent rounds

    def per_event(self, label: str) -> float:
        mine = self.rounds[label]
        return sum(r["cpu"] for r in mine) / max(1, sum(r["stored"] for r in mine)) * 1e6

    def py_ref(self, label: str) -> float:
        return statistics.median(r["py_ref"] for r in self.rounds[label])


def paired(cols: list[Checkout], work: Path, args: argparse.Namespace) -> Paired:
    """Both consoles take turns, ``args.paired_round`` events at a time (the first of each pair
    alternating), so each pair of rounds meets one moment of the machine; the NEW/OLD ratio of
    every pair is then free of the machine's swings from one run to the next."""
    procs = {}
    for c in cols:
        state = work / f"{c.label}-paired"
        procs[c.label] = subprocess.Popen(
            c.python(WORKLOAD, "--state", state, "--kind", "events", "--count",
                     str(args.paired_events), "--devices", str(args.devices), "--paired",
                     "--per-round", str(args.paired_round)),
            cwd=c.root, env=c.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        rounds: dict[str, list[dict[str, float]]] = {c.label: [] for c in cols}
        for c in cols:
            json.loads(_line(procs[c.label]))  # ready: its queries are built
        for n in range(-(-args.paired_events // args.paired_round)):
            for c in cols if n % 2 == 0 else cols[::-1]:
                proc = procs[c.label]
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
                rounds[c.label].append(json.loads(_line(proc)))
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=120)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    old, new = (rounds[c.label] for c in cols)
    ratios = [(b["cpu"] / b["stored"]) / (a["cpu"] / a["stored"])
              for a, b in zip(old, new, strict=True) if a["stored"] and b["stored"]]
    for c in cols:
        shutil.rmtree(work / f"{c.label}-paired", ignore_errors=True)
    return Paired(rounds, ratios)


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"a paired worker ended early (exit {proc.wait()})")
    return line


def _dnsperf_figures(text: str) -> dict[str, float]:
    names = {"sent": "Queries sent", "completed": "Queries completed", "lost": "Queries lost",
             "run_time": r"Run time \(s\)"}
    found = {k: re.search(rf"{v}:\s+([\d.]+)", text) for k, v in names.items()}
    return {k: float(m.group(1)) for k, m in found.items() if m}


def synchronous(checkout: Checkout) -> str:
    """The SQLite ``synchronous`` level the checkout's console store sets (FULL: durable)."""
    text = (checkout.root / "console" / "store.py").read_text()
    m = re.search(r'synchronous\s*=\s*"?([A-Z]+)', text)
    return m.group(1) if m else "?"


# --- the table --------------------------------------------------------------------------------

Runs = dict[str, dict[str, list[Run]]]  # kind -> checkout label -> one Run per repeat


@dataclass(frozen=True)
class Row:
    """One figure: ``value`` per run; ``cpu`` rows are also shown divided by that run's py-ref."""

    label: str
    kind: str
    value: Callable[[Run], float]
    unit: str  # "us", "rate", "ms" or "x" (a plain ratio)
    cpu: bool = False


def _per(n: Callable[[Run], int]) -> Callable[[Run], float]:
    return lambda r: r.cpu / n(r) * 1e6 if n(r) else 0.0


ROWS = [
    Row("py-ref sampled during the run (reference)", "heartbeats", lambda r: r.py_us, "us"),
    Row("console CPU per heartbeat query", "heartbeats", _per(lambda r: r.queries), "us", True),
    Row("accepted heartbeats/s, wall clock", "heartbeats",
        lambda r: r.stats.get("accepted", 0) / r.wall, "rate"),
    Row("py-ref sampled during the run (reference)", "events", lambda r: r.py_us, "us"),
    Row("durable SQLite commit (reference, before the run)", "events",
        lambda r: r.ref.fsync_ms, "ms"),
    Row("console CPU per fragment query", "events", _per(lambda r: r.queries), "us", True),
    Row("console CPU per STORED event", "events", _per(lambda r: r.stored), "us", True),
    Row("STORED events/s per core of console CPU", "events",
        lambda r: r.stored / r.cpu if r.cpu else 0.0, "rate"),
    Row("STORED events/s, wall clock", "events", lambda r: r.stored / r.wall, "rate"),
    Row("py-ref between the rounds, heartbeat run (reference)", "heartbeats-inproc",
        lambda r: r.py_us, "us"),
    Row("CPU per heartbeat query", "heartbeats-inproc", _per(lambda r: r.queries), "us", True),
    Row("DNS codec: parse + TXT answer, per query", "heartbeats-inproc",
        lambda r: r.extra["codec_us"], "us", True),
    Row("the same with dnslib (reference)", "heartbeats-inproc",
        lambda r: r.extra["dnslib_us"], "us", True),
    Row("DNS codec / dnslib", "heartbeats-inproc",
        lambda r: r.extra["codec_us"] / r.extra["dnslib_us"], "x"),
    Row("py-ref between the rounds, event run (reference)", "events-inproc",
        lambda r: r.py_us, "us"),
    Row("CPU per fragment query", "events-inproc", _per(lambda r: r.queries), "us", True),
    Row("CPU per stored event", "events-inproc", _per(lambda r: r.stored), "us", True),
    Row("stored events/s per core", "events-inproc",
        lambda r: r.stored / r.cpu if r.cpu else 0.0, "rate"),
]
SECTIONS = {"heartbeats": "heartbeats through the server (UDP loopback, dnsperf)",
            "events": "SSH login events through the server (UDP loopback, dnsperf)",
            "events-inproc": "in process, no sockets (rounds of 100 queries, one commit each)",
            "events-paired": "in process, the two consoles taking turns (rounds of 50 events, "
                             "one commit each)"}


def _fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.3f}"
    if unit == "rate":
        return f"{value:,.0f}/s"
    return f"{value:,.2f} ms" if unit == "ms" else f"{value:,.1f} µs"


def _cell(row: Row, runs: list[Run]) -> str:
    text = _fmt(statistics.median(row.value(r) for r in runs), row.unit)
    if row.cpu:
        text += f" = {statistics.median(row.value(r) / r.py_us for r in runs):.2f} ref"
    return text


def _new_old(row: Row, old: list[Run], new: list[Run]) -> str:
    """NEW/OLD per repeat (of the ref ratios on CPU rows), median and range over repeats."""
    def fig(r: Run) -> float:
        return row.value(r) / r.py_us if row.cpu else row.value(r)

    ratios = [fig(n) / fig(o) for o, n in zip(old, new, strict=True) if fig(o)]
    if not ratios:
        return "-"
    mid = f"{statistics.median(ratios):.2f}"
    return mid if len(ratios) == 1 else f"{mid} ({min(ratios):.2f}-{max(ratios):.2f})"


def _facts(runs: Runs, labels: list[str]) -> list[list[str]]:
    """What was sent and what the console stored (sums over the repeats)."""
    def total(kind: str, label: str, f: Callable[[Run], float]) -> str:
        return f"{sum(f(r) for r in runs[kind][label]):,.0f}"

    def first(label: str) -> Run:
        return runs["events"][label][0]

    return [
        ["durable before answering (store synchronous=)",
         *(synchronous(runs["events"][lb][0].checkout) for lb in labels)],
        ["heartbeats sent / accepted",
         *(f"{total('heartbeats', lb, lambda r: r.dnsperf.get('sent', 0))} / "
           f"{total('heartbeats', lb, lambda r: r.stats.get('accepted', 0))}" for lb in labels)],
        ["event message bytes (compressed JSON, mean)",
         *(f"{first(lb).workload.get('message_bytes', 0):.0f}" for lb in labels)],
        ["fragments per event (fragments:events)",
         *(" ".join(f"{k}:{v}" for k, v in first(lb).workload["fragments_per_event"].items())
           for lb in labels)],
        ["events / fragment queries sent",
         *(f"{total('events', lb, lambda r: r.workload['items'])} / "
           f"{total('events', lb, lambda r: r.dnsperf.get('sent', 0))}" for lb in labels)],
        ["fragments accepted / events STORED",
         *(f"{total('events', lb, lambda r: r.stats.get('accepted', 0))} / "
           f"{total('events', lb, lambda r: r.stored)}" for lb in labels)],
    ]


def _paired_rows(pair: Paired, labels: list[str]) -> list[list[str]]:
    q = statistics.quantiles(pair.ratios, n=4) if len(pair.ratios) > 1 else pair.ratios * 3
    return [
        [f"- {SECTIONS['events-paired']} -", "", "", ""],
        ["  py-ref after each round (reference)",
         *(_fmt(pair.py_ref(lb), "us") for lb in labels), ""],
        ["  CPU per stored event",
         *(f"{_fmt(pair.per_event(lb), 'us')} = {pair.per_event(lb) / pair.py_ref(lb):.2f} ref"
           for lb in labels),
         f"{statistics.median(pair.ratios):.2f} ({q[0]:.2f}-{q[2]:.2f})"],
    ]


def report(runs: Runs, checkouts: list[Checkout], work: Path, pair: Paired | None) -> None:
    labels = [c.label for c in checkouts]
    two = len(labels) == 2
    head = ["", *(f"{c.label.upper()} {runs['events'][c.label][0].workload['protocol']} "
                  f"({c.root})" for c in checkouts)]
    rows = [fact + ([""] if two else []) for fact in _facts(runs, labels)]
    section = ""
    for row in ROWS:
        sec = "events-inproc" if row.kind.endswith("inproc") else row.kind
        if sec != section:
            section = sec
            rows.append([f"- {SECTIONS[sec]} -", *("" for _ in labels), *([""] if two else [])])
        cells = [_cell(row, runs[row.kind][lb]) for lb in labels]
        if two:
            cells.append(_new_old(row, runs[row.kind][labels[0]], runs[row.kind][labels[1]]))
        rows.append([f"  {row.label}", *cells])
    if pair is not None:
        rows.extend(_paired_rows(pair, labels))
    print(table([*head, "NEW/OLD"] if two else head, rows))
    repeats = len(runs["events"][labels[0]])
    print(f"\n  medians of {repeats} alternating repeat(s); NEW/OLD: median (range) of the "
          "per-repeat ratios.")
    print("  'ref' = the figure divided by py-ref (fixed pure-Python work, CPU time) sampled "
          "during that run;\n  NEW/OLD compares those ratios on CPU rows, the plain figures "
          "on the others.")
    for lb in labels:
        print(f"  {lb} references before its first events run: {runs['events'][lb][0].ref.line()}")
    print(f"  state directories on {_fs_type(work)} ({work}).")
    print(f"  goal: >= {GOAL_EVENTS_PER_CORE:,} stored events/s per core = <= "
          f"{1e6 / GOAL_EVENTS_PER_CORE:.0f} µs of console CPU per event, nothing acknowledged "
          "before it is durable.")
    if two:
        row = next(r for r in ROWS if r.label == "CPU per stored event")
        print(f"  the same goal machine-neutral (the issue measured v1 in process at "
              f"~{ISSUE_V1_EVENTS_PER_CORE:,}/s per core): NEW/OLD CPU per event <= "
              f"{ISSUE_V1_EVENTS_PER_CORE / GOAL_EVENTS_PER_CORE:.2f}; measured "
              f"{_new_old(row, runs[row.kind][labels[0]], runs[row.kind][labels[1]])} "
              "in process, run against run" + (
                  f"; {statistics.median(pair.ratios):.2f} over {len(pair.ratios)} pairs of "
                  "rounds taking turns" if pair is not None else "") + ".")


def _fs_type(path: Path) -> str:
    """The file system type holding ``path`` (tmpfs would make durable commits free)."""
    best, kind = "", "?"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and str(path.resolve()).startswith(parts[1]) and \
                len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def checkouts(old: str) -> list[Checkout]:
    new = Checkout("new", ROOT)
    if old and (Path(old) / "console").is_dir():
        return [Checkout("old", Path(old).resolve()), new]
    print(f"  no old checkout at {old!r}: measuring this tree only "
          "(make one: git worktree add /tmp/old HEAD; pass --old or BENCH_OLD)")
    return [new]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", default=os.environ.get("BENCH_OLD", "/tmp/old"),
                    help="checkout of the old console (default: $BENCH_OLD or /tmp/old)")
    ap.add_argument("--heartbeats", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=6_000)
    ap.add_argument("--repeat", type=int, default=3, help="alternating old/new repeats")
    ap.add_argument("--devices", type=int, default=64)
    ap.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    ap.add_argument("--outstanding", type=int, default=200, help="dnsperf -q")
    ap.add_argument("--time-limit", type=int, default=120, help="dnsperf -l (seconds)")
    ap.add_argument("--in-process-heartbeats", type=int, default=6_000)
    ap.add_argument("--in-process-events", type=int, default=2_000)
    ap.add_argument("--paired-events", type=int, default=20_000,
                    help="events through both consoles taking turns (0: none)")
    ap.add_argument("--paired-round", type=int, default=50, help="events per turn")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the state directories go (its disk takes the fsyncs)")
    args = ap.parse_args(argv)
    if shutil.which("dnsperf") is None:
        print("  dnsperf is not installed (make deps): no figures")
        return
    cols = checkouts(args.old)
    with tempfile.TemporaryDirectory(prefix="coalmine-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        print(f"  {args.heartbeats:,} heartbeats and {args.events:,} SSH login events from "
              f"{args.devices} devices per console and repeat; dnsperf -c {args.clients} "
              f"-q {args.outstanding}; {args.repeat} repeat(s), old and new alternating",
              flush=True)
        runs: Runs = {}
        plan = [("heartbeats", args.heartbeats, through_server),
                ("events", args.events, through_server),
                ("heartbeats-inproc", args.in_process_heartbeats, in_process),
                ("events-inproc", args.in_process_events, in_process)]
        for repeat in range(args.repeat):
            for kind, count, how in plan:
                for c in cols if repeat % 2 == 0 else cols[::-1]:
                    run = how(c, work, kind.removesuffix("-inproc"), count, args)
                    runs.setdefault(kind, {}).setdefault(c.label, []).append(run)
        pair = paired(cols, work, args) if len(cols) == 2 and args.paired_events else None
        report(runs, cols, work, pair)

if __name__ == "__main__":
    sys.exit(main_guard(main))
