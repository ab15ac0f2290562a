"""Events: the typed record services emit, its compact wire form and OpenCanary's JSON shape.

On the wire an event is ``0x01 | zlib(compact JSON)``: small enough that an SSH login attempt
fits one or two DNS queries.  The console turns it into OpenCanary's flat JSON (``src_host,
src_port, dst_host, dst_port, node_id, logtype, logdata, utc_time, local_time,
local_time_adjusted``) so SIEM pipelines written for OpenCanary parse it unchanged.
Everything decoded here came from a device and, before that, from an attacker: types, sizes and
key names are checked and strings are bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware.errors import DecodeError
from firmware.protocol.catalogue import SECRET_KEYS, EventCode, lookup

MSG_EVENT = 0x01
MAX_VALUE_CHARS = 1024
MAX_KEYS = 32
MAX_EVENT_BYTES = 16384
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
SECRET_MASK = "********"  # noqa: S105 -- what replaces a secret, not one
KEY_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,31}")  # logdata keys, also checked by services

Value = str | int


def bound(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Cut attacker-supplied text to ``limit`` characters (marking the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass(frozen=True)
class Event:
    """One thing that happened on the device, as a service or the agent reports it."""

    code: EventCode
    time: float  # UTC unix seconds, device clock
    src_host: str = ""
    src_port: int = -1
    dst_host: str = ""
    dst_port: int = -1
    data: Mapping[str, Value] = field(default_factory=dict)

    def to_compact(self) -> dict[str, Any]:
        return {
            "c": int(self.code), "t": round(self.time * 1_000_000),
            "sh": self.src_host, "sp": self.src_port, "dh": self.dst_host, "dp": self.dst_port,
            "d": dict(self.data),
        }


def from_compact(obj: object) -> Event:
    """Validate a compact dict (from the wire or the local event socket) into an Event."""
    if not isinstance(obj, dict):
        raise DecodeError("event is not an object", offset=0)
    code = lookup(_int(obj, "c", 0, 65535))
    if code is None:
        raise DecodeError(f"event code {obj.get('c')!r} is not in the catalogue", offset=0)
    data = obj.get("d", {})
    if not isinstance(data, dict) or len(data) > MAX_KEYS:
        raise DecodeError("event data is not a small object", offset=0)
    clean: dict[str, Value] = {}
    for k, v in data.items():
        if not isinstance(k, str) or not KEY_PATTERN.fullmatch(k):
            raise DecodeError(f"bad event data key {str(k)[:40]!r}", offset=0)
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise DecodeError(f"event data {k} is not a string or integer", offset=0)
        clean[k] = bound(v) if isinstance(v, str) else v
    return Event(
        code=code, time=_int(obj, "t", 0, 2**63) / 1_000_000,
        src_host=bound(_str(obj, "sh"), 255), src_port=_int(obj, "sp", -1, 65535),
        dst_host=bound(_str(obj, "dh"), 255), dst_port=_int(obj, "dp", -1, 65535), data=clean,
    )


def encode_message(event: Event) -> bytes:
    text = json.dumps(event.to_compact(), separators=(",", ":"), ensure_ascii=False)
    return bytes((MSG_EVENT,)) + zlib.compress(text.encode("utf-8"), 9)


def decode_message(message: bytes) -> Event:
    """Decode a reassembled event message; bounded decompression, strict validation."""
    if not message or message[0] != MSG_EVENT:
        raise DecodeError("not an event message", offset=0)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(message[1:], MAX_EVENT_BYTES)
    except zlib.error as exc:
        raise DecodeError(f"event does not decompress: {exc}", offset=1) from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise DecodeError("event too large or truncated", offset=len(message))
    try:
        obj = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise DecodeError(f"event is not JSON: {exc}", offset=1) from None
    return from_compact(obj)


def masked(logdata: Mapping[str, Any]) -> dict[str, Any]:
    """``logdata`` with every secret (passwords, ...) replaced by a fixed mask."""
    return {k: (SECRET_MASK if k in SECRET_KEYS else v) for k, v in logdata.items()}


def to_opencanary(event: Event, node_id: str, *, mask_secrets: bool = True) -> dict[str, Any]:
    """OpenCanary's flat JSON for ``event``; ``node_id`` comes from the console's registry."""
    utc = dt.datetime.fromtimestamp(event.time, dt.UTC)
    logdata = masked(event.data) if mask_secrets else dict(event.data)
    return {
        "dst_host": event.dst_host, "dst_port": event.dst_port,
        "local_time": utc.strftime(TIME_FORMAT),
        "local_time_adjusted": utc.astimezone().strftime(TIME_FORMAT),
        "logdata": logdata, "logtype": int(event.code), "node_id": node_id,
        "src_host": event.src_host, "src_port": event.src_port,
        "utc_time": utc.strftime(TIME_FORMAT),
    }


def _int(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise DecodeError(f"event field {key} is not an integer in [{lo}, {hi}]", offset=0)
    return v


def _str(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key, "")
    if not isinstance(v, str):
        raise DecodeError(f"event field {key} is not a string", offset=0)
    return v
