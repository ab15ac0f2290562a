"""SMB2's wire pieces the SMB honeypot needs, kept apart from its state: pure functions of bytes.

What is here: the direct-TCP framing (a 4-byte length before every message, RFC 1002's session
message; a NetBIOS session request on port 139 is answered too), the 64-byte SMB2 header, the
GSS-API/SPNEGO wrapping of NTLMSSP (a bounded DER walk that looks for the NTLMSSP token, and
the three fixed answers a server sends), NTLMSSP's CHALLENGE (built) and AUTHENTICATE (read),
the NTLMv2 check that recognises the honey credential, and message signing (HMAC-SHA256 for SMB
2.x, AES-CMAC with SP800-108 derived keys for 3.x; 3.1.1's key comes from the pre-authentication
hash).  Every reader checks each offset and length against the bytes it has and raises only
:class:`SMBError`: attacker bytes never raise anything else.  The layouts are MS-SMB2, MS-NLMP
and RFC 4178.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from firmware.shared.errors import DecodeError

MAX_MESSAGE = 70_000  # a 64 KiB read or write and its header; anything longer ends the connection
HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")
HEADER_SIZE = HEADER.size  # 64
SMB2_MAGIC = b"\xfeSMB"
SMB1_MAGIC = b"\xffSMB"

FLAG_RESPONSE = 0x1
FLAG_ASYNC = 0x2
FLAG_RELATED = 0x4
FLAG_SIGNED = 0x8

NTLMSSP = b"NTLMSSP\x00"
OID_NTLMSSP = bytes.fromhex("060a2b06010401823702020a")
OID_SPNEGO = bytes.fromhex("06062b0601050502")

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


class SMBError(DecodeError):
    """Bytes from a client that are not what the protocol allows."""


def _need(data: bytes, end: int, what: str) -> None:
    if end > len(data):
        raise SMBError(f"{what}: truncated", offset=len(data))


def unpack_from(fmt: struct.Struct, data: bytes, offset: int, what: str) -> tuple[Any, ...]:
    _need(data, offset + fmt.size, what)
    return fmt.unpack_from(data, offset)


def field(data: bytes, offset: int, length: int, what: str, *, base: int = 0) -> bytes:
    """``length`` bytes at ``offset`` (counted from ``base``), which must lie inside ``data``."""
    start = offset - base
    if offset < base or length < 0 or start + length > len(data):
        raise SMBError(f"{what}: offset {offset} length {length} outside the message",
                       offset=offset)
    return data[start:start + length]


# --- framing -------------------------------------------------------------------------------------

def frame(message: bytes) -> bytes:
    """One message as direct TCP carries it: a zero byte, then a 24-bit length."""
    return struct.pack(">I", len(message)) + message


@dataclass(frozen=True)
class Header:
    command: int
    credit_charge: int
    credits: int
    flags: int
    next_command: int
    message_id: int
    tree_id: int
    session_id: int
    signature: bytes

    @classmethod
    def parse(cls, data: bytes) -> Header:
        magic, size, charge, _status, command, credits, flags, next_command, message_id, \
            _reserved, tree_id, session_id, signature = unpack_from(HEADER, data, 0, "header")
        if magic != SMB2_MAGIC or size != HEADER_SIZE:
            raise SMBError("not an SMB2 header")
        if flags & FLAG_RESPONSE:
            raise SMBError("a response sent to the server")
        if next_command and (next_command % 8 or next_command < HEADER_SIZE):
            raise SMBError(f"compound offset {next_command} is not a multiple of 8")
        if flags & FLAG_ASYNC:  # only CANCEL of an async request is async; none is pending here
            tree_id = 0
        return cls(command, charge, credits, flags, next_command, message_id, tree_id,
                   session_id, signature)


def response_header(request: Header, status: int, *, credits: int, session_id: int,
                    tree_id: int, related: bool = False) -> bytearray:
    flags = FLAG_RESPONSE | (FLAG_RELATED if related else 0)
    return bytearray(HEADER.pack(SMB2_MAGIC, HEADER_SIZE, request.credit_charge, status,
                                 request.command, credits, flags, 0, request.message_id, 0,
                                 tree_id, session_id, b"\x00" * 16))


def utf16(data: bytes) -> str:
    return data.decode("utf-16-le", errors="replace")


# --- SPNEGO (RFC 4178) around NTLMSSP -------------------------------------------------------------

def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def spnego_hint() -> bytes:
    """The negotiate response's security blob: "I speak NTLMSSP" (a NegTokenInit)."""
    mech_types = _der(0xA0, _der(0x30, OID_NTLMSSP))
    return _der(0x60, OID_SPNEGO + _der(0xA0, _der(0x30, mech_types)))


def spnego_challenge(token: bytes) -> bytes:
    """NegTokenResp: accept-incomplete, the mechanism, and the NTLMSSP CHALLENGE."""
    body = (_der(0xA0, b"\x0a\x01\x01") + _der(0xA1, OID_NTLMSSP)
            + _der(0xA2, _der(0x04, token)))
    return _der(0xA1, _der(0x30, body))


def spnego_result(accepted: bool) -> bytes:
    """NegTokenResp: accept-completed or reject."""
    return _der(0xA1, _der(0x30, _der(0xA0, b"\x0a\x01" + (b"\x00" if accepted else b"\x02"))))


def ntlmssp_token(blob: bytes) -> bytes:
    """The NTLMSSP message inside a session setup's security blob (raw or wrapped in SPNEGO)."""
    if blob.startswith(NTLMSSP):
        return blob
    found = _find_ntlmssp(blob, 0, len(blob), depth=0)
    if found is None:
        raise SMBError("no NTLMSSP token in the security blob (only NTLMSSP is spoken here)")
    return found


def _find_ntlmssp(data: bytes, start: int, end: int, depth: int) -> bytes | None:
    """Walk DER TLVs between ``start`` and ``end``; the first OCTET STRING holding NTLMSSP."""
    if depth > 8:
        raise SMBError("security blob nested too deep", offset=start)
    pos = start
    while pos < end:
        if pos + 2 > end:
            raise SMBError("security blob: truncated tag", offset=pos)
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            if not 0 < count <= 3 or pos + count > end:
                raise SMBError("security blob: bad length", offset=pos)
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        if pos + length > end:
            raise SMBError("security blob: length beyond the blob", offset=pos)
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
        raise SMBError("not an NTLMSSP message")
    return int(struct.unpack_from("<I", token, 8)[0])


def negotiate_flags(token: bytes) -> int:
    """The flags of a NEGOTIATE message (type 1)."""
    return int(unpack_from(struct.Struct("<I"), token, 12, "NTLMSSP negotiate")[0])


def challenge(flags: int, server_challenge: bytes, *, netbios_domain: str, netbios_name: str,
              dns_domain: str, dns_name: str) -> bytes:
    """A CHALLENGE message (type 2) answering a client's NEGOTIATE flags.

    MsvAvTimestamp is left out on purpose: with it a client adds a MIC and, through SPNEGO,
    expects the server's own mechListMIC; without it (as from older Windows servers) current
    clients still authenticate and sign the session."""
    granted = (flags & NTLM_ECHOED) | NTLM_NTLM | NTLM_TARGET_INFO | NTLM_TARGET_TYPE_SERVER
    if not granted & NTLM_UNICODE:
        granted |= NTLM_UNICODE  # every client since Windows 2000 asks for it; OEM is not spoken
    target = netbios_name.encode("utf-16-le")
    pairs = [(2, netbios_domain), (1, netbios_name), (4, dns_domain), (3, dns_name)]
    info = b"".join(struct.pack("<HH", av, len(v) * 2) + v.encode("utf-16-le")
                    for av, v in pairs if v) + struct.pack("<HH", 0, 0)
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
            raise SMBError("expected an NTLMSSP AUTHENTICATE message")
        fields = [unpack_from(struct.Struct("<HHI"), token, 12 + 8 * i, "NTLMSSP field")
                  for i in range(6)]
        flags = int(unpack_from(struct.Struct("<I"), token, 60, "NTLMSSP flags")[0])
        lm, nt, domain, user, workstation, key = (
            field(token, offset, length, "NTLMSSP field") for length, _max, offset in fields)
        if len(nt) > 4096 or len(key) > 64:
            raise SMBError("NTLMSSP response or key too long")

        def text(raw: bytes) -> str:
            return utf16(raw) if flags & NTLM_UNICODE else raw.decode("ascii", errors="replace")

        return cls(text(user), text(domain), text(workstation), lm, nt, key, flags)


def nt_owf_v2(nt_hash: bytes, user: str, domain: str) -> bytes:
    return hmac.new(nt_hash, (user.upper() + domain).encode("utf-16-le"), "md5").digest()


def honey_session_key(auth: Authenticate, server_challenge: bytes, user: str,
                      nt_hash: bytes) -> bytes | None:
    """The session key when ``auth`` proves the honey credential (NTLMv2 only), else None."""
    if not auth.ntlmv2 or not user or auth.user.casefold() != user.casefold():
        return None
    key = nt_owf_v2(nt_hash, auth.user, auth.domain)
    proof, blob = auth.nt_response[:16], auth.nt_response[16:]
    if not hmac.compare_digest(hmac.new(key, server_challenge + blob, "md5").digest(), proof):
        return None
    base = hmac.new(key, proof, "md5").digest()
    if auth.flags & NTLM_KEY_EXCH and len(auth.session_key) == 16:
        rc4 = Cipher(ARC4(base), mode=None).decryptor()
        return rc4.update(auth.session_key)
    return base


# --- signing (MS-SMB2 3.1.4.1, 3.1.4.2) -----------------------------------------------------------

def kdf(key: bytes, label: bytes, context: bytes) -> bytes:
    """SP800-108 in counter mode with HMAC-SHA256, one block, 128 bits out."""
    data = struct.pack(">I", 1) + label + b"\x00" + context + struct.pack(">I", 128)
    return hmac.new(key, data, hashlib.sha256).digest()[:16]


def signing_key(dialect: int, session_key: bytes, preauth: bytes) -> bytes:
    if dialect >= 0x0311:
        return kdf(session_key, b"SMBSigningKey\x00", preauth)
    if dialect >= 0x0300:
        return kdf(session_key, b"SMB2AESCMAC\x00", b"SmbSign\x00")
    return session_key


def sign(dialect: int, key: bytes, message: bytearray) -> None:
    """Set the signed flag and write the signature into ``message`` (a header and its body)."""
    flags = struct.unpack_from("<I", message, 16)[0] | FLAG_SIGNED
    struct.pack_into("<I", message, 16, flags)
    message[48:64] = b"\x00" * 16
    if dialect >= 0x0300:
        mac = cmac.CMAC(algorithms.AES(key))
        mac.update(bytes(message))
        signature = mac.finalize()
    else:
        signature = hmac.new(key, bytes(message), hashlib.sha256).digest()[:16]
    message[48:64] = signature
