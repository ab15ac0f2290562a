"""SMB2's wire pieces the SMB honeypot needs, kept apart from its state: pure functions of bytes.

What is here: the direct-TCP framing (a 4-byte length before every message, RFC 1002's session
message; a NetBIOS session request on port 139 is answered too), the 64-byte SMB2 header, the
NTLMv2 check that recognises the honey credential, and message signing (HMAC-SHA256 for SMB
2.x, AES-CMAC with SP800-108 derived keys for 3.x; 3.1.1's key comes from the pre-authentication
hash).  NTLMSSP and its SPNEGO wrapping, which the RDP honeypot shares, are
:mod:`firmware.services.ntlm`'s.  Every reader checks each offset and
length against the bytes it has and raises only :class:`SMBError` (:class:`NTLMError` for
NTLMSSP): attacker bytes never raise anything else.  The layouts are MS-SMB2 and MS-NLMP.
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

from firmware.services.ntlm import NTLM_KEY_EXCH, Authenticate, nt_owf_v2
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
