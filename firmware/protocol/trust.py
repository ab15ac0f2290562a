"""The trust root and release manifests, and TUF's rules for believing them (docs/signing.md).

Pure verification the device, the console and the signer share: a trust root names the keys of
each role (root, release, canary, panic) and a threshold per role; root N+1 is believed only if
a threshold of root N's root keys *and* of its own signed it and its version is exactly N+1
(expired intermediate roots may still lead to a newer one); a release is believed only under
the release threshold of a root that has not expired, for this board, not expired itself, and
not below the rollback floor.  Every check runs against one time fixed at the start, never
below the device's stored time floor (a Pi without a real-time clock wakes up in 1970).
Every refusal is one ``RefusedError`` carrying the reason.  Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firmware.protocol import envelope as env
from firmware.shared.errors import RefusedError

ROOT_ROLES = ("root", "release", "canary", "panic")
MAX_KEYS = 32
MAX_COMPONENTS = 16
MAX_COMPONENT_BYTES = 8 << 30
MAX_VERSION = 2**53  # beyond it a version is nonsense (and JSON integers stop being exact)
_NAME = re.compile(r"[a-z0-9][a-z0-9._/-]{0,63}")
_BOARD = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
HASH = "blake2b-256"  # software-fast on the Pi 4's cores, which lack SHA instructions (bench/)


@dataclass(frozen=True)
class Role:
    keyids: frozenset[str]
    threshold: int


@dataclass(frozen=True)
class Root:
    version: int
    expires: int
    keys: Mapping[str, bytes]  # key id -> Ed25519 public key
    roles: Mapping[str, Role]

    def release_keyset(self) -> str:
        """An id of the release role's keys and threshold: a rollback floor belongs to it."""
        role = self.roles["release"]
        text = ",".join(sorted(role.keyids)) + f"/{role.threshold}"
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Component:
    length: int
    digest: bytes  # BLAKE2b-256 of exactly ``length`` bytes


@dataclass(frozen=True)
class Release:
    version: int
    expires: int
    boards: tuple[str, ...]
    components: Mapping[str, Component]


@dataclass(frozen=True)
class Floor:
    """What the device stores across reboots and re-imaging: no older release, no older time."""

    release_keyset: str = ""
    version: int = 0
    time: int = 0


def fixed_now(clock: float, floor: Floor) -> int:
    """The one time every check of an update uses: the clock, never below the stored floor."""
    return max(int(clock), floor.time)


# --- trust roots -----------------------------------------------------------------------------


def parse_root(payload: bytes) -> Root:
    doc = env.load_payload(env.Envelope("root", payload, ()), "root")
    _fields(doc, {"type", "version", "expires", "keys", "roles"}, "root")
    version, expires = _int(doc["version"], "root version"), _int(doc["expires"], "expiry")
    keys_doc, roles_doc = doc["keys"], doc["roles"]
    if not isinstance(keys_doc, dict) or not 0 < len(keys_doc) <= MAX_KEYS:
        raise RefusedError("root: keys must be a table of 1 to 32 keys")
    keys = {kid: env.public_key(kid, text, "root") for kid, text in keys_doc.items()}
    if not isinstance(roles_doc, dict) or set(roles_doc) != set(ROOT_ROLES):
        raise RefusedError(f"root: roles must be exactly {', '.join(ROOT_ROLES)}")
    roles = {}
    for name, role in roles_doc.items():
        _fields(role, {"keyids", "threshold"}, f"role {name}")
        ids, threshold = role["keyids"], _int(role["threshold"], f"{name} threshold")
        if not isinstance(ids, list) or len(set(ids)) != len(ids) or not set(ids) <= set(keys):
            raise RefusedError(f"root: role {name} lists unknown or repeated keys")
        if not 1 <= threshold <= len(ids):
            raise RefusedError(f"root: role {name} threshold {threshold} of {len(ids)} keys")
        roles[name] = Role(frozenset(ids), threshold)
    return Root(version, expires, keys, roles)


def first_root(data: bytes) -> Root:
    """The root pinned in the image: it must carry its own root threshold (version 1 usually;
    its expiry is checked, like any root's, when it is used)."""
    envelope = env.parse(data)
    root = parse_root(envelope.payload)
    _require(envelope, "root", root, "trust root")
    return root


def next_root(trusted: Root, data: bytes) -> Root:
    """Root N+1 from a trusted root N: exactly one version up, signed by the root thresholds
    of both."""
    envelope = env.parse(data)
    new = parse_root(envelope.payload)
    if new.version != trusted.version + 1:
        raise RefusedError(f"root version {new.version} does not follow {trusted.version}")
    _require(envelope, "root", trusted, f"root {new.version} under root {trusted.version}")
    _require(envelope, "root", new, f"root {new.version} under its own keys")
    return new


def newest_root(trusted: Root, chain: list[bytes], now: int) -> Root:
    """Walk a chain of rotations from ``trusted``; the root reached must not have expired."""
    root = trusted
    for data in chain:
        root = next_root(root, data)
    if now >= root.expires:
        raise RefusedError(f"trust root {root.version} expired (at {root.expires}, now {now})")
    return root


# --- releases ----------------------------------------------------------------------------------


def verify_release(root: Root, data: bytes, *, board: str, now: int, floor: Floor) -> Release:
    """A release this device may install, or the reason it may not."""
    if now >= root.expires:
        raise RefusedError(f"trust root {root.version} expired: rotate it before releasing")
    envelope = env.parse(data)
    _require(envelope, "release", root, "release")
    release = parse_release(envelope.payload)
    if floor.release_keyset == root.release_keyset() and release.version < floor.version:
        raise RefusedError(f"release {release.version} is older than the installed "
                           f"{floor.version} (rollback)")
    if now >= release.expires:
        raise RefusedError(f"release {release.version} expired (at {release.expires}, now {now})")
    if board not in release.boards:
        raise RefusedError(f"release {release.version} is for {', '.join(release.boards)}, "
                           f"not {board}")
    return release


def floor_after(root: Root, release: Release, now: int) -> Floor:
    """The floor to store once ``release`` is installed.  A release-key rotation in the root
    starts a new floor: recovery from a quorum that signed an absurd version."""
    return Floor(root.release_keyset(), release.version, now)


def parse_release(payload: bytes) -> Release:
    doc = env.load_payload(env.Envelope("release", payload, ()), "release")
    _fields(doc, {"type", "version", "expires", "boards", "components"}, "release")
    boards, comps = doc["boards"], doc["components"]
    if not isinstance(boards, list) or not boards or not all(
            isinstance(b, str) and _BOARD.fullmatch(b) for b in boards):
        raise RefusedError("release: boards must be a list of board names")
    if not isinstance(comps, dict) or not 0 < len(comps) <= MAX_COMPONENTS:
        raise RefusedError("release: components must be a table of 1 to 16 entries")
    components = {}
    for name, comp in comps.items():
        if not _NAME.fullmatch(name) or ".." in name:
            raise RefusedError(f"release: component name {name!r}")
        _fields(comp, {"length", HASH}, f"component {name}")
        length = _int(comp["length"], f"{name} length")
        if not 0 < length <= MAX_COMPONENT_BYTES:
            raise RefusedError(f"release: component {name} of {length} bytes")
        digest = comp[HASH]
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise RefusedError(f"release: component {name} has no {HASH} digest")
        components[name] = Component(length, bytes.fromhex(digest))
    return Release(_int(doc["version"], "release version"), _int(doc["expires"], "expiry"),
                   tuple(boards), components)


class ComponentCheck:
    """Hash a component as it streams in; stop at its declared length (endless data) and
    refuse a short or altered one at the end.  Nothing is trusted before ``finish``."""

    def __init__(self, name: str, component: Component) -> None:
        self.name, self.component = name, component
        self.seen = 0
        self.hash = hashlib.blake2b(digest_size=32)

    def update(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        if self.seen > self.component.length:
            raise RefusedError(f"{self.name}: more than the {self.component.length} bytes the "
                               "release declares")
        self.hash.update(chunk)

    def finish(self) -> None:
        if self.seen != self.component.length:
            raise RefusedError(f"{self.name}: {self.seen} bytes of {self.component.length}")
        if self.hash.digest() != self.component.digest:
            raise RefusedError(f"{self.name}: content differs from the signed release")


# --- helpers ------------------------------------------------------------------------------------


def _require(envelope: env.Envelope, role: str, root: Root, what: str) -> None:
    spec = root.roles[role]
    env.require(envelope, role, root.keys, spec.keyids, threshold=spec.threshold, what=what)


def _fields(doc: Any, names: set[str], what: str) -> None:
    if not isinstance(doc, dict) or set(doc) != names:
        raise RefusedError(f"{what}: expected exactly the fields {', '.join(sorted(names))}")


def _int(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < MAX_VERSION:
        raise RefusedError(f"{what}: {value!r} is not a whole number in range")
    return value

