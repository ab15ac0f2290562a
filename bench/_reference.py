"""Machine references: fixed work, measured in the same run as every benchmark figure.

Our machines differ by 2x from one run to the next (other jobs, other hosts, CPU frequency), so
an absolute figure means little on its own.  Every benchmark therefore measures a **reference**
in the same run, next to what it measures, and prints the ratio: that ratio is the figure to
track.  The reference workloads below are fixed forever; change one and every ratio measured
before stops being comparable.

No project imports: bench/_workload.py runs inside an older checkout and uses this too.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def py_unit() -> int:
    """One unit of fixed pure-Python work (dicts, ints, bytes, str: what a console does).

    Never change it: ratios to it compare across versions only while it stays the same.
    """
    table: dict[bytes, int] = {}
    text = "0123456789abcdefghijklmnopqrstuv" * 4
    total = 0
    for i in range(64):
        key = i.to_bytes(8, "big") + b"ref"
        table[key] = table.get(key, 0) + int(text[i % 60 : i % 60 + 40], 32) % 9973
        total += len(key.hex()) + table[key] % 7
    return total


_BOX_KEY = bytes(range(32))
_BOX_NONCE = bytes(24)
_BOX_PLAIN = bytes(135)  # a 151-byte frame's body (v2, zone c.test)
_REF_LABELS = (b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 53, b"c", b"test")
_REF_QUERY = (bytes.fromhex("123401000001000000000000")  # a fixed TXT query under c.test
              + b"".join(bytes((len(x),)) + x for x in _REF_LABELS) + b"\0\x00\x10\x00\x01")


def _box_unit() -> None:
    from nacl.bindings import crypto_secretbox, crypto_secretbox_open

    crypto_secretbox_open(crypto_secretbox(_BOX_PLAIN, _BOX_NONCE, _BOX_KEY), _BOX_NONCE,
                          _BOX_KEY)


def _dnslib_unit() -> None:
    import dnslib

    record = dnslib.DNSRecord.parse(_REF_QUERY)
    reply = record.reply()
    reply.add_answer(dnslib.RR(record.q.qname, dnslib.QTYPE.TXT, ttl=0,
                               rdata=dnslib.TXT(b"x" * 64)))
    reply.pack()


def cpu_us_per_call(fn: Callable[[], object], calls: int, batches: int = 7) -> float:
    """Median over ``batches`` of the process CPU time per call, in µs."""
    times = []
    for _ in range(batches):
        start = time.process_time()
        for _ in range(calls):
            fn()
        times.append((time.process_time() - start) / calls * 1e6)
    return statistics.median(times)


def fsync_ms(directory: Path, commits: int = 40) -> float:
    """Wall ms per one-row SQLite commit with synchronous=FULL (WAL) on ``directory``'s disk."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        db = sqlite3.connect(Path(tmp) / "ref.db", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE t (x BLOB)")
            start = time.perf_counter()
            for _ in range(commits):
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t VALUES (?)", (bytes(400),))
                db.execute("COMMIT")
            return (time.perf_counter() - start) / commits * 1e3
        finally:
            db.close()


@dataclass(frozen=True)
class Reference:
    """The machine's speed right now, on fixed work that no code under test touches."""

    py_us: float  # CPU µs for one py_unit
    box_us: float  # CPU µs for one secretbox seal + open of a 135-byte body
    dnslib_us: float  # CPU µs for dnslib parse + reply + pack of one TXT query
    fsync_ms: float  # wall ms for one durable SQLite commit

    @classmethod
    def measure(cls, directory: Path | None = None) -> Reference:
        return cls(cpu_us_per_call(py_unit, 400), cpu_us_per_call(_box_unit, 4000),
                   cpu_us_per_call(_dnslib_unit, 300),
                   fsync_ms(directory or Path(tempfile.gettempdir())))

    def line(self) -> str:
        return (f"py-ref {self.py_us:.1f} µs, secretbox seal+open {self.box_us:.2f} µs, "
                f"dnslib query {self.dnslib_us:.1f} µs, durable commit {self.fsync_ms:.2f} ms")


class Sampler:
    """py-ref sampled in a background thread *while* a measurement runs, at a ~2% duty cycle.

    A reference measured before or after a run can meet another moment of a shared machine;
    sampled during the run it sees the same one.  Each sample is ``calls`` py-ref units timed
    with the thread's own CPU clock; the figure is the median.  Use it while this process only
    waits (for a server, dnsperf, or a subprocess): the samples then hardly compete with the
    work they accompany.
    """

    def __init__(self, period: float = 0.1, calls: int = 20) -> None:
        self.period, self.calls = period, calls
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="py-ref sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            start = time.thread_time()
            for _ in range(self.calls):
                py_unit()
            self.samples.append((time.thread_time() - start) / self.calls * 1e6)

    @property
    def py_us(self) -> float:
        if not self.samples:  # a very short run: measure once now
            return cpu_us_per_call(py_unit, self.calls, batches=5)
        return statistics.median(self.samples)
