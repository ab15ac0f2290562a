"""Splitting messages into fragments and reassembling them, as pure state machines.

A message that does not fit one query travels as up to 255 fragments, each its own frame under
its own counter.  The reassembler is bounded (partial messages per device, bytes, age) so a
flood of first fragments cannot exhaust the console's memory; fragments are idempotent, so a
retransmitted fragment changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.protocol.messages import FRAGMENT_HEADER_LEN, MAX_FRAGMENTS, Fragment
from firmware.shared.errors import DecodeError, InputError


def split(message: bytes, msg_id: int, body_size: int) -> list[Fragment]:
    """Cut ``message`` into fragments whose padded bodies fit ``body_size`` bytes."""
    size = body_size - FRAGMENT_HEADER_LEN - 1  # one byte at least for the padding
    if size <= 0:
        raise ValueError("no room for fragment data")
    count = max(1, -(-len(message) // size))
    if count > MAX_FRAGMENTS:
        raise InputError(f"message of {len(message)} bytes needs {count} fragments (max 255)")
    return [
        Fragment(msg_id, i, count, message[i * size : (i + 1) * size]) for i in range(count)
    ]


@dataclass
class _Partial:
    count: int
    started: float
    size: int = 0
    chunks: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Reassembler:
    """Collects fragments per (device, message id); returns the message once it is whole.

    Partial messages are kept per device, oldest first, so bounding one device's count costs
    nothing and aged partials are swept at most every tenth of ``max_age``.
    """

    max_partial_per_device: int = 16
    max_message_bytes: int = 16384
    max_age: float = 600.0
    _partial: dict[bytes, dict[int, _Partial]] = field(default_factory=dict)
    _swept: float = 0.0

    def add(
        self, device_id: bytes, frag: Fragment, now: float
    ) -> tuple[bytes | None, frozenset[int]]:
        """Add ``frag``; return (whole message or None, indexes received so far)."""
        if frag.count == 1:
            return frag.chunk, _ONE
        mine = self._partial.get(device_id, _NONE)
        part = mine.get(frag.msg_id)
        if part is None:
            self._sweep(now)
            mine = self._partial.setdefault(device_id, {})  # after the sweep: it may drop it
            while len(mine) >= self.max_partial_per_device:
                del mine[next(iter(mine))]  # the oldest: dicts keep their insertion order
            part = mine[frag.msg_id] = _Partial(frag.count, now)
        if part.count != frag.count:
            raise DecodeError(f"fragment count {frag.count} differs from {part.count}", offset=10)
        if frag.index not in part.chunks:
            part.chunks[frag.index] = frag.chunk
            part.size += len(frag.chunk)
        if part.size > self.max_message_bytes:
            del mine[frag.msg_id]
            raise InputError(f"message {frag.msg_id} exceeds {self.max_message_bytes} bytes")
        if len(part.chunks) < part.count:
            return None, frozenset(part.chunks)
        del mine[frag.msg_id]
        if not mine:
            del self._partial[device_id]
        return b"".join(part.chunks[i] for i in range(part.count)), frozenset(range(part.count))

    def pending(self) -> int:
        return sum(len(mine) for mine in self._partial.values())

    def holds(self, device_id: bytes, msg_id: int) -> bool:
        """Whether part of this message is here (then it cannot have been stored yet)."""
        mine = self._partial.get(device_id)
        return mine is not None and msg_id in mine

    def _sweep(self, now: float) -> None:
        """Drop partial messages older than ``max_age`` (every tenth of it, at most)."""
        if now - self._swept < self.max_age / 10:
            return
        self._swept = now
        for device_id, mine in list(self._partial.items()):
            for msg_id in [m for m, p in mine.items() if now - p.started > self.max_age]:
                del mine[msg_id]
            if not mine:
                del self._partial[device_id]


_ONE = frozenset({0})
_NONE: dict[int, _Partial] = {}  # what a device without partial messages holds: never written
