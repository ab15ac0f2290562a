"""Registration flood: what strangers who know the console's public key cost it.

Every stranger has a key of its own and sends a valid, authentic registration frame (the worst
case: junk is refused before any X25519 work).  The queries go through the console's real
``Responder`` (DNS parse, core, answer) in process, with its store on disk, under a clock the
benchmark moves (``--rate`` strangers per second of console time), in two configurations:

* shipped limits (64 pending, 2 new keys per second, bursts of 10): most strangers are throttled
  before any public-key work;
* unthrottled (the bucket opened wide, still 64 pending): every stranger costs an X25519
  operation, a pending row, and the eviction of the oldest.

Printed: console CPU per bogus registration, the pending table's size at the end, and an honest
device's heartbeat query measured in the same run as the reference, with py-ref
(bench/_reference.py).  The frames are built before the timed loop.

Run: python3 -m bench.registration_flood [--strangers 3000] [--rate 500]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench._common import table
from bench._reference import Reference
from console.core import Console, Limits
from console.handler import Responder
from console.pairing import PairingLimits
from console.store import Store
from firmware.protocol.frame import register_body_size, register_header, seal_register
from firmware.protocol.keys import OwnPrivateKey
from firmware.protocol.messages import Register, encode_register
from firmware.protocol.replay import make_counter
from firmware.shared.cli import main_guard
from tests.console.device import FakeDevice, wire_query

ZONE = "c.test"


def stranger_query(console_key: OwnPrivateKey, n: int) -> bytes:
    key = OwnPrivateKey.generate()
    public = key.public().raw
    header = register_header(public, n, make_counter(1, 1))
    body = encode_register(Register(f"x{n}"), register_body_size(ZONE))
    frame = seal_register(key.shared_key(console_key.public()), public, header, body)
    return wire_query(FakeDevice(ZONE, console_key.public()).labels(frame), qid=n & 0xFFFF)


def run(state: Path, strangers: int, rate: float, limits: PairingLimits) -> dict[str, float]:
    key = OwnPrivateKey.generate()
    store = Store(state / "console.db")
    clock = [1_000_000.0]
    core = Console(ZONE, key, store, Limits(pairing=limits), clock=lambda: clock[0])
    responder = Responder(core, ZONE, "ns." + ZONE, "hostmaster." + ZONE)
    honest = FakeDevice(ZONE, key.public())
    store.enroll("honest", honest.public_text, honest.device_id, time.time())
    core.refresh_registry()
    queries = [stranger_query(key, n) for n in range(strangers)]
    beats = [wire_query(honest.heartbeat()[1]) for _ in range(strangers)]
    start = time.process_time()
    for n, q in enumerate(queries):
        clock[0] += 1 / rate
        responder.respond(q)
        if n % 500 == 499:
            core.commit()
            core.flush()
    flood_cpu = time.process_time() - start
    start = time.process_time()
    for q in beats:
        responder.respond(q)
    beat_cpu = time.process_time() - start
    core.close()
    out = {"per_registration_us": flood_cpu / strangers * 1e6,
           "heartbeat_us": beat_cpu / strangers * 1e6,
           "pending": float(len(store.pending_rows())),
           "throttled": float(core.stats["registration_throttled"]),
           "answered": float(core.stats["registrations"])}
    store.close()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strangers", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=500.0, help="strangers per console second")
    args = ap.parse_args(argv)
    logging.getLogger("console").setLevel(logging.ERROR)  # one warning per admitted stranger
    shipped = PairingLimits()
    configs = {"shipped limits": shipped,
               "unthrottled": PairingLimits(new_per_second=1e9, new_burst=10**9)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="coalmine-bench-") as tmp:
        ref = Reference.measure(Path(tmp))
        for label, limits in configs.items():
            state = Path(tmp) / label.replace(" ", "-")
            state.mkdir()
            r = run(state, args.strangers, args.rate, limits)
            rows.append([label, f"{r['per_registration_us']:.1f} µs = "
                         f"{r['per_registration_us'] / ref.py_us:.2f} ref",
                         f"{r['per_registration_us'] / r['heartbeat_us']:.2f}",
                         f"{r['answered']:.0f} / {r['throttled']:.0f}",
                         f"{r['pending']:.0f} (cap {limits.max_pending})"])
    print(f"  {args.strangers:,} strangers with valid registration frames, {args.rate:g} per "
          "second of console time, through the real Responder in process (store on disk)")
    print(table(["", "console CPU per bogus registration", "/ honest heartbeat",
                 "answered / throttled", "pending at the end"], rows))
    print(f"  reference: {ref.line()}")


if __name__ == "__main__":
    sys.exit(main_guard(main))
