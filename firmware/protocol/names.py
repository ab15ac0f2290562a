"""Frames <-> DNS query names: lower-case base32hex in <=63-character labels under the zone.

Resolvers randomise the letter case of query names (0x20 encoding), so upstream data uses a
case-free alphabet.  base32hex (digits 0-9, letters a-v) is exactly Python's ``int(s, 32)``
alphabet, which decodes ~20x faster than ``base64.b32decode`` on the console's hot path.
Only the canonical encoding is accepted: labels of exactly 63 characters except the last, no
padding, zero pad bits, so every frame has exactly one name.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from firmware.shared.errors import DecodeError

MAX_LABEL = 63
MAX_NAME_WIRE = 255  # RFC 1035: whole name on the wire, length bytes and root included


def encode_frame(frame: bytes) -> list[str]:
    """Return the data labels that carry ``frame`` (lower case, canonical split)."""
    text = base64.b32hexencode(frame).decode("ascii").rstrip("=").lower()
    return [text[i : i + MAX_LABEL] for i in range(0, len(text), MAX_LABEL)]


def decode_labels(labels: Sequence[str] | Sequence[bytes]) -> bytes:
    """Decode data labels (any letter case; text, or raw bytes as the console receives them)
    back into the frame; non-canonical input raises."""
    if not labels:
        raise DecodeError("no data labels", offset=0)
    for i, label in enumerate(labels[:-1]):
        if len(label) != MAX_LABEL:
            raise DecodeError(f"label {i} is {len(label)} characters, not {MAX_LABEL}", offset=i)
    last = labels[-1]
    if not 0 < len(last) <= MAX_LABEL:
        raise DecodeError("last data label has a bad length", offset=len(labels) - 1)
    if isinstance(last, bytes):  # int() and re take bytes as they are: no decoding step
        text = b"".join(labels)  # type: ignore[arg-type]
    else:
        text = "".join(labels).encode("latin-1", "replace")  # type: ignore[arg-type]
    chars = len(text)
    nbytes = chars * 5 // 8
    if (nbytes * 8 + 4) // 5 != chars:
        raise DecodeError(f"{chars} characters is not a whole number of bytes", offset=chars)
    try:  # isalnum() excludes what int() would also take (signs, "_", spaces)
        value = int(text, 32) if text.isalnum() else -1
    except ValueError:  # letters beyond v
        value = -1
    if value < 0:
        raise DecodeError("character outside base32hex", offset=0)
    pad = chars * 5 - nbytes * 8
    if value & ((1 << pad) - 1):
        raise DecodeError("non-zero pad bits", offset=chars)
    return (value >> pad).to_bytes(nbytes, "big")


def zone_wire_length(zone: str) -> int:
    """Bytes the zone takes at the end of a name on the wire (its labels plus the root)."""
    zone = zone.strip(".")
    return len(zone) + 2 if zone else 1


def max_frame_bytes(zone: str) -> int:
    """Largest frame that fits in one query name under ``zone``."""
    avail = MAX_NAME_WIRE - zone_wire_length(zone)
    full, rest = divmod(avail, MAX_LABEL + 1)
    chars = full * MAX_LABEL + max(0, rest - 1)
    return chars * 5 // 8


def name_for(frame: bytes, zone: str) -> str:
    """The fully qualified query name (with trailing dot) that carries ``frame``."""
    labels = encode_frame(frame)
    name = ".".join([*labels, zone.strip(".")]) + "."
    wire = sum(len(label) + 1 for label in labels) + zone_wire_length(zone)
    if wire > MAX_NAME_WIRE:
        raise DecodeError(f"frame of {len(frame)} bytes does not fit in a name", offset=wire)
    return name


def split_name(qname: str, zone: str) -> list[str] | None:
    """The data labels of ``qname`` if it lies strictly below ``zone`` (case-insensitive)."""
    name = qname.rstrip(".").lower()
    suffix = "." + zone.strip(".").lower()
    if not name.endswith(suffix):
        return None
    head = name[: -len(suffix)]
    return head.split(".") if head else None
