"""Alert latency: from a real SSH login attempt to the event stored at the console, through
unbound (0x20 + QNAME minimisation) on loopback.  Goal: p95 < 1 s.

Prints two figures per percentile: from the moment the ssh client starts, and from the moment
the honeypot recorded the attempt (the event's own timestamp) - the second is the DNS path alone.
Also prints the upstream payload bytes per query seen on that path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time

from console.store import EventRow, Store
from firmware.protocol import frame, messages, names
from firmware.protocol.event import TIME_FORMAT
from scripts.lab import ZONE, Lab


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attempts", type=int, default=30)
    args = parser.parse_args(argv)
    payload_figures()
    from_client: list[float] = []
    from_event: list[float] = []
    with Lab(heartbeat=3600) as lab:
        lab.wait_event(lambda e: e["logtype"] == 1000)
        store = Store(lab.state / "console.db")
        for i in range(args.attempts):
            user = f"bench{i}"
            start = time.time()
            lab.ssh_attempt(user, "pw")
            row = stored(lab, store, user)
            event_time = _event_time(row.event_json)
            from_client.append(row.received - start)
            from_event.append(row.received - event_time)
        stats = lab.console("stats")
    print(f"alert latency over {args.attempts} SSH attempts through unbound (loopback):")
    for label, values in (("ssh client start -> stored", from_client),
                          ("honeypot event   -> stored", from_event)):
        print(f"  {label}: p50 {statistics.median(values) * 1000:7.1f} ms   "
              f"p95 {percentile(values, 95) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms")
    print("  console counters after the run:", " ".join(stats.split()))


def stored(lab: Lab, store: Store, user: str) -> EventRow:
    """The console's row for ``user``'s attempt, as soon as it is there (5 ms polls)."""
    found: list[EventRow] = []

    def seen() -> bool:
        found.extend(r for r in store.events(limit=5)
                     if json.loads(r.event_json)["logdata"].get("USERNAME") == user)
        return bool(found)

    lab.wait_for(seen, 30, f"event {user}", poll=0.005)
    return found[0]


def _event_time(event_json: str) -> float:
    utc = json.loads(event_json)["utc_time"]
    return dt.datetime.strptime(utc, TIME_FORMAT).replace(tzinfo=dt.UTC).timestamp()


def payload_figures() -> None:
    """Upstream payload bytes per data query for a few zone lengths."""
    print("upstream payload bytes per query (frame header 10 + MAC 16 + fragment header 7):")
    for zone in (ZONE, "canary.example.org", "abcdefgh.example.com", "x" * 30 + ".example.org"):
        room = names.max_frame_bytes(zone) - frame.OVERHEAD - messages.FRAGMENT_HEADER_LEN
        print(f"  zone {len(zone):2d} chars ({zone[:24]}): {room} bytes "
              f"({names.max_frame_bytes(zone)}-byte frame)")


if __name__ == "__main__":
    main()
