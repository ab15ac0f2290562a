"""A fake console core behind the real interface (``handle`` + ``commit``), and raw DNS queries.

The DNS layers (handler, server) are tested against this double, not the real core: what they
must do depends only on the kind of answer and whether it needs a commit, never on the wire
protocol's frames.  The first label of a name under ``c.test`` says what the fake answers:

  ack...   TXT that acknowledges something (durable: sent only after a commit)
  txt...   TXT that acknowledges nothing
  sick...  SERVFAIL (the core's storage failed)
  boom...  raises (a bug in the core)
  other    NODATA
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from console.core import Kind

ZONE = (b"c", b"test")
TXT, A, SOA, NS = 16, 1, 6, 2


@dataclass(frozen=True)
class FakeAnswer:
    kind: Kind
    txt: bytes = b""
    durable: bool = False


@dataclass
class FakeCore:
    """Counts what it handled and committed; ``commit_ok`` and ``gate`` steer ``commit``."""

    commit_ok: bool = True
    commit_raises: bool = False
    gate: threading.Event | None = None  # commit waits for it when set
    in_commit: threading.Event = field(default_factory=threading.Event)
    handled: int = 0  # durable answers handed out
    committed: int = 0  # durable answers covered by a successful commit
    commits: int = 0

    def handle(self, labels: Sequence[bytes], qtype: int) -> FakeAnswer:
        n = len(labels)
        if n < len(ZONE) or tuple(x.lower() for x in labels[n - len(ZONE):]) != ZONE:
            return FakeAnswer(Kind.REFUSED)
        if n == len(ZONE):
            return FakeAnswer(Kind.APEX)
        first = labels[0].lower()
        if first.startswith(b"ack"):
            self.handled += 1
            return FakeAnswer(Kind.TXT, b"ack %d" % self.handled, durable=True)
        if first.startswith(b"txt"):
            return FakeAnswer(Kind.TXT, b"plain")
        if first.startswith(b"sick"):
            return FakeAnswer(Kind.SERVFAIL)
        if first.startswith(b"boom"):
            raise RuntimeError("a bug in the core")
        return FakeAnswer(Kind.NODATA)

    def commit(self) -> bool:
        self.commits += 1
        self.in_commit.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.commit_raises:
            raise RuntimeError("a bug in commit")
        if self.commit_ok:
            self.committed = self.handled
        return self.commit_ok


def query(name: str, qtype: int = TXT, qid: int = 0x1234, *, qclass: int = 1,
          edns: int | None = None, options: bytes = b"") -> bytes:
    """A DNS query built by hand with struct (no console code, no dnspython)."""
    labels = [x.encode("ascii") for x in name.strip(".").split(".") if x]
    qname = b"".join(bytes((len(x),)) + x for x in labels) + b"\0"
    opt = b""
    if edns is not None:
        opt = b"\0" + struct.pack(">HHIH", 41, edns, 0, len(options)) + options
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1 if opt else 0)
    return header + qname + struct.pack(">HH", qtype, qclass) + opt


def padding(size: int) -> bytes:
    """An EDNS padding option (RFC 7830) whose whole length is ``size`` (at least 4)."""
    return struct.pack(">HH", 12, size - 4) + bytes(size - 4)
