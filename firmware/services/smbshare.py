"""What the SMB honeypot's share holds and how SMB2 describes it: a fixed tree of documents.

An intruder who lists a file server's share should see what a small office keeps there
(finance, HR, IT notes, scans), with sizes and times that look lived-in, so that the first file
they copy raises the alarm.  Nothing here touches the device's storage: the tree is built in
memory from the share's name, file contents are generated from each file's path (the same
bytes on every read and every device), and times count back from the service's start.

Also here: the directory and file information classes SMB2 returns (MS-FSCC 2.4, 2.5), and the
one remote call every share browser makes, srvsvc's NetShareEnumAll (MS-SRVS 3.1.4.8) over
DCE/RPC on the ``srvsvc`` pipe, answered with the share list; any other call gets a DCE/RPC
fault.  Readers bound every length by the bytes they have and raise only ``SMBError``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from firmware.services.ntlm import utf16
from firmware.services.smbwire import SMBError, unpack_from

FILETIME_EPOCH = 11_644_473_600  # seconds from 1601 to 1970
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
BLOCK = 4096  # generated contents come in blocks of this size

# path (backslash separated) -> size in bytes; directories are implied by their files
DOCUMENTS = {
    "Finance\\Budget 2027 draft.xlsx": 48_213,
    "Finance\\Payroll Q3 2026.xlsx": 61_904,
    "Finance\\Invoices\\INV-2026-0412.pdf": 88_410,
    "Finance\\Invoices\\INV-2026-0413.pdf": 91_377,
    "Finance\\Bank details - suppliers.docx": 23_561,
    "HR\\Employee handbook 2026.docx": 214_880,
    "HR\\Salary review 2026.xlsx": 37_922,
    "HR\\Contracts\\Offer letter template.docx": 19_304,
    "IT\\Server inventory.xlsx": 29_117,
    "IT\\Network diagram.vsdx": 143_205,
    "IT\\vpn-setup.txt": 1_284,
    "IT\\Backup schedule.txt": 911,
    "Projects\\Roadmap 2027.pptx": 1_032_455,
    "Scans\\scan_20261114_093012.pdf": 402_118,
    "Scans\\scan_20261120_161545.pdf": 377_601,
}
TEXTS = {
    "IT\\vpn-setup.txt": "VPN for remote staff\r\n\r\nClient: the company VPN client from the "
                         "intranet\r\nGateway: vpn (internal DNS)\r\nAccounts: ask IT, one per "
                         "person, no shared logins\r\n",
    "IT\\Backup schedule.txt": "Nightly 01:00 to the NAS, weekly full copy off-site on "
                               "Fridays.\r\nRestore tests: first Monday of the month.\r\n",
}


@dataclass
class Node:
    """A file or a directory of the share."""

    name: str
    path: str
    size: int = 0
    children: dict[str, Node] | None = None  # by casefolded name; None for a file
    changed: int = 0  # seconds before the service started
    index: int = 0  # a stable file id

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def entries(self) -> dict[str, Node]:
        """A directory's children (a file has none)."""
        return self.children if self.children is not None else {}

    @property
    def attributes(self) -> int:
        return ATTR_DIRECTORY if self.is_dir else ATTR_ARCHIVE

    def times(self, started: float) -> tuple[int, int, int, int]:
        """Creation, last access, last write, change as FILETIMEs."""
        written = filetime(started - self.changed)
        created = filetime(started - self.changed - 86_400 * (3 + self.index % 40))
        return created, written, written, written

    def content(self, offset: int, length: int) -> bytes:
        """The file's bytes at ``offset``: its text, or bytes generated from its path."""
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        text = TEXTS.get(self.path)
        if text is not None:
            return text.encode()[offset:end]
        first = offset // BLOCK
        out = b"".join(hashlib.shake_256(f"{self.path}:{i}".encode()).digest(BLOCK)
                       for i in range(first, (end - 1) // BLOCK + 1))
        start = offset - first * BLOCK
        return out[start:start + end - offset]


@dataclass
class Tree:
    """The share's root and its lookups (names are case-insensitive, as on Windows)."""

    root: Node = field(default_factory=lambda: Node("", "", children={}))

    @classmethod
    def documents(cls) -> Tree:
        tree = cls()
        for number, (path, listed) in enumerate(sorted(DOCUMENTS.items()), start=1):
            parts = path.split("\\")
            children = tree.root.entries
            for depth, part in enumerate(parts[:-1]):
                folder = children.setdefault(part.casefold(), Node(
                    part, "\\".join(parts[:depth + 1]), children={}, changed=86_400 * 30,
                    index=1000 + number))
                children = folder.entries
            size = len(TEXTS[path].encode()) if path in TEXTS else listed
            children[parts[-1].casefold()] = Node(
                parts[-1], path, size=size, changed=3_600 * (7 + 53 * number), index=number)
        return tree

    def find(self, path: str) -> tuple[Node | None, bool]:
        """The node at ``path`` and whether its parent directory exists."""
        node: Node | None = self.root
        parts = [p for p in path.split("\\") if p]
        for i, part in enumerate(parts):
            if node is None or node.children is None:
                return None, False
            node = node.children.get(part.casefold())
            if node is None:
                return None, i == len(parts) - 1
        return node, True


def filetime(unix: float) -> int:
    return int((unix + FILETIME_EPOCH) * 10_000_000)


# --- information classes (MS-FSCC) --------------------------------------------------------------

DIRECTORY_CLASSES = {1, 2, 3, 12, 37, 38}  # Directory, FullDirectory, BothDirectory, Names,
#                                             IdBothDirectory, IdFullDirectory


def directory_entry(info_class: int, node: Node, name: str, started: float) -> bytes:
    """One entry of a QUERY_DIRECTORY answer, without its NextEntryOffset (set when chained)."""
    encoded = name.encode("utf-16-le")
    if info_class == 12:
        return struct.pack("<III", 0, 0, len(encoded)) + encoded
    times = struct.pack("<QQQQ", *node.times(started))
    sizes = struct.pack("<QQI", node.size, _allocated(node), node.attributes)
    head = struct.pack("<II", 0, 0) + times + sizes + struct.pack("<I", len(encoded))
    if info_class == 1:
        return head + encoded
    head += struct.pack("<I", 0)  # EaSize
    if info_class == 2:
        return head + encoded
    if info_class == 38:
        return head + struct.pack("<IQ", 0, node.index) + encoded
    head += struct.pack("<BB", 0, 0) + b"\x00" * 24  # no 8.3 short name
    if info_class == 3:
        return head + encoded
    return head + struct.pack("<HQ", 0, node.index) + encoded  # 37


def chain(entries: list[bytes]) -> bytes:
    """Entries aligned to 8 bytes, each NextEntryOffset pointing at the next."""
    out = bytearray()
    for i, entry in enumerate(entries):
        start = len(out)
        out += entry
        if i < len(entries) - 1:
            out += b"\x00" * (-len(out) % 8)
            struct.pack_into("<I", out, start, len(out) - start)
    return bytes(out)


MAX_PATTERN = 64  # a longer search pattern matches nothing (no real client sends one)


def matches(name: str, pattern: str) -> bool:
    """Windows's ``*`` and ``?`` (not fnmatch.fnmatchcase: its compiled patterns stay in a
    process-wide cache of 32,768, which unique attacker patterns would fill)."""
    if pattern in ("", "*", "*.*"):
        return True
    if len(pattern) > MAX_PATTERN:
        return False
    return re.fullmatch(fnmatch.translate(pattern), name, re.IGNORECASE | re.DOTALL) is not None


def listing(node: Node) -> Iterator[tuple[str, Node]]:
    """A directory's entries as Windows lists them: ``.``, ``..``, then by name."""
    yield ".", node
    yield "..", node
    for child in sorted(node.entries.values(), key=lambda n: n.name.casefold()):
        yield child.name, child


def _allocated(node: Node) -> int:
    return 0 if node.is_dir else -(-node.size // 4096) * 4096


def file_info(info_class: int, node: Node, started: float) -> bytes | None:
    """A QUERY_INFO answer about a file or directory (info type 1); None: class not served."""
    times = struct.pack("<QQQQ", *node.times(started))
    basic = times + struct.pack("<II", node.attributes, 0)
    standard = struct.pack("<QQIBBH", _allocated(node), node.size, 1, 0, int(node.is_dir), 0)
    name = ("\\" + node.path).encode("utf-16-le")
    if info_class == 4:
        return basic
    if info_class == 5:
        return standard
    if info_class == 6:
        return struct.pack("<Q", node.index)
    if info_class == 7:
        return struct.pack("<I", 0)
    if info_class == 8:
        return struct.pack("<I", 0x001200A9)
    if info_class == 14:
        return struct.pack("<Q", 0)
    if info_class == 16:
        return struct.pack("<I", 0)
    if info_class == 17:
        return struct.pack("<I", 0)
    if info_class == 18:  # FileAllInformation
        return (basic + standard + struct.pack("<QIIQII", node.index, 0, 0x001200A9, 0, 0, 0)
                + struct.pack("<I", len(name)) + name)
    if info_class == 22 and not node.is_dir:  # FileStreamInformation: the data stream
        stream = "::$DATA".encode("utf-16-le")
        return struct.pack("<IIQQ", 0, len(stream), node.size, _allocated(node)) + stream
    if info_class == 34:  # FileNetworkOpenInformation
        return times + struct.pack("<QQII", _allocated(node), node.size, node.attributes, 0)
    if info_class == 35:
        return struct.pack("<II", node.attributes, 0)
    return None


def fs_info(info_class: int, label: str, started: float) -> bytes | None:
    """A QUERY_INFO answer about the share's file system (info type 2)."""
    total, free, per_unit, sector = 244_190_208, 97_812_480, 8, 512  # a 1 TB disk, 40 % free
    if info_class == 1:  # FileFsVolumeInformation
        name = label.encode("utf-16-le")
        return (struct.pack("<QIIBB", filetime(started - 86_400 * 400), 0x5C3E_91A4, len(name),
                            0, 0) + name)
    if info_class == 3:
        return struct.pack("<QQII", total, free, per_unit, sector)
    if info_class == 4:  # FileFsDeviceInformation: a disk
        return struct.pack("<II", 0x07, 0x20)
    if info_class == 5:  # FileFsAttributeInformation
        name = "NTFS".encode("utf-16-le")
        return struct.pack("<IiI", 0x00E700FF, 255, len(name)) + name
    if info_class == 7:
        return struct.pack("<QQQII", total, free, free, per_unit, sector)
    if info_class == 8:
        return b"\x00" * 64
    if info_class == 11:  # FileFsSectorSizeInformation
        return struct.pack("<IIIIIIII", sector, 4096, 4096, 4096, 0xB, 0, 0, 0)[:28]
    return None


# --- DCE/RPC on the srvsvc pipe -------------------------------------------------------------------

SRVSVC = bytes.fromhex("c84f324b7016d30112785a47bf6ee188") + struct.pack("<HH", 3, 0)
NDR32 = bytes.fromhex("045d888aeb1cc9119fe808002b104860") + struct.pack("<I", 2)
RPC_HEADER = struct.Struct("<BBBBIHHI")
FAULT_OPERATION = 0x1C010002  # nca_s_op_rng_error
FAULT_NDR = 0x000006F7
STYPE_DISKTREE, STYPE_SPECIAL_IPC, STYPE_SPECIAL = 0, 0x80000003, 0x80000000


@dataclass(frozen=True)
class Share:
    name: str
    kind: int
    remark: str


class Pipe:
    """The srvsvc named pipe of one open: whole DCE/RPC fragments in, answers out."""

    def __init__(self, shares: list[Share]) -> None:
        self.shares = shares
        self.bound = False
        self.output = bytearray()

    def write(self, data: bytes) -> None:
        """One request fragment (clients send each call as one write or one transceive)."""
        version, _minor, ptype, _flags, drep, frag_len, auth_len, call_id = unpack_from(
            RPC_HEADER, data, 0, "DCE/RPC header")
        if version != 5 or frag_len > len(data) or drep & 0xF0 != 0x10:
            raise SMBError("not a little-endian DCE/RPC fragment")
        body = data[RPC_HEADER.size:frag_len - (auth_len + 8 if auth_len else 0)]
        if ptype == 11:  # bind
            self.output += self._bind_ack(call_id, body)
        elif ptype == 0 and self.bound:  # request
            if len(body) < 8:
                raise SMBError("DCE/RPC request: truncated")
            _alloc, ctx, opnum = struct.unpack_from("<IHH", body)
            if opnum != 15:
                self.output += _fault(call_id, ctx, FAULT_OPERATION)
                return
            try:
                level = _share_enum_level(body[8:])
            except SMBError:
                self.output += _fault(call_id, ctx, FAULT_NDR)
                return
            self.output += _response(call_id, ctx, self._share_enum(level))
        else:
            raise SMBError(f"DCE/RPC packet type {ptype} not expected here")

    def read(self, length: int) -> bytes:
        out = bytes(self.output[:length])
        del self.output[:length]
        return out

    def _bind_ack(self, call_id: int, body: bytes) -> bytes:
        _xmit, _recv, _group, count = unpack_from(struct.Struct("<HHIB3x"), body, 0, "bind")
        results = bytearray()
        pos = 12
        for _ in range(min(count, 8)):
            _ctx, transfers = unpack_from(struct.Struct("<HBx"), body, pos, "bind context")
            abstract = body[pos + 4:pos + 24]
            offered = [body[pos + 24 + 20 * i:pos + 44 + 20 * i] for i in range(transfers)]
            pos += 24 + 20 * transfers
            if pos > len(body):
                raise SMBError("bind: truncated context list")
            if abstract == SRVSVC and NDR32 in offered:
                results += struct.pack("<HH", 0, 0) + NDR32
                self.bound = True
            else:
                results += struct.pack("<HH", 2, 2) + b"\x00" * 20
        port = b"\\PIPE\\srvsvc\x00"
        ack = struct.pack("<HHIH", 4280, 4280, 0x0001_2C4B, len(port)) + port
        ack += b"\x00" * (-(len(ack) + RPC_HEADER.size) % 4)
        ack += struct.pack("<B3x", min(count, 8)) + results
        return _pdu(12, call_id, ack)

    def _share_enum(self, level: int) -> bytes:
        """NetShareEnumAll's answer: level 1 (name, type, remark) or 0 (names only)."""
        level = 0 if level == 0 else 1
        n = len(self.shares)
        out = bytearray(struct.pack("<III", level, level, 0x0002_0000))
        out += struct.pack("<III", n, 0x0002_0004, n)
        ref = 0x0002_0008
        for share in self.shares:
            out += struct.pack("<I", ref)
            ref += 4
            if level == 1:
                out += struct.pack("<II", share.kind, ref)
                ref += 4
        for share in self.shares:
            out += _ndr_string(share.name)
            if level == 1:
                out += _ndr_string(share.remark)
        out += struct.pack("<III", n, 0x0002_1000, 0) + struct.pack("<I", 0)
        return bytes(out)


def _share_enum_level(stub: bytes) -> int:
    """The info level a NetShareEnumAll request asks for (after its server name)."""
    (referent,) = unpack_from(struct.Struct("<I"), stub, 0, "server name")
    pos = 4
    if referent:
        _max, _offset, actual = unpack_from(struct.Struct("<III"), stub, pos, "server name")
        if actual > 1024:
            raise SMBError("server name too long")
        pos += 12 + 2 * actual
        pos += -pos % 4
    (level,) = unpack_from(struct.Struct("<I"), stub, pos, "info level")
    return int(level)


def _ndr_string(text: str) -> bytes:
    raw = (text + "\x00").encode("utf-16-le")
    count = len(raw) // 2
    out = struct.pack("<III", count, 0, count) + raw
    return out + b"\x00" * (-len(out) % 4)


def _pdu(ptype: int, call_id: int, body: bytes) -> bytes:
    return RPC_HEADER.pack(5, 0, ptype, 0x03, 0x10, RPC_HEADER.size + len(body), 0,
                           call_id) + body


def _response(call_id: int, ctx: int, stub: bytes) -> bytes:
    return _pdu(2, call_id, struct.pack("<IHBx", len(stub), ctx, 0) + stub)


def _fault(call_id: int, ctx: int, status: int) -> bytes:
    return _pdu(3, call_id, struct.pack("<IHBxI4x", 0, ctx, 0, status))


def decode_name(raw: bytes) -> str:
    """A path from a CREATE or TREE_CONNECT (UTF-16LE, decoded with replacement)."""
    return utf16(raw).replace("/", "\\")
