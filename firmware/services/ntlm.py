"""NTLMSSP as a server speaks it, and the SPNEGO wrapping around it: pure functions of bytes.

Two honeypots log clients in with NTLM: SMB (in the session setup's security blob) and RDP
(in CredSSP's TSRequest, for Network Level Authentication).  Both need the same pieces: the
NEGOTIATE flags a client asks for, a CHALLENGE that looks like a Windows server's (its names,
its version, and for RDP the time), the AUTHENTICATE message read (user, domain, workstation
and the NTLMv2 response, which a defender checks a suspected password against in hashcat's
mode 5600 form), and the SPNEGO tokens (RFC 4178) a client may wrap them in.  No key material
and no cipher is here (SMB's signing lives in :mod:`firmware.services.smbwire`), so a service
that only records logins loads nothing but the standard library.  Every reader checks each
offset and length against the bytes it has and raises only :class:`NTLMError`.  The layouts
are MS-NLMP 2.2.1 and 2.2.2.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from firmware.shared.errors import DecodeError

NTLMSSP = b"NTLMSSP\x00"
OID_NTLMSSP = bytes.fromhex("060a2b06010401823702020a")
OID_SPNEGO = bytes.fromhex("06062b0601050502")
MAX_RESPONSE = 4096  # an NT response longer than this is no client's
MAX_DEPTH = 8  # how deep the SPNEGO walk looks for the token

NTLM_UNICODE = 0x1
NTLM_REQUEST_TARGET = 0x4
NTLM_SIGN = 0x10
NTLM_SEAL = 0x20
NTLM_NTLM = 0x200
NTLM_ANONYMOUS = 0x800
NTLM_ALWAYS_SIGN = 0x8000
NTLM_TARGET_TYPE_DOMAIN = 0x10000
NTLM_TARGET_TYPE_SERVER = 0x20000
NTLM_ESS = 0x80000
NTLM_TARGET_INFO = 0x800000
NTLM_VERSION = 0x2000000
NTLM_128 = 0x20000000
NTLM_KEY_EXCH = 0x40000000
NTLM_56 = 0x80000000
# what the server grants of what a client asks for; it always does NTLM and sends target info
NTLM_ECHOED = (NTLM_UNICODE | NTLM_REQUEST_TARGET | NTLM_SIGN | NTLM_SEAL | NTLM_ALWAYS_SIGN
               | NTLM_ESS | NTLM_VERSION | NTLM_128 | NTLM_KEY_EXCH | NTLM_56)
WINDOWS_VERSION = bytes([10, 0]) + struct.pack("<H", 20348) + b"\x00\x00\x00\x0f"  # Server 2022
FILETIME_EPOCH = 11_644_473_600  # seconds from 1601-01-01 (FILETIME's epoch) to 1970-01-01
_FIELD = struct.Struct("<HHI")  # length, maximum length, offset of a payload field


class NTLMError(DecodeError):
    """An NTLMSSP message (or its SPNEGO wrapping) that is not what MS-NLMP allows."""


def _field(token: bytes, at: int, what: str) -> bytes:
    """The payload a (length, maximum, offset) descriptor at ``at`` points to, inside ``token``."""
    if at + _FIELD.size > len(token):
        raise NTLMError(f"{what}: truncated", offset=len(token))
    length, _maximum, offset = _FIELD.unpack_from(token, at)
    if offset + length > len(token):
        raise NTLMError(f"{what}: offset {offset} length {length} outside the message",
                        offset=at)
    return token[offset:offset + length]


def utf16(data: bytes) -> str:
    return data.decode("utf-16-le", errors="replace")


# --- SPNEGO (RFC 4178) around NTLMSSP -------------------------------------------------------------

def der(tag: int, body: bytes) -> bytes:
    """One DER TLV (a one-byte tag; the length in the shortest form)."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def spnego_hint() -> bytes:
    """A server's first word (SMB's negotiate response): "I speak NTLMSSP" (a NegTokenInit)."""
    mech_types = der(0xA0, der(0x30, OID_NTLMSSP))
    return der(0x60, OID_SPNEGO + der(0xA0, der(0x30, mech_types)))


def spnego_challenge(token: bytes) -> bytes:
    """NegTokenResp: accept-incomplete, the mechanism, and the NTLMSSP CHALLENGE."""
    body = (der(0xA0, b"\x0a\x01\x01") + der(0xA1, OID_NTLMSSP)
            + der(0xA2, der(0x04, token)))
    return der(0xA1, der(0x30, body))


def spnego_result(accepted: bool) -> bytes:
    """NegTokenResp: accept-completed or reject."""
    return der(0xA1, der(0x30, der(0xA0, b"\x0a\x01" + (b"\x00" if accepted else b"\x02"))))


def ntlmssp_token(blob: bytes) -> bytes:
    """The NTLMSSP message in a security token (raw, or wrapped in SPNEGO)."""
    if blob.startswith(NTLMSSP):
        return blob
    found = _find_ntlmssp(blob, 0, len(blob), depth=0)
    if found is None:
        raise NTLMError("no NTLMSSP token in the security blob (only NTLMSSP is spoken here)")
    return found


def _find_ntlmssp(data: bytes, start: int, end: int, depth: int) -> bytes | None:
    """Walk DER TLVs between ``start`` and ``end``; the first OCTET STRING holding NTLMSSP."""
    if depth > MAX_DEPTH:
        raise NTLMError("security blob nested too deep", offset=start)
    pos = start
    while pos < end:
        if pos + 2 > end:
            raise NTLMError("security blob: truncated tag", offset=pos)
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            if not 0 < count <= 3 or pos + count > end:
                raise NTLMError("security blob: bad length", offset=pos)
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        if pos + length > end:
            raise NTLMError("security blob: length beyond the blob", offset=pos)
        if tag == 0x04 and data[pos:pos + 8] == NTLMSSP:
            return data[pos:pos + length]
        if tag & 0x20:  # constructed: look inside
            found = _find_ntlmssp(data, pos, pos + length, depth + 1)
            if found is not None:
                return found
        pos += length
    return None


# --- NTLMSSP (MS-NLMP) ----------------------------------------------------------------------------

def ntlm_type(token: bytes) -> int:
    if len(token) < 12 or not token.startswith(NTLMSSP):
        raise NTLMError("not an NTLMSSP message")
    return int(struct.unpack_from("<I", token, 8)[0])


def negotiate_flags(token: bytes) -> int:
    """The flags of a NEGOTIATE message (type 1)."""
    if len(token) < 16:
        raise NTLMError("NTLMSSP negotiate: truncated", offset=len(token))
    return int(struct.unpack_from("<I", token, 12)[0])


def client_version(token: bytes) -> str:
    """The Windows version a NEGOTIATE or AUTHENTICATE says its client runs ("10.0.19041"), or
    "" when it sends none (the VERSION flag unset: impacket, Samba, curl)."""
    kind = ntlm_type(token)
    flags_at, version_at = {1: (12, 32), 3: (60, 64)}.get(kind, (0, 0))
    if not version_at or len(token) < version_at + 8:
        return ""
    if not struct.unpack_from("<I", token, flags_at)[0] & NTLM_VERSION:
        return ""
    major, minor, build = struct.unpack_from("<BBH", token, version_at)
    return f"{major}.{minor}.{build}"


def filetime(unix_seconds: float) -> int:
    """A time as Windows counts it: 100 ns ticks since 1601."""
    return int((unix_seconds + FILETIME_EPOCH) * 10_000_000)


def challenge(flags: int, server_challenge: bytes, *, netbios_domain: str, netbios_name: str,
              dns_domain: str, dns_name: str, timestamp: int | None = None) -> bytes:
    """A CHALLENGE message (type 2) answering a client's NEGOTIATE flags.

    ``timestamp`` (a FILETIME) adds MsvAvTimestamp, as every Windows server sends it; with it a
    client adds a MIC to its AUTHENTICATE and, through SPNEGO, expects the server's own
    mechListMIC.  SMB leaves it out for that reason (without it, as from older Windows
    servers, current clients still authenticate and sign the session); RDP, which refuses
    every login anyway, sends it."""
    granted = (flags & NTLM_ECHOED) | NTLM_NTLM | NTLM_TARGET_INFO | NTLM_TARGET_TYPE_SERVER
    if not granted & NTLM_UNICODE:
        granted |= NTLM_UNICODE  # every client since Windows 2000 asks for it; OEM is not spoken
    target = netbios_name.encode("utf-16-le")
    pairs = [(2, netbios_domain), (1, netbios_name), (4, dns_domain), (3, dns_name)]
    info = b"".join(struct.pack("<HH", av, len(v) * 2) + v.encode("utf-16-le")
                    for av, v in pairs if v)
    if timestamp is not None:
        info += struct.pack("<HHQ", 7, 8, timestamp)
    info += struct.pack("<HH", 0, 0)
    head = 56
    return (NTLMSSP + struct.pack("<I", 2)
            + struct.pack("<HHI", len(target), len(target), head)
            + struct.pack("<I", granted) + server_challenge + b"\x00" * 8
            + struct.pack("<HHI", len(info), len(info), head + len(target))
            + WINDOWS_VERSION + target + info)


@dataclass(frozen=True)
class Authenticate:
    """What an AUTHENTICATE message (type 3) says: who, from where, and the proof."""

    user: str
    domain: str
    workstation: str
    lm_response: bytes
    nt_response: bytes
    session_key: bytes  # EncryptedRandomSessionKey
    flags: int

    @property
    def anonymous(self) -> bool:
        return not self.user and not self.nt_response and len(self.lm_response) <= 1

    @property
    def ntlmv2(self) -> bool:
        return len(self.nt_response) > 24

    def hashcat(self, server_challenge: bytes) -> str:
        """The response as a password cracker reads it (hashcat mode 5600 / 5500): a defender
        checks a suspected password against it; masked like a password wherever shown."""
        if self.ntlmv2:
            proof, blob = self.nt_response[:16], self.nt_response[16:]
            return (f"{self.user}::{self.domain}:{server_challenge.hex()}:{proof.hex()}:"
                    f"{blob.hex()}")
        if self.nt_response:
            return (f"{self.user}::{self.domain}:{self.lm_response.hex()}:"
                    f"{self.nt_response.hex()}:{server_challenge.hex()}")
        return ""

    @classmethod
    def parse(cls, token: bytes) -> Authenticate:
        if ntlm_type(token) != 3:
            raise NTLMError("expected an NTLMSSP AUTHENTICATE message")
        lm, nt, domain, user, workstation, key = (
            _field(token, 12 + 8 * i, "NTLMSSP field") for i in range(6))
        if len(token) < 64:
            raise NTLMError("NTLMSSP flags: truncated", offset=len(token))
        flags = int(struct.unpack_from("<I", token, 60)[0])
        if len(nt) > MAX_RESPONSE or len(key) > 64:
            raise NTLMError("NTLMSSP response or key too long")

        def text(raw: bytes) -> str:
            return utf16(raw) if flags & NTLM_UNICODE else raw.decode("ascii", errors="replace")

        return cls(text(user), text(domain), text(workstation), lm, nt, key, flags)


def nt_owf_v2(nt_hash: bytes, user: str, domain: str) -> bytes:
    return hmac.new(nt_hash, (user.upper() + domain).encode("utf-16-le"), "md5").digest()
