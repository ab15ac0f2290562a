"""Events: the typed record services emit, its compact wire form and OpenCanary's JSON shape.

On the wire an event is ``0x02 | raw DEFLATE(compact JSON)``, compressed against a preset
dictionary (``DICTIONARY``: the keys, the JSON skeleton and common version strings), so an SSH
login attempt with a random 40-character password is ~108 bytes and fits one or two DNS queries
(219 bytes and three queries without the dictionary).  Raw DEFLATE, not a zlib stream: the
frames' MAC already authenticates every byte, so zlib's header, dictionary id and Adler-32 would
be 10 bytes of each event for nothing, and one fragment holds 104.  Agents before that sent
``0x01 | zlib(...)`` (same dictionary); the console still reads it, as their queues may hold it.

The console turns it into OpenCanary's flat JSON (``src_host, src_port, dst_host, dst_port,
node_id, logtype, logdata, utc_time, local_time, local_time_adjusted``) so SIEM pipelines
written for OpenCanary parse it unchanged.
Everything decoded here came from a device and, before that, from an attacker, so ``from_compact``
(used by the agent on every local datagram and by the console on every message) accepts only what
every later step can hold: codes in the catalogue, times a ``datetime`` can represent, host
fields that are IP addresses, ports in range, integers a JSON consumer reads exactly, and strings
made inert and bounded (:mod:`firmware.protocol.text`).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import re
import zlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from firmware.protocol.catalogue import SECRET_KEYS, EventCode
from firmware.protocol.text import MAX_VALUE_CHARS, inert
from firmware.shared.errors import DecodeError

MSG_EVENT = 0x02  # raw DEFLATE against DICTIONARY
MSG_EVENT_ZLIB = 0x01  # the same in a zlib stream: what agents before 0x02 queued
_WBITS = {MSG_EVENT: -15, MSG_EVENT_ZLIB: 15}
# Part of the protocol: changing a byte changes every message (pinned by a golden vector).
DICTIONARY = (
    b'"KEYTYPE":"ssh-rsa","FINGERPRINT":"SHA256:","HASSH":"","NODE":"","COUNT":"TCP":"UDP":'
    b'"REASON":"SSH-2.0-libssh_0.10.6","SSH-2.0-Go","SSH-2.0-PuTTY_Release_0.80",'
    b'"SSH-2.0-paramiko_3.4.0"{"c":1000,"t":1700000000000000,"sh":"","sp":-1,"dh":"","dp":-1,'
    b'"d":{}}{"c":4002,"t":1764460000000000,"sh":"192.168.1.10","sp":54321,"dh":"10.0.0.1",'
    b'"dp":22,"d":{"USERNAME":"root","PASSWORD":"admin123","LOCALVERSION":"SSH-2.0-OpenSSH_9.2p1 '
    b'Debian-2+deb12u3","REMOTEVERSION":"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5"}}'
)
MAX_KEYS = 32
MAX_HOST_CHARS = 64
MAX_INT = 2**53 - 1  # integers a JSON reader (and a SIEM) reads exactly
# Latest time every view can render: a day short of datetime.max, so converting it to any local
# time zone (OpenCanary's local_time_adjusted) still fits.
MAX_TIME_US = int(dt.datetime(9999, 12, 30, tzinfo=dt.UTC).timestamp()) * 1_000_000
MAX_EVENT_BYTES = 16384
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_CODES = {int(c): c for c in EventCode}
_GOOD_KEYS: set[str] = set()
SECRET_MASK = "********"  # noqa: S105 -- what replaces a secret, not one
KEY_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,31}")  # logdata keys, also checked by services

Value = str | int


class Event(NamedTuple):
    """One thing that happened on the device, as a service or the agent reports it.

    A named tuple rather than a frozen dataclass: as immutable, and ~3x cheaper to build (the
    console builds one for every event it stores).
    """

    code: EventCode
    time: float  # UTC unix seconds, device clock
    src_host: str = ""
    src_port: int = -1
    dst_host: str = ""
    dst_port: int = -1
    data: Mapping[str, Value] = MappingProxyType({})

    def to_compact(self) -> dict[str, Any]:
        return {
            "c": int(self.code), "t": round(self.time * 1_000_000),
            "sh": self.src_host, "sp": self.src_port, "dh": self.dst_host, "dp": self.dst_port,
            "d": dict(self.data),
        }


def from_compact(obj: object) -> Event:
    """Validate a compact dict (from the wire or the local event socket) into an Event.

    Written for speed (``type(x) is int`` also refuses bools; one dict of codes instead of an
    enum call): the console runs it for every event it stores.
    """
    if type(obj) is not dict:
        raise DecodeError("event is not an object", offset=0)
    code = _CODES.get(_int(obj, "c", 0, 65535))
    if code is None:
        raise DecodeError(f"event code {obj.get('c')!r} is not in the catalogue", offset=0)
    data = obj.get("d", {})
    if type(data) is not dict or len(data) > MAX_KEYS:
        raise DecodeError("event data is not a small object", offset=0)
    clean: dict[str, Value] = {}
    for k, v in data.items():
        if k not in _GOOD_KEYS:
            if type(k) is not str or not KEY_PATTERN.fullmatch(k):
                raise DecodeError(f"bad event data key {inert(str(k), 40)!r}", offset=0)
            if len(_GOOD_KEYS) < 4096:  # the keys of the catalogue repeat: check each once
                _GOOD_KEYS.add(k)
        if type(v) is str:
            clean[k] = v if len(v) <= MAX_VALUE_CHARS and v.isprintable() else inert(v)
        elif type(v) is int and -MAX_INT <= v <= MAX_INT:
            clean[k] = v
        else:
            raise DecodeError(f"event data {k} is not a string or an integer in range", offset=0)
    return Event(code, _int(obj, "t", 0, MAX_TIME_US) / 1_000_000,
                 _host(obj, "sh"), _int(obj, "sp", -1, 65535),
                 _host(obj, "dh"), _int(obj, "dp", -1, 65535), clean)


def encode_message(event: Event) -> bytes:
    text = json.dumps(event.to_compact(), separators=(",", ":"), ensure_ascii=False)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=DICTIONARY)
    return bytes((MSG_EVENT,)) + deflater.compress(text.encode("utf-8")) + deflater.flush()


def decode_message(message: bytes) -> Event:
    """Decode a reassembled event message; bounded decompression, strict validation."""
    return decode_message_text(message)[0]


def decode_message_text(message: bytes, loads: Callable[[str], Any] = json.loads
                        ) -> tuple[Event, str]:
    """The event and the JSON text it was decoded from (which, once validated, is what the
    console stores: reading it back runs ``from_compact`` again and gives the same event).

    ``loads`` parses the JSON; the console passes orjson's, which refuses what ``json.loads``
    refuses and more (lone surrogate escapes, integers beyond 64 bits), never less."""
    wbits = _WBITS.get(message[0]) if message else None
    if wbits is None:
        raise DecodeError("not an event message", offset=0)
    inflater = zlib.decompressobj(wbits, zdict=DICTIONARY)
    try:
        raw = inflater.decompress(message[1:], MAX_EVENT_BYTES)
    except zlib.error as exc:
        raise DecodeError(f"event does not decompress: {exc}", offset=1) from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise DecodeError("event too large or truncated", offset=len(message))
    text = raw.decode("utf-8", errors="replace")
    try:
        obj = loads(text)
    except (ValueError, RecursionError) as exc:  # deep nesting exhausts the parser's stack
        raise DecodeError(f"event is not JSON: {type(exc).__name__}", offset=1) from None
    return from_compact(obj), text


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
    if type(v) is not int or not lo <= v <= hi:
        raise DecodeError(f"event field {key} is not an integer in [{lo}, {hi}]", offset=0)
    return v


def _host(obj: dict[str, Any], key: str) -> str:
    """A host field: empty, or an IP address (normalised; an IPv4-mapped IPv6 becomes IPv4)."""
    v = obj.get(key, "")
    if type(v) is not str or len(v) > MAX_HOST_CHARS:
        raise DecodeError(f"event field {key} is not a short string", offset=0)
    host = _normal_ip(v) if v else ""
    if host is None:
        raise DecodeError(f"event field {key} is not an IP address", offset=0)
    return host


@functools.lru_cache(maxsize=4096)  # attacks repeat their addresses; parsing costs ~10 us
def _normal_ip(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
