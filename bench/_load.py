"""Many fake devices heartbeating through a resolver, from one process (load for alert_latency).

Each device has its own key (enrolled by the caller), a random session per start, counters in
``--epoch`` (give every start a higher one, as the agent persists and bumps its epoch), and
sends a real v2 heartbeat (padded, sealed, one full query name) every ``--interval`` seconds,
the devices evenly staggered.  The heartbeats state the shipped 60 s interval, so the console
does not call a device offline in a pause between load blocks (it would after three stated
intervals + 30 s, and store an event for each device).  Queries go to the resolver as a
device's would, one UDP socket for all; answers are matched by query id, opened with the
device's key and counted (heartbeat acknowledged, STALE, anything else, unanswered after
``--timeout``), with the round-trip time of each answered heartbeat.

Bounded in time and count: it stops after ``--duration`` seconds or when stdin closes, whichever
comes first, and then prints its figures as one JSON object.

Run: python3 -m bench._load --resolver 127.0.0.1:PORT --console-key KEY --keys FILE
"""

from __future__ import annotations

import argparse
import json
import secrets
import select
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from console import dnswire
from firmware.protocol.frame import Header, body_size, open_reply, seal
from firmware.protocol.keys import OwnPrivateKey, PeerPublicKey
from firmware.protocol.messages import Heartbeat, HeartbeatAck, Stale, decode_reply, encode_body
from firmware.protocol.names import encode_frame
from firmware.protocol.replay import make_counter
from firmware.shared.errors import CoalmineError

ZONE = "c.test"


class FakeDevice:
    def __init__(self, key: OwnPrivateKey, console: PeerPublicKey, epoch: int,
                 interval: int) -> None:
        self.device_id = key.public().device_id()
        self.shared = key.shared_key(console)
        self.session = secrets.randbits(32)
        self.epoch, self.seq = epoch, 0
        self.interval = interval
        self.started = time.monotonic()

    def heartbeat(self) -> tuple[Header, list[bytes]]:
        self.seq += 1
        header = Header(self.device_id, self.session, make_counter(self.epoch, self.seq))
        beat = Heartbeat(int(time.monotonic() - self.started), self.interval)
        frame = seal(self.shared, header, encode_body(beat, body_size(ZONE)))
        return header, [x.encode("ascii") for x in [*encode_frame(frame), *ZONE.split(".")]]

    def verdict(self, header: Header, answer: bytes) -> str:
        """What the console answered: "acked", "stale" or "other"."""
        try:
            reply = decode_reply(open_reply(self.shared, header, txt_data(answer)))
        except (CoalmineError, IndexError, ValueError):
            return "other"
        return "acked" if isinstance(reply, HeartbeatAck) else \
            "stale" if isinstance(reply, Stale) else "other"


def txt_data(msg: bytes) -> bytes:
    """The TXT data of the first answer record (its strings joined); IndexError when none."""
    if int.from_bytes(msg[6:8], "big") == 0 or msg[3] & 0x0F:
        raise IndexError("no answer")
    pos = _skip_name(msg, 12) + 4
    pos = _skip_name(msg, pos)
    rtype, rdlength = int.from_bytes(msg[pos:pos + 2], "big"), \
        int.from_bytes(msg[pos + 8:pos + 10], "big")
    if rtype != dnswire.TYPE_TXT:
        raise IndexError("not TXT")
    rdata, out, i = msg[pos + 10:pos + 10 + rdlength], bytearray(), 0
    while i < len(rdata):
        out += rdata[i + 1:i + 1 + rdata[i]]
        i += 1 + rdata[i]
    return bytes(out)


def _skip_name(msg: bytes, pos: int) -> int:
    while msg[pos]:
        if msg[pos] & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + msg[pos]
    return pos + 1


Pending = tuple[float, FakeDevice, Header]  # sent at, by whom, under which header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolver", required=True, help="HOST:PORT")
    ap.add_argument("--console-key", required=True, help="the console's public key")
    ap.add_argument("--keys", type=Path, required=True, help="device private keys, hex, one a line")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between heartbeats")
    ap.add_argument("--epoch", type=int, default=1, help="higher at every start")
    ap.add_argument("--stated-interval", type=int, default=60,
                    help="the interval the heartbeats state (the console's offline timer)")
    ap.add_argument("--duration", type=float, default=600.0, help="stop after this long")
    ap.add_argument("--timeout", type=float, default=5.0, help="an answer later is lost")
    args = ap.parse_args()
    console = PeerPublicKey.from_text(args.console_key)
    devices = [FakeDevice(OwnPrivateKey(bytes.fromhex(line)), console, args.epoch,
                          args.stated_interval) for line in args.keys.read_text().split()]
    host, port = args.resolver.rsplit(":", 1)
    stop = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    figures = drive(devices, (host, int(port)), args.interval, args.duration, args.timeout, stop)
    json.dump(figures, sys.stdout)


def drive(devices: list[FakeDevice], resolver: tuple[str, int], interval: float,
          duration: float, timeout: float, stop: threading.Event) -> dict[str, float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    step = interval / len(devices)
    start = time.monotonic()
    pending: dict[int, Pending] = {}  # by query id
    rtts: list[float] = []
    counts = {"sent": 0, "acked": 0, "stale": 0, "other": 0, "lost": 0}
    qid, n = 0, 0
    end = start + duration
    while not stop.is_set() and time.monotonic() < end:
        due = start + n * step
        now = time.monotonic()
        if now >= due:
            qid = (qid + 1) & 0xFFFF
            if qid in pending:  # 65536 in flight: the oldest one is long lost
                del pending[qid]
                counts["lost"] += 1
            device = devices[n % len(devices)]
            header, labels = device.heartbeat()
            try:
                sock.sendto(dnswire.build_query(labels, dnswire.TYPE_TXT, qid=qid), resolver)
                pending[qid] = (time.monotonic(), device, header)
                counts["sent"] += 1
            except OSError:
                counts["lost"] += 1
            n += 1
            continue
        readable, _, _ = select.select([sock], [], [], min(due - now, 0.05))
        if readable:
            _receive(sock, pending, rtts, counts)
        for q in [q for q, (t, _, _) in pending.items() if now - t > timeout]:
            del pending[q]
            counts["lost"] += 1
    drain_until = time.monotonic() + min(timeout, 2.0)
    while pending and time.monotonic() < drain_until:
        if select.select([sock], [], [], 0.05)[0]:
            _receive(sock, pending, rtts, counts)
    counts["lost"] += len(pending)
    sock.close()
    elapsed = time.monotonic() - start
    rtts.sort()
    return {**counts, "seconds": elapsed, "devices": len(devices), "interval": interval,
            "rate": counts["sent"] / elapsed if elapsed else 0.0,
            "rtt_p50_ms": statistics.median(rtts) * 1e3 if rtts else 0.0,
            "rtt_p95_ms": rtts[int(0.95 * (len(rtts) - 1))] * 1e3 if rtts else 0.0}


def _receive(sock: socket.socket, pending: dict[int, Pending], rtts: list[float],
             counts: dict[str, int]) -> None:
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            continue
        if len(data) < dnswire.HEADER_LEN:
            continue
        query = pending.pop(int.from_bytes(data[:2], "big"), None)
        if query is None:
            continue
        sent, device, header = query
        rtts.append(time.monotonic() - sent)
        counts[device.verdict(header, data)] += 1


if __name__ == "__main__":
    main()
