"""The client's opening bytes of an SSH connection: its version line and HASSH fingerprint.

asyncssh does not expose the client's KEXINIT, and it refuses version lines that are not ASCII
before telling anyone what they were.  Both are sent in the clear before any encryption, so the
guard keeps the first bytes of each connection and this pure parser reads them: the version line
as the client sent it (bytes; the service makes it inert) and HASSH, the MD5 of the client's
``kex;encryption;mac;compression`` algorithm lists (client-to-server), as defined by
Salesforce's HASSH.  Anything malformed or incomplete simply yields ``None`` fields.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

MSG_KEXINIT = 20
MAX_VERSION_LINE = 255
MAX_PACKET = 35000
_LISTS = 10  # kex, hostkey, enc c2s, enc s2c, mac c2s, mac s2c, comp c2s, comp s2c, lang c2s, s2c


@dataclass(frozen=True)
class ClientHello:
    version: bytes | None = None  # the version line without CR LF
    hassh: str | None = None
    hassh_algorithms: str | None = None


def parse_client_hello(head: bytes) -> ClientHello:
    """Parse as much of ``head`` (the first bytes a client sent) as is there."""
    end = head.find(b"\n", 0, MAX_VERSION_LINE + 2)
    if end < 0:
        return ClientHello()
    version = head[:end].removesuffix(b"\r")
    algorithms = _kexinit_lists(head[end + 1:])
    if algorithms is None:
        return ClientHello(version=version)
    digest = hashlib.md5(algorithms.encode("ascii", "replace"), usedforsecurity=False)
    return ClientHello(version=version, hassh=digest.hexdigest(), hassh_algorithms=algorithms)


def _kexinit_lists(data: bytes) -> str | None:
    """HASSH algorithm string from the first binary packet, if it is a complete KEXINIT."""
    if len(data) < 6:
        return None
    length, padding = struct.unpack_from(">IB", data)
    if not padding < length <= MAX_PACKET or len(data) < 4 + length:
        return None
    payload = data[5 : 4 + length - padding]
    if not payload or payload[0] != MSG_KEXINIT:
        return None
    lists: list[bytes] = []
    offset = 17  # message type and 16-byte cookie
    for _ in range(_LISTS):
        if offset + 4 > len(payload):
            return None
        (size,) = struct.unpack_from(">I", payload, offset)
        offset += 4
        if offset + size > len(payload):
            return None
        lists.append(payload[offset : offset + size])
        offset += size
    chosen = (lists[0], lists[2], lists[4], lists[6])
    return ";".join(x.decode("ascii", "replace") for x in chosen)
