"""Alert latency: a real SSH login attempt until its event is stored at the console, through
unbound (0x20 + QNAME minimisation) on loopback, idle and under load.  Goal: p95 < 1 s.

Two figures per percentile: from the moment the ssh client starts, and from the moment the
honeypot recorded the attempt (the event's own timestamp; the DNS path alone).  "Stored" is the
``received`` time the console gives the row (it commits that round before answering).

Load: ``--load-devices`` fake devices (default 200), each with its own enrolled key, session and
counters, send real v2 heartbeats every ``--load-interval`` seconds (default 1 s: 200
heartbeats/s, about 1,000 console queries/s once unbound's QNAME minimisation has walked each
name; the console query load of 12,000 devices at the shipped 60 s interval).  They are driven
from one process (bench/_load.py) and go **to unbound**, not to the console: the alert travels
through unbound too, so only that way does it meet the load where it queues (unbound's request
list and upstream sockets, the console's one socket and thread) and the ~5x fan-out minimisation
adds.  No-load and load phases alternate in ``--blocks`` blocks, so a drift of the machine
meets both; py-ref (bench/_reference.py) is sampled during each phase as the machine reference,
and the no-load figures are the reference for the loaded ones: load/no-load is the ratio to track.
A durable SQLite commit is timed before each block too: the console's serving thread waits for
its fsyncs (group commits, and the state it flushes every second while devices are active), so
the latency tail follows the disk's.

Also prints the upstream payload bytes per query for a few zone lengths.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import ROOT, percentile, table
from bench._reference import Sampler, fsync_ms
from console.store import EventRow, Store
from firmware.protocol import frame, messages, names
from firmware.protocol.keys import OwnPrivateKey
from firmware.shared.cli import main_guard
from scripts.lab import HOST, ZONE, Lab

SSH_LOGIN_ATTEMPT = 4002
BOOT = 1000


@dataclass
class Phase:
    """The attempts of one condition (no load, or load) over all blocks."""

    from_client: list[float] = field(default_factory=list)
    from_event: list[float] = field(default_factory=list)
    py_ref: list[float] = field(default_factory=list)
    commit_ms: list[float] = field(default_factory=list)  # durable commit, before each block
    load: list[dict[str, float]] = field(default_factory=list)
    accepted: int = 0  # frames the console accepted during this phase (as of its flushes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attempts", type=int, default=30, help="per condition")
    parser.add_argument("--blocks", type=int, default=2, help="no-load/load alternations")
    parser.add_argument("--load-devices", type=int, default=200)
    parser.add_argument("--load-interval", type=float, default=1.0,
                        help="seconds between one fake device's heartbeats")
    args = parser.parse_args(argv)
    payload_figures()
    phases = {"no load": Phase(), "load": Phase()}
    with Lab(heartbeat=3600) as lab:
        lab.wait_event(lambda e: e["logtype"] == BOOT)
        keys = enroll_fake_devices(lab, args.load_devices)
        time.sleep(2.5)  # the console picks new devices up at its next flush (1 s)
        store = Store(lab.state / "console.db")
        per_block = max(1, args.attempts // args.blocks)
        n = 0
        for _ in range(args.blocks):
            for name, phase in phases.items():
                before = _accepted(lab)
                phase.commit_ms.append(fsync_ms(lab.dir))
                with contextlib.ExitStack() as stack:
                    if name == "load":
                        phase.load.append({})
                        stack.enter_context(load(lab, keys, args.load_interval,
                                                 len(phase.load), phase.load[-1]))
                    sampler = stack.enter_context(Sampler())
                    for _ in range(per_block):
                        n += 1
                        attempt(lab, store, n, phase)
                    phase.py_ref.append(sampler.py_us)
                time.sleep(1.2)  # one flush: the console's counters reach its database
                phase.accepted += _accepted(lab) - before
        stats = lab.console("stats")
    report(phases, args)
    print("  console counters after the run:", " ".join(stats.split()))


def enroll_fake_devices(lab: Lab, count: int) -> Path:
    """Enroll ``count`` fresh device keys straight into the console's store; the key file."""
    keys = [OwnPrivateKey.generate() for _ in range(count)]
    store = Store(lab.state / "console.db")
    try:
        for i, key in enumerate(keys):
            public = key.public()
            store.enroll(f"load-{i}", public.text(), public.device_id(), time.time())
    finally:
        store.close()
    path = lab.dir / "load-keys.txt"
    path.touch(mode=0o600)
    path.write_text("".join(key.raw.hex() + "\n" for key in keys))
    return path


@contextlib.contextmanager
def load(lab: Lab, keys: Path, interval: float, epoch: int,
         figures: dict[str, float]) -> Iterator[None]:
    """bench/_load.py heartbeating through unbound while the block runs (3 s warm-up).

    Every start is a new epoch, as the agent's own restarts are: the console sees restarted
    devices, not clones.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._load", "--resolver", f"{HOST}:{lab.resolver_port}",
         "--console-key", lab.console_key, "--keys", str(keys), "--interval", str(interval),
         "--epoch", str(epoch), "--duration", "900"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        yield
    finally:
        out, _ = proc.communicate(timeout=60)  # closing stdin stops it
        figures.update(json.loads(out) if out.strip() else {})


def attempt(lab: Lab, store: Store, n: int, phase: Phase) -> None:
    """Attempt ``n`` comes from a loopback address of its own: an attacker's first event is the
    alert that counts, and the agent's flood control holds back a source's sixth within its
    window (firmware/agent/flood.py), which the benchmark then waited for in vain."""
    user, start = f"bench{n}", time.time()
    lab.ssh_attempt(user, "pw", source=f"127.0.{n // 250}.{n % 250 + 2}")
    row = stored(lab, store, user)
    phase.from_client.append(row.received - start)
    phase.from_event.append(row.received - json.loads(row.compact)["t"] / 1_000_000)


def stored(lab: Lab, store: Store, user: str) -> EventRow:
    """The console's row for ``user``'s login attempt, as soon as it is there (5 ms polls)."""
    found: list[EventRow] = []

    def seen() -> bool:
        found.extend(r for r in store.events(limit=20) if r.logtype == SSH_LOGIN_ATTEMPT
                     and json.loads(r.compact)["d"].get("USERNAME") == user)
        return bool(found)

    lab.wait_for(seen, 30, f"event {user}", poll=0.005)
    return found[0]


def _accepted(lab: Lab) -> int:
    m = re.search(r"^accepted\t(\d+)$", lab.console("stats"), re.MULTILINE)
    return int(m.group(1)) if m else 0


def report(phases: dict[str, Phase], args: argparse.Namespace) -> None:
    idle, busy = phases["no load"], phases["load"]
    print(f"alert latency through unbound (loopback), {len(idle.from_client)} SSH attempts per "
          f"condition in {args.blocks} alternating block(s); load = {args.load_devices} fake "
          f"devices x 1 heartbeat per {args.load_interval:g} s, sent to unbound:")

    def ms(values: list[float], p: float) -> float:
        return percentile(values, p) * 1000

    rows = []
    for label, attr in (("ssh client start -> stored", "from_client"),
                        ("honeypot event   -> stored", "from_event")):
        a, b = getattr(idle, attr), getattr(busy, attr)
        for p in (50, 95, 100):
            name = "max" if p == 100 else f"p{p}"
            rows.append([f"{label}  {name}", f"{ms(a, p):.1f} ms", f"{ms(b, p):.1f} ms",
                         f"{ms(b, p) / ms(a, p):.2f}" if ms(a, p) else "-"])
    ref_a, ref_b = statistics.median(idle.py_ref), statistics.median(busy.py_ref)
    rows.append(["py-ref sampled during the attempts (reference)", f"{ref_a:.1f} µs",
                 f"{ref_b:.1f} µs", f"{ref_b / ref_a:.2f}"])
    com_a, com_b = statistics.median(idle.commit_ms), statistics.median(busy.commit_ms)
    rows.append(["durable SQLite commit before the blocks (reference)", f"{com_a:.2f} ms",
                 f"{com_b:.2f} ms", f"{com_b / com_a:.2f}"])
    rows.append(["frames the console accepted during the phase", f"{idle.accepted:,}",
                 f"{busy.accepted:,}", ""])
    print(table(["", "no load", "load", "load/no load"], rows))
    print("  load generator, per block: " + "; ".join(_load_line(f) for f in busy.load))


def _load_line(f: dict[str, Any]) -> str:
    if not f:
        return "no figures"
    return (f"{f['devices']:.0f} devices, {f['sent']:,.0f} heartbeats in {f['seconds']:.0f} s "
            f"({f['rate']:.0f}/s): {f['acked']:,.0f} acknowledged, {f['stale']:,.0f} STALE, "
            f"{f['other']:,.0f} other, {f['lost']:,.0f} lost; round trip p50 "
            f"{f['rtt_p50_ms']:.1f} ms, "
            f"p95 {f['rtt_p95_ms']:.1f} ms")


def payload_figures() -> None:
    """Upstream payload bytes per data query for a few zone lengths."""
    print(f"upstream event payload bytes per query (frame header {frame.HEADER_LEN} + MAC "
          f"{frame.MAC_LEN} + fragment header {messages.FRAGMENT_HEADER_LEN} + padding 1):")
    for zone in (ZONE, "canary.example.org", "abcdefgh.example.com", "x" * 30 + ".example.org"):
        room = frame.body_size(zone) - messages.FRAGMENT_HEADER_LEN - 1
        print(f"  zone {len(zone):2d} chars ({zone[:24]}): {room} bytes "
              f"({names.max_frame_bytes(zone)}-byte frame)")


if __name__ == "__main__":
    sys.exit(main_guard(main))
