"""The SMB honeypot: a Windows file share, native (no Samba), that alarms on every file opened.

File copies off a share catch breaches nothing else sees, so this is the service a defender
wants first.  It speaks SMB2 and SMB3 (dialects 2.0.2 to 3.1.1, the highest a client offers;
an SMB1 client is answered only with the SMB2 upgrade, as by a current Windows server) over
direct TCP, authenticates with NTLMSSP inside SPNEGO, and serves one read-only share of
plausible documents (firmware/services/smbshare.py) plus IPC$ with the share list.

What it records (event codes in docs/events.md):

* every session setup (5010): user, domain, workstation and the NTLMv2 response in the form a
  password cracker reads (so a defender can test which password was tried; masked like a
  password), with the result: ``honey`` (the honey credential from the settings: someone has
  found it), ``guest``, ``anonymous`` or ``refused``;
* every share connected (5011), IPC$ excepted;
* every file opened for reading or for writing (5000), once per file and session, not per
  read; writes are always refused (the share is read-only).

The share opens to the honey credential (``services.smb.honey_user`` and its NT hash: with it
the server checks the NTLMv2 proof and derives the session key, so signing works with current
clients), and to guest or anonymous when ``services.smb.guest`` allows (anonymous reaches only
IPC$, as on Windows).  Every other credential is refused.

Bounds: one message at most ``MAX_MESSAGE`` bytes, compound chains of at most ``MAX_CHAIN``,
``MAX_SESSIONS`` session setups per connection, ``MAX_OPENS`` open files; the guard ends the
connection after ``limits.connection_bytes`` or ``limits.connection_timeout``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from firmware.config import DeviceConfig
from firmware.eventpath import EventSink
from firmware.protocol.catalogue import EventCode
from firmware.services import ntlm
from firmware.services import smbshare as share
from firmware.services import smbwire as wire
from firmware.services.base import Service
from firmware.services.ntlm import NTLMError
from firmware.services.smbwire import SMBError, unpack_from

log = logging.getLogger(__name__)

MAX_CHAIN = 32
MAX_SESSIONS = 16
MAX_OPENS = 128
MAX_IO = 65_536
MAX_NETBIOS_REQUEST = 256  # two encoded NetBIOS names (34 bytes each, more with scope IDs)
MAX_UNSENT = 2 * MAX_IO  # replies waiting for a client before no more requests are answered
DIALECT_NAMES = {0x0311: "3.1.1", 0x0302: "3.0.2", 0x0300: "3.0", 0x0210: "2.1",
                 0x0202: "2.0.2"}
DIALECTS = tuple(DIALECT_NAMES)  # the highest a client offers wins

OK = 0
MORE_PROCESSING = 0xC0000016
LOGON_FAILURE = 0xC000006D
ACCESS_DENIED = 0xC0000022
BAD_NETWORK_NAME = 0xC00000CC
USER_SESSION_DELETED = 0xC0000203
NETWORK_NAME_DELETED = 0xC00000C9
INVALID_PARAMETER = 0xC000000D
NOT_SUPPORTED = 0xC00000BB
NAME_NOT_FOUND = 0xC0000034
PATH_NOT_FOUND = 0xC000003A
FILE_CLOSED = 0xC0000128
NO_MORE_FILES = 0x80000006
END_OF_FILE = 0xC0000011
INVALID_INFO_CLASS = 0xC0000003
INFO_LENGTH_MISMATCH = 0xC0000004
BUFFER_OVERFLOW = 0x80000005
NOT_A_DIRECTORY = 0xC0000103
FILE_IS_A_DIRECTORY = 0xC00000BA
INSUFFICIENT_RESOURCES = 0xC000009A
NOT_FOUND = 0xC0000225

NEGOTIATE, SESSION_SETUP, LOGOFF, TREE_CONNECT, TREE_DISCONNECT, CREATE, CLOSE, FLUSH, READ, \
    WRITE, LOCK, IOCTL, CANCEL, ECHO, QUERY_DIRECTORY, CHANGE_NOTIFY, QUERY_INFO, SET_INFO = \
    range(18)

READ_ACCESS = 0x1 | 0x20 | 0x80000000 | 0x20000000 | 0x10000000 | 0x02000000
WRITE_ACCESS = 0x2 | 0x4 | 0x10 | 0x100 | 0x10000 | 0x40000 | 0x80000 | 0x40000000 | 0x10000000
MAXIMAL_READ = 0x001200A9
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
FSCTL_VALIDATE_NEGOTIATE = 0x00140204
FSCTL_DFS_REFERRALS = 0x00060194
ERROR_BODY = struct.pack("<HBBI", 9, 0, 0, 0) + b"\x00"


@dataclass
class Open:
    node: share.Node | None  # None: the srvsvc pipe
    pipe: share.Pipe | None = None
    listed: int = -1  # QUERY_DIRECTORY: entries already returned (-1: not started)


@dataclass
class TreeConnect:
    name: str
    ipc: bool


@dataclass
class Session:
    id: int
    challenge: bytes
    preauth: bytes
    raw: bool = False  # the client sent bare NTLMSSP, not SPNEGO
    user: str = ""
    domain: str = ""
    kind: str = ""  # "" until authenticated: honey, guest or anonymous
    key: bytes = b""  # signing key (honey sessions only)
    sign_all: bool = False
    trees: dict[int, TreeConnect] = field(default_factory=dict)
    opened: set[tuple[str, str]] = field(default_factory=set)  # (path, access) recorded


@dataclass
class Reply:
    status: int
    body: bytes
    session: Session | None = None
    tree_id: int = 0
    sign: bool = False


class SMBHoneypot(Service):
    name = "smb"
    default_port = 445
    event_codes = frozenset({EventCode.SMB_LOGIN_ATTEMPT, EventCode.SMB_TREE_CONNECT,
                             EventCode.SMB_FILE_OPEN})

    @classmethod
    def enabled(cls, cfg: DeviceConfig) -> bool:
        return cfg.smb.enabled

    def __init__(self, cfg: DeviceConfig, sinks: Sequence[EventSink],
                 *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(cfg, sinks, clock=clock)
        self.tree = share.Tree.documents()
        self.started = clock()
        self.guid = hashlib.sha256(f"coalmine-smb:{cfg.smb.server_name}".encode()).digest()[:16]

    async def start(self) -> None:
        await self.listen(lambda: Connection(self), self.cfg.smb.host, self.cfg.smb.port)


class Connection(asyncio.Protocol):
    """One client: frames in, replies out, every state bounded."""

    def __init__(self, service: SMBHoneypot) -> None:
        self.service = service
        self.settings = service.cfg.smb
        self.transport: asyncio.Transport | None = None
        self.pending = bytearray()
        self.dialect = 0
        self.preauth = b"\x00" * 64
        self.client_guid = b""
        self.client_caps = 0
        self.client_security = 0
        self.sessions: dict[int, Session] = {}
        self.setups = 0
        self.opens: dict[int, Open] = {}
        self.next_id = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while self.transport is not None and not self.transport.is_closing():
            if len(self.pending) < 4:
                return
            kind, length = self.pending[0], int.from_bytes(self.pending[1:4], "big")
            if kind == 0x81:  # NetBIOS session request (port 139): two names, then accept
                if length > MAX_NETBIOS_REQUEST:
                    self.close(f"a NetBIOS session request of {length} bytes")
                    return
                if len(self.pending) < 4 + length:
                    return
                del self.pending[:4 + length]
                self.transport.write(b"\x82\x00\x00\x00")
                continue
            if kind == 0x85:  # keep-alive
                del self.pending[:4]
                continue
            if kind != 0 or length > wire.MAX_MESSAGE:
                self.close(f"not SMB over TCP (type {kind}, length {length})")
                return
            if len(self.pending) < 4 + length:
                return
            if self.transport.get_write_buffer_size() > MAX_UNSENT:
                return  # the client is not reading: go on when it does (resume_writing)
            message = bytes(self.pending[4:4 + length])
            del self.pending[:4 + length]
            try:
                self.handle(message)
            except (SMBError, NTLMError) as exc:
                self.close(exc.message)

    def resume_writing(self) -> None:
        self.data_received(b"")

    def close(self, why: str) -> None:
        log.info("smb: closing a connection: %s", why)
        if self.transport is not None:
            self.transport.close()

    def send(self, message: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wire.frame(message))

    def emit(self, code: EventCode, data: dict[str, str | bytes | int]) -> None:
        if self.transport is not None:
            self.service.emit(code, self.transport, data)

    # --- messages --------------------------------------------------------------------------------

    def handle(self, message: bytes) -> None:
        if message.startswith(wire.SMB1_MAGIC):
            self.smb1_negotiate(message)
            return
        out = bytearray()
        offset, chain, previous = 0, 0, Reply(OK, b"")
        file_id = b""
        while True:
            chain += 1
            if chain > MAX_CHAIN:
                raise SMBError("compound chain too long")
            header = wire.Header.parse(message[offset:])
            end = offset + header.next_command if header.next_command else len(message)
            part = message[offset:end]
            related = bool(header.flags & wire.FLAG_RELATED) and offset > 0
            if related:
                header = _inherit(header, previous)
                if previous.status not in (OK, BUFFER_OVERFLOW):
                    reply = Reply(previous.status, ERROR_BODY, previous.session,
                                  previous.tree_id)
                else:
                    reply = self.dispatch(header, part, file_id)
            else:
                reply = self.dispatch(header, part, b"")
            if len(out) > MAX_UNSENT:  # a chain of large reads: the rest waits for another try
                reply = Reply(INSUFFICIENT_RESOURCES, ERROR_BODY, reply.session, reply.tree_id)
            if header.command == CANCEL:
                reply = Reply(-1, b"")
            if reply.status >= 0:
                file_id = _created_id(header.command, reply) or file_id
                out += self.response(header, reply, related, last=not header.next_command)
                previous = reply
            if not header.next_command:
                break
            offset = end
            if offset >= len(message):
                raise SMBError("compound offset beyond the message")
        if out:
            self.send(bytes(out))

    def response(self, header: wire.Header, reply: Reply, related: bool, *, last: bool) -> bytes:
        session = reply.session
        session_id = session.id if session is not None else header.session_id
        credits = max(1, min(header.credits, 128))
        msg = wire.response_header(header, reply.status, credits=credits,
                                   session_id=session_id, tree_id=reply.tree_id or header.tree_id,
                                   related=related)
        msg += reply.body
        if not last:
            msg += b"\x00" * (-len(msg) % 8)
            struct.pack_into("<I", msg, 20, len(msg))
        if session is not None and session.key and (
                reply.sign or header.flags & wire.FLAG_SIGNED or session.sign_all):
            wire.sign(self.dialect, session.key, msg)
        if header.command == SESSION_SETUP and reply.status == MORE_PROCESSING and session:
            session.preauth = hashlib.sha512(session.preauth + bytes(msg)).digest()
        if header.command == NEGOTIATE and self.dialect >= 0x0311:
            self.preauth = hashlib.sha512(self.preauth + bytes(msg)).digest()
        return bytes(msg)

    def dispatch(self, header: wire.Header, part: bytes, file_id: bytes) -> Reply:
        handlers: dict[int, Callable[[wire.Header, bytes, bytes], Reply]] = {
            NEGOTIATE: self.negotiate, SESSION_SETUP: self.session_setup,
        }
        if header.command in handlers:
            return handlers[header.command](header, part, file_id)
        if header.command == CANCEL:
            return Reply(-1, b"")
        session = self.sessions.get(header.session_id)
        if not self.dialect:
            raise SMBError("a request before NEGOTIATE")
        if session is None or not session.kind:
            return Reply(USER_SESSION_DELETED, ERROR_BODY)
        if header.command == ECHO:
            return Reply(OK, struct.pack("<HH", 4, 0), session)
        if header.command == LOGOFF:
            del self.sessions[session.id]
            return Reply(OK, struct.pack("<HH", 4, 0), session)
        if header.command == TREE_CONNECT:
            return self.tree_connect(session, part)
        tree = session.trees.get(header.tree_id)
        if tree is None:
            return Reply(NETWORK_NAME_DELETED, ERROR_BODY, session)
        tree_handlers: dict[int, Callable[[Session, TreeConnect, bytes, bytes], Reply]] = {
            TREE_DISCONNECT: self.tree_disconnect, CREATE: self.create, CLOSE: self.close_file,
            READ: self.read, WRITE: self.write, IOCTL: self.ioctl,
            QUERY_DIRECTORY: self.query_directory, QUERY_INFO: self.query_info,
        }
        handler = tree_handlers.get(header.command)
        if handler is not None:
            reply = handler(session, tree, part, file_id)
        elif header.command == FLUSH:
            reply = Reply(OK, struct.pack("<HH", 4, 0))
        elif header.command in (LOCK, SET_INFO):
            reply = Reply(ACCESS_DENIED, ERROR_BODY)
        else:
            reply = Reply(NOT_SUPPORTED, ERROR_BODY)
        reply.session = session
        reply.tree_id = header.tree_id
        return reply

    # --- negotiate and session setup -------------------------------------------------------------

    def smb1_negotiate(self, message: bytes) -> None:
        """An SMB1 NEGOTIATE: a client that also speaks SMB2 gets the upgrade (dialect 0x02FF)."""
        if len(message) < 35 or message[4] != 0x72:
            raise SMBError("SMB1 is not spoken here")
        dialects = message[35:].split(b"\x00")
        if not any(d.startswith(b"\x02SMB 2.") for d in dialects):
            raise SMBError("an SMB1-only client (no SMB 2 dialect offered)")
        header = wire.Header(NEGOTIATE, 0, 1, 0, 0, 0, 0, 0, b"")
        self.send(bytes(wire.response_header(header, OK, credits=1, session_id=0, tree_id=0))
                  + self.negotiate_body(0x02FF, []))

    def negotiate(self, header: wire.Header, part: bytes, _file_id: bytes) -> Reply:
        if self.dialect:
            raise SMBError("NEGOTIATE twice on one connection")
        size, count, security, _res, caps, guid = unpack_from(
            struct.Struct("<HHHHI16s"), part, 64, "NEGOTIATE")
        ctx_offset, ctx_count = unpack_from(struct.Struct("<IH"), part, 92, "NEGOTIATE")
        if size != 36 or not 0 < count <= 64:
            raise SMBError("NEGOTIATE: bad size or dialect count")
        raw = wire.field(part, 100, 2 * count, "NEGOTIATE dialects")
        offered = set(struct.unpack(f"<{count}H", raw))
        chosen = next((d for d in DIALECTS if d in offered), 0)
        if not chosen:
            self.close("NEGOTIATE: no dialect in common")
            return Reply(NOT_SUPPORTED, ERROR_BODY)
        self.dialect, self.client_guid, self.client_caps = chosen, guid, caps
        self.client_security = security
        contexts: list[bytes] = []
        if chosen == 0x0311:
            if not _has_preauth_sha512(part, ctx_offset, ctx_count):
                raise SMBError("NEGOTIATE 3.1.1 without SHA-512 pre-authentication integrity")
            salt = secrets.token_bytes(32)
            contexts.append(struct.pack("<HHI", 1, 38, 0) + struct.pack("<HHH", 1, 32, 1) + salt)
            self.preauth = hashlib.sha512(self.preauth + part).digest()
        return Reply(OK, self.negotiate_body(chosen, contexts))

    def negotiate_body(self, dialect: int, contexts: list[bytes]) -> bytes:
        blob = ntlm.spnego_hint()
        now = share.filetime(time.time())
        body = bytearray(struct.pack(
            "<HHHH16sIIIIQQHHI", 65, 0x01, dialect, len(contexts), self.service.guid, 0,
            MAX_IO, MAX_IO, MAX_IO, now, 0, 128, len(blob), 0))
        body += blob
        if contexts:
            body += b"\x00" * (-(64 + len(body)) % 8)
            struct.pack_into("<I", body, 60, 64 + len(body))
            for i, context in enumerate(contexts):
                body += context
                if i < len(contexts) - 1:
                    body += b"\x00" * (-len(body) % 8)
        return bytes(body)

    def session_setup(self, header: wire.Header, part: bytes, _file_id: bytes) -> Reply:
        if not self.dialect:
            raise SMBError("SESSION_SETUP before NEGOTIATE")
        size, _flags, security, _caps, _channel, offset, length, _previous = unpack_from(
            struct.Struct("<HBBIIHHQ"), part, 64, "SESSION_SETUP")
        if size != 25:
            raise SMBError("SESSION_SETUP: bad structure size")
        blob = wire.field(part, offset, length, "SESSION_SETUP security blob")
        token = ntlm.ntlmssp_token(blob)
        kind = ntlm.ntlm_type(token)
        if kind == 1:
            self.setups += 1
            if self.setups > MAX_SESSIONS:
                raise SMBError("too many session setups on one connection")
            session = Session(id=secrets.randbits(63) | 1, challenge=secrets.token_bytes(8),
                              preauth=self.preauth, raw=blob.startswith(ntlm.NTLMSSP),
                              sign_all=bool(security & 0x2))
            session.preauth = hashlib.sha512(session.preauth + part).digest()
            self.sessions[session.id] = session
            smb = self.settings
            dns_name = f"{smb.server_name}.{smb.dns_domain}" if smb.dns_domain else smb.server_name
            token = ntlm.challenge(ntlm.negotiate_flags(token), session.challenge,
                                   netbios_domain=smb.domain.upper(),
                                   netbios_name=smb.server_name.upper(),
                                   dns_domain=smb.dns_domain, dns_name=dns_name.lower())
            out = token if session.raw else ntlm.spnego_challenge(token)
            return Reply(MORE_PROCESSING, _setup_body(0, out), session)
        pending = self.sessions.get(header.session_id)
        if kind != 3 or pending is None or pending.kind:
            raise SMBError("SESSION_SETUP out of order")
        pending.preauth = hashlib.sha512(pending.preauth + part).digest()
        return self.authenticate(pending, ntlm.Authenticate.parse(token))

    def authenticate(self, session: Session, auth: ntlm.Authenticate) -> Reply:
        smb = self.settings
        key = None
        if smb.honey_user:
            key = wire.honey_session_key(auth, session.challenge, smb.honey_user,
                                         bytes.fromhex(smb.honey_nt_hash))
        if key is not None:
            result, flags = "honey", 0
            session.key = wire.signing_key(self.dialect, key, session.preauth)
        elif auth.anonymous and smb.guest:
            result, flags = "anonymous", 0x2
        elif auth.user.casefold() == "guest" and smb.guest:
            result, flags = "guest", 0x1
        else:
            result, flags = "refused", 0
        self.emit(EventCode.SMB_LOGIN_ATTEMPT, {
            "USER": auth.user, "DOMAIN": auth.domain, "WORKSTATION": auth.workstation,
            "NTLMV2_RESPONSE": auth.hashcat(session.challenge), "RESULT": result,
            "DIALECT": DIALECT_NAMES[self.dialect]})
        if result == "refused":
            del self.sessions[session.id]
            return Reply(LOGON_FAILURE, ERROR_BODY, session)
        session.kind, session.user, session.domain = result, auth.user, auth.domain
        out = b"" if session.raw else ntlm.spnego_result(True)
        return Reply(OK, _setup_body(flags, out), session,
                     sign=bool(session.key) and self.dialect >= 0x0311)

    # --- trees ------------------------------------------------------------------------------------

    def tree_connect(self, session: Session, part: bytes) -> Reply:
        size, _flags, offset, length = unpack_from(struct.Struct("<HHHH"), part, 64,
                                                   "TREE_CONNECT")
        if size != 9 or length > 1024:
            raise SMBError("TREE_CONNECT: bad size")
        path = share.decode_name(wire.field(part, offset, length, "TREE_CONNECT path"))
        name = path.rstrip("\\").rsplit("\\", 1)[-1]
        ipc = name.upper() == "IPC$"
        if ipc:
            status = OK
        elif name.casefold() == self.settings.share.casefold():
            status = OK if session.kind != "anonymous" else ACCESS_DENIED
        elif name.upper() in ("ADMIN$", "C$", "D$", "PRINT$"):
            status = ACCESS_DENIED
        else:
            status = BAD_NETWORK_NAME
        if not ipc:
            self.emit(EventCode.SMB_TREE_CONNECT, {
                "USER": session.user, "DOMAIN": session.domain, "SHARENAME": name,
                "RESULT": "connected" if status == OK else "refused"})
        if status != OK or len(session.trees) >= 16:
            return Reply(status or INSUFFICIENT_RESOURCES, ERROR_BODY, session)
        tree_id = self.new_id()
        session.trees[tree_id] = TreeConnect(self.settings.share if not ipc else "IPC$", ipc)
        body = struct.pack("<HBBIII", 16, 2 if ipc else 1, 0, 0, 0,
                           0x001F01FF if ipc else MAXIMAL_READ)
        return Reply(OK, body, session, tree_id)

    def tree_disconnect(self, session: Session, tree: TreeConnect, _part: bytes,
                        _file_id: bytes) -> Reply:
        session.trees = {k: v for k, v in session.trees.items() if v is not tree}
        return Reply(OK, struct.pack("<HH", 4, 0))

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # --- files ------------------------------------------------------------------------------------

    def find_open(self, part: bytes, offset: int, file_id: bytes) -> Open | None:
        raw = wire.field(part, offset, 16, "file id")
        if raw == b"\xff" * 16 and file_id:
            raw = file_id
        return self.opens.get(int.from_bytes(raw[8:], "little"))

    def create(self, session: Session, tree: TreeConnect, part: bytes, _file_id: bytes) -> Reply:
        (size, _sec, _oplock, _imp, _flags, _res, access, _attrs, _share, disposition, options,
         name_off, name_len) = unpack_from(struct.Struct("<HBBIQQIIIIIHH"), part, 64, "CREATE")
        if size != 57 or name_len > 2048:
            raise SMBError("CREATE: bad size")
        name = share.decode_name(wire.field(part, name_off, name_len, "CREATE name")
                                 if name_len else b"").strip("\\")
        if len(self.opens) >= MAX_OPENS:
            return Reply(INSUFFICIENT_RESOURCES, ERROR_BODY)
        if tree.ipc:
            if name.casefold() not in ("srvsvc", "pipe\\srvsvc"):
                return Reply(NAME_NOT_FOUND, ERROR_BODY)
            shares = [share.Share(self.settings.share, share.STYPE_DISKTREE, ""),
                      share.Share("IPC$", share.STYPE_SPECIAL_IPC, "Remote IPC"),
                      share.Share("ADMIN$", share.STYPE_SPECIAL, "Remote Admin"),
                      share.Share("C$", share.STYPE_SPECIAL, "Default share")]
            return self.opened(Open(None, share.Pipe(shares)), None)
        node, parent = self.service.tree.find(name) if ":" not in name else (None, False)
        writes = bool(access & WRITE_ACCESS) or disposition in (0, 2, 4, 5) or options & 0x1000
        if writes or (node is not None and not node.is_dir and access & READ_ACCESS):
            self.record_open(session, tree, name if node is None else node.path,
                             "write" if writes else "read",
                             "refused" if writes or node is None else "opened")
        if writes:
            return Reply(ACCESS_DENIED, ERROR_BODY)
        if node is None:
            return Reply(NAME_NOT_FOUND if parent else PATH_NOT_FOUND, ERROR_BODY)
        if node.is_dir and options & 0x40:
            return Reply(FILE_IS_A_DIRECTORY, ERROR_BODY)
        if not node.is_dir and options & 0x1:
            return Reply(NOT_A_DIRECTORY, ERROR_BODY)
        return self.opened(Open(node), node)

    def record_open(self, session: Session, tree: TreeConnect, path: str, access: str,
                    result: str) -> None:
        if (path.casefold(), access) in session.opened or len(session.opened) >= 256:
            return
        session.opened.add((path.casefold(), access))
        self.emit(EventCode.SMB_FILE_OPEN, {
            "USER": session.user, "DOMAIN": session.domain, "SHARENAME": tree.name,
            "FILENAME": path, "ACCESS": access, "RESULT": result})

    def opened(self, handle: Open, node: share.Node | None) -> Reply:
        volatile = self.new_id()
        self.opens[volatile] = handle
        times = node.times(self.service.started) if node else (0, 0, 0, 0)
        size = node.size if node else 0
        attrs = node.attributes if node else 0x80
        body = struct.pack("<HBBIQQQQQQII", 89, 0, 0, 1, *times, -(-size // 4096) * 4096, size,
                           attrs, 0)
        body += struct.pack("<QQII", volatile, volatile, 0, 0)
        return Reply(OK, body)

    def close_file(self, _session: Session, _tree: TreeConnect, part: bytes,
                   file_id: bytes) -> Reply:
        size, flags = unpack_from(struct.Struct("<HH"), part, 64, "CLOSE")
        handle = self.find_open(part, 72, file_id)
        if size != 24 or handle is None:
            return Reply(FILE_CLOSED, ERROR_BODY)
        self.opens = {k: v for k, v in self.opens.items() if v is not handle}
        node = handle.node
        if flags & 1 and node is not None:
            body = struct.pack("<HHI", 60, 1, 0) + struct.pack(
                "<QQQQQQII", *node.times(self.service.started), -(-node.size // 4096) * 4096,
                node.size, node.attributes, 0)[:52]
        else:
            body = struct.pack("<HHI", 60, 0, 0) + b"\x00" * 52
        return Reply(OK, body)

    def read(self, _session: Session, _tree: TreeConnect, part: bytes, file_id: bytes) -> Reply:
        size, _pad, _flags, length, offset = unpack_from(struct.Struct("<HBBIQ"), part, 64,
                                                         "READ")
        handle = self.find_open(part, 80, file_id)
        if size != 49 or length > MAX_IO:
            return Reply(INVALID_PARAMETER, ERROR_BODY)
        if handle is None:
            return Reply(FILE_CLOSED, ERROR_BODY)
        if handle.pipe is not None:
            data = handle.pipe.read(length)
        elif handle.node is not None and not handle.node.is_dir:
            data = handle.node.content(offset, length)
        else:
            return Reply(INVALID_PARAMETER, ERROR_BODY)
        if not data:
            return Reply(END_OF_FILE, ERROR_BODY)
        return Reply(OK, struct.pack("<HBBIII", 17, 0x50, 0, len(data), 0, 0) + data)

    def write(self, _session: Session, _tree: TreeConnect, part: bytes, file_id: bytes) -> Reply:
        size, data_off, length = unpack_from(struct.Struct("<HHI"), part, 64, "WRITE")
        handle = self.find_open(part, 80, file_id)
        if size != 49 or length > MAX_IO:
            return Reply(INVALID_PARAMETER, ERROR_BODY)
        if handle is None:
            return Reply(FILE_CLOSED, ERROR_BODY)
        if handle.pipe is None:
            return Reply(ACCESS_DENIED, ERROR_BODY)
        handle.pipe.write(wire.field(part, data_off, length, "WRITE data"))
        return Reply(OK, struct.pack("<HHIIHH", 17, 0, length, 0, 0, 0))

    def ioctl(self, _session: Session, _tree: TreeConnect, part: bytes, file_id: bytes) -> Reply:
        (size, _res, code, raw_id, in_off, in_len, _max_in, _out_off, _out_len, max_out,
         _flags) = unpack_from(struct.Struct("<HHI16sIIIIIII"), part, 64, "IOCTL")
        if size != 57 or in_len > MAX_IO:
            raise SMBError("IOCTL: bad size")
        data = wire.field(part, in_off, in_len, "IOCTL input") if in_len else b""
        if code == FSCTL_VALIDATE_NEGOTIATE:
            output = struct.pack("<I16sHH", 0, self.service.guid, 0x01, self.dialect)
        elif code == FSCTL_PIPE_TRANSCEIVE:
            handle = self.find_open(part, 72, file_id)
            if handle is None or handle.pipe is None:
                return Reply(FILE_CLOSED if handle is None else INVALID_PARAMETER, ERROR_BODY)
            handle.pipe.write(data)
            output = handle.pipe.read(max(0, min(max_out, MAX_IO)))
        elif code == FSCTL_DFS_REFERRALS:
            return Reply(NOT_FOUND, ERROR_BODY)
        else:
            return Reply(NOT_SUPPORTED, ERROR_BODY)
        if file_id and raw_id == b"\xff" * 16:
            raw_id = file_id
        body = struct.pack("<HHI16sIIIIII", 49, 0, code, raw_id, 112, 0, 112, len(output), 0, 0)
        return Reply(OK, body + output)

    def query_directory(self, _session: Session, _tree: TreeConnect, part: bytes,
                        file_id: bytes) -> Reply:
        size, info_class, flags, _index = unpack_from(struct.Struct("<HBBI"), part, 64,
                                                      "QUERY_DIRECTORY")
        name_off, name_len, out_len = unpack_from(struct.Struct("<HHI"), part, 88,
                                                  "QUERY_DIRECTORY")
        handle = self.find_open(part, 72, file_id)
        if size != 33 or name_len > 1024:
            raise SMBError("QUERY_DIRECTORY: bad size")
        if handle is None:
            return Reply(FILE_CLOSED, ERROR_BODY)
        node = handle.node
        if node is None or not node.is_dir:
            return Reply(INVALID_PARAMETER, ERROR_BODY)
        if info_class not in share.DIRECTORY_CLASSES:
            return Reply(INVALID_INFO_CLASS, ERROR_BODY)
        pattern = share.decode_name(wire.field(part, name_off, name_len, "pattern")
                                    if name_len else b"*")
        if flags & 0x11 or handle.listed < 0:
            handle.listed = 0
        entries = [(n, e) for n, e in share.listing(node) if share.matches(n, pattern)]
        chosen: list[bytes] = []
        used = 0
        for name, entry in entries[handle.listed:]:
            encoded = share.directory_entry(info_class, entry, name, self.service.started)
            if used + len(encoded) + 8 > min(out_len, MAX_IO) and chosen:
                break
            chosen.append(encoded)
            used += len(encoded) + 8
            if flags & 0x2:
                break
        if not chosen:
            return Reply(NO_MORE_FILES, ERROR_BODY)
        handle.listed += len(chosen)
        data = share.chain(chosen)
        if len(data) > out_len:
            return Reply(INFO_LENGTH_MISMATCH, ERROR_BODY)
        return Reply(OK, struct.pack("<HHI", 9, 72, len(data)) + data)

    def query_info(self, _session: Session, tree: TreeConnect, part: bytes,
                   file_id: bytes) -> Reply:
        size, info_type, info_class, out_len = unpack_from(struct.Struct("<HBBI"), part, 64,
                                                           "QUERY_INFO")
        handle = self.find_open(part, 88, file_id)
        if size != 41:
            raise SMBError("QUERY_INFO: bad size")
        if handle is None:
            return Reply(FILE_CLOSED, ERROR_BODY)
        node = handle.node
        data: bytes | None
        if info_type == 1:
            data = share.file_info(info_class, node, self.service.started) if node else None
        elif info_type == 2:
            data = share.fs_info(info_class, tree.name, self.service.started)
        elif info_type == 3:
            return Reply(ACCESS_DENIED, ERROR_BODY)
        else:
            data = None
        if data is None:
            return Reply(INVALID_INFO_CLASS, ERROR_BODY)
        status = OK
        if len(data) > out_len:
            if info_class not in (18, 22) or out_len < 24:
                return Reply(INFO_LENGTH_MISMATCH, ERROR_BODY)
            data, status = data[:out_len], BUFFER_OVERFLOW
        return Reply(status, struct.pack("<HHI", 9, 72, len(data)) + data)


def _setup_body(flags: int, blob: bytes) -> bytes:
    return struct.pack("<HHHH", 9, flags, 72, len(blob)) + blob


def _inherit(header: wire.Header, previous: Reply) -> wire.Header:
    """A related request of a compound chain uses the session and tree of the one before."""
    session_id = previous.session.id if previous.session is not None else header.session_id
    return wire.Header(header.command, header.credit_charge, header.credits, header.flags,
                       header.next_command, header.message_id,
                       previous.tree_id or header.tree_id, session_id, header.signature)


def _created_id(command: int, reply: Reply) -> bytes:
    """The file id a CREATE answered with (for related requests that name 0xFF..FF)."""
    if command != CREATE or reply.status != OK:
        return b""
    return reply.body[64:80]


def _has_preauth_sha512(part: bytes, offset: int, count: int) -> bool:
    pos = offset
    for _ in range(min(count, 16)):
        kind, length = unpack_from(struct.Struct("<HH"), part, pos, "negotiate context")
        data = wire.field(part, pos + 8, length, "negotiate context")
        if kind == 1 and len(data) >= 2:
            algorithms = struct.unpack_from(f"<{min(data[0], (len(data) - 4) // 2)}H", data, 4) \
                if len(data) >= 4 else ()
            if 1 in algorithms:
                return True
        pos += 8 + length
        pos += -pos % 8
    return False
