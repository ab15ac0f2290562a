"""Splitting messages into fragments and reassembling them, as pure state machines.

A message that does not fit one query travels as up to 255 fragments, each its own frame under
its own counter.  The reassembler is bounded (partial messages per device, bytes, age) so a
flood of first fragments cannot exhaust the console's memory; fragments are idempotent, so a
retransmitted fragment changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.errors import DecodeError, InputError
from firmware.protocol.messages import FRAGMENT_HEADER_LEN, MAX_FRAGMENTS, Fragment


def split(message: bytes, msg_id: int, body_room: int) -> list[Fragment]:
    """Cut ``message`` into fragments whose bodies fit ``body_room`` bytes."""
    size = body_room - FRAGMENT_HEADER_LEN
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
    chunks: dict[int, bytes] = field(default_factory=dict)

    def size(self) -> int:
        return sum(len(c) for c in self.chunks.values())


@dataclass
class Reassembler:
    """Collects fragments per (device, message id); returns the message once it is whole."""

    max_partial_per_device: int = 16
    max_message_bytes: int = 16384
    max_age: float = 600.0
    _partial: dict[tuple[bytes, int], _Partial] = field(default_factory=dict)

    def add(
        self, device_id: bytes, frag: Fragment, now: float
    ) -> tuple[bytes | None, frozenset[int]]:
        """Add ``frag``; return (whole message or None, indexes received so far)."""
        if frag.count == 1:
            return frag.chunk, frozenset({0})
        key = (device_id, frag.msg_id)
        part = self._partial.get(key)
        if part is None:
            self._expire(device_id, now)
            part = self._partial[key] = _Partial(frag.count, now)
        if part.count != frag.count:
            raise DecodeError(f"fragment count {frag.count} differs from {part.count}", offset=6)
        part.chunks.setdefault(frag.index, frag.chunk)
        if part.size() > self.max_message_bytes:
            del self._partial[key]
            raise InputError(f"message {frag.msg_id} exceeds {self.max_message_bytes} bytes")
        if len(part.chunks) < part.count:
            return None, frozenset(part.chunks)
        del self._partial[key]
        return b"".join(part.chunks[i] for i in range(part.count)), frozenset(range(part.count))

    def pending(self) -> int:
        return len(self._partial)

    def _expire(self, device_id: bytes, now: float) -> None:
        for key in [k for k, p in self._partial.items() if now - p.started > self.max_age]:
            del self._partial[key]
        mine = sorted(
            (p.started, k) for k, p in self._partial.items() if k[0] == device_id
        )
        for _, key in mine[: max(0, len(mine) - self.max_partial_per_device + 1)]:
            del self._partial[key]
