"""Frame counters and the console's per-device replay window.

Counter (48 bits) = boot epoch (24 bits) | sequence (24 bits).  The device persists the epoch
and bumps it before its first send after every start, so counters only grow even without a
clock.  The console accepts each counter once: a sliding window of recently seen counters
below the highest one, and a floor (the persisted highest counter) below which all is refused.
"""

from __future__ import annotations

import enum

from firmware.protocol.frame import MAX_COUNTER

SEQ_BITS = 24
MAX_SEQ = (1 << SEQ_BITS) - 1
MAX_EPOCH = MAX_COUNTER >> SEQ_BITS


def make_counter(epoch: int, seq: int) -> int:
    if not (0 <= epoch <= MAX_EPOCH and 0 <= seq <= MAX_SEQ):
        raise ValueError("epoch or sequence out of range")
    return (epoch << SEQ_BITS) | seq


class Verdict(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # seen inside the window: answer from cache, no second effect
    TOO_OLD = "too_old"  # below the window or the persisted floor


class ReplayWindow:
    """Which counters of one device have been seen; ``highest`` is what gets persisted."""

    __slots__ = ("bits", "floor", "highest", "mask", "size")

    def __init__(self, floor: int = -1, size: int = 4096) -> None:
        self.floor = floor  # counters <= floor are refused (restored from storage)
        self.highest = floor
        self.size = size
        self.bits = 0  # bit i set = counter (highest - i) seen
        self.mask = (1 << size) - 1  # made once: a 4096-bit integer costs to build

    def check(self, counter: int) -> Verdict:
        if counter <= self.floor:
            return Verdict.TOO_OLD
        if counter > self.highest:
            return Verdict.NEW
        offset = self.highest - counter
        if offset >= self.size:
            return Verdict.TOO_OLD
        return Verdict.DUPLICATE if self.bits >> offset & 1 else Verdict.NEW

    def accept(self, counter: int) -> None:
        if counter > self.highest:
            shift = counter - self.highest
            self.bits = ((self.bits << shift) | 1) & self.mask if shift < self.size else 1
            self.highest = counter
        else:
            self.bits |= 1 << (self.highest - counter)
