"""A bounds-checked reader over bytes: every wire decoder in coalmine reads through it.

One place checks lengths, so a truncated or oversized field always raises ``DecodeError``
carrying the offset, never ``IndexError`` or a silently short slice.
"""

from __future__ import annotations

from firmware.shared.errors import DecodeError


class Reader:
    """Sequential reader that raises ``DecodeError`` instead of reading past the end."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, n: int, what: str = "field") -> bytes:
        if n < 0 or self.offset + n > len(self.data):
            raise DecodeError(f"truncated {what}: need {n} bytes", offset=self.offset)
        start = self.offset
        self.offset += n
        return self.data[start : self.offset]

    def uint(self, n: int, what: str = "integer") -> int:
        return int.from_bytes(self.take(n, what), "big")

    def rest(self) -> bytes:
        out = self.data[self.offset :]
        self.offset = len(self.data)
        return out

    def end(self, what: str = "message") -> None:
        if self.offset != len(self.data):
            raise DecodeError(f"{self.remaining()} trailing bytes after {what}", offset=self.offset)
