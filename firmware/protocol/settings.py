"""Device settings signed by the console: after pairing, the one way a device's settings change.

The operator edits a device's settings at the console; the console signs them with an Ed25519
key used for nothing else, whose public half the device pinned when it was paired (the approving
``REGISTER_ACK`` carries it).  A device takes signed settings only in config mode, and only
settings that name *its* id and a version above the one it holds, so settings for another
device, an older version replayed, or anything the console's key did not sign are refused.

The signature covers the exact bytes sent, after a domain-separation prefix: never the fields
re-serialised after parsing.  Wire form: ``signature (64) | body``, the body canonical JSON
``{"d": device id (hex), "s": {...}, "v": version}`` of at most ``MAX_BYTES``.  Only the
settings below exist; ``validate`` reports every problem at once.  Pure: no I/O.

| key | type | meaning |
|---|---|---|
| ``device.hostname`` | str | the host name the device gives itself (DHCP, its own name) |
| ``device.personality`` | str | the kind of machine the device looks like (PERSONALITIES): |
| | | its services, banners, names, MAC vendor, DHCP and TTL; other settings win |
| ``services.ssh.enabled`` | bool | the SSH honeypot runs |
| ``services.ssh.port`` | int | the port it listens on |
| ``services.NAME.enabled`` | bool | the NAME honeypot runs (ftp, http, https, mysql, rdp, |
| | | redis, smb, telnet, vnc; off unless enabled) |
| ``services.NAME.port`` | int | the port its socket holds |
| ``services.portscan.enabled`` | bool | the port-scan detector runs |
| ``services.http.skin`` | "nas", "router" or "basic" | the HTTP login page (also https) |
| ``services.https.cert_subject`` | "CN=...,O=..." | the certificate's subject |
| ``services.smb.share`` | str | the share's name |
| ``services.smb.honey_user`` | str | the honey credential's user name |
| ``services.smb.honey_nt_hash`` | 32 hex digits | its NT hash (MD4 of the UTF-16LE password) |
| ``network.mode`` | "dhcp" or "static" | how eth0 gets its address |
| ``network.address`` | "a.b.c.d/len" | with ``static`` |
| ``network.gateway`` | IPv4 address | with ``static`` |
| ``network.dns`` | list of IPv4 addresses | with ``static`` |
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

from firmware.protocol.keys import DEVICE_ID_LEN
from firmware.protocol.personality import PERSONALITIES
from firmware.shared.errors import AuthenticationError, DecodeError

DOMAIN = b"coalmine settings v1\x00"
SIGNATURE_LEN = 64
MAX_BYTES = 1024
WIRE_MAX = SIGNATURE_LEN + MAX_BYTES
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_PREFIX = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}")
# the honeypots systemd starts from a socket unit of their own when the settings enable them
SOCKET_SERVICES = ("ftp", "http", "https", "mysql", "rdp", "redis", "smb", "telnet", "vnc")
# and the one that listens to packets, not on a port (CAP_NET_RAW, a unit of its own)
PACKET_SERVICES = ("portscan",)
OPTIONAL_SERVICES = SOCKET_SERVICES + PACKET_SERVICES
HTTP_SKINS = ("nas", "router", "basic")
_SHARE = re.compile(r"[A-Za-z0-9_-]{1,15}")
_USER = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NT_HASH = re.compile(r"[0-9a-f]{32}")
# printable ASCII but the comma, no blank at either end (config strips values); C: a country
_RDN = r"((CN|O|OU|L|ST)=[!-+\--~]([ -+\--~]{0,62}[!-+\--~])?|C=[A-Za-z]{2})"
_SUBJECT = re.compile(rf"{_RDN}(,{_RDN}){{0,7}}")
_SHAPE: dict[str, type] = {
    "device.hostname": str, "device.personality": str,
    "services.ssh.enabled": bool, "services.ssh.port": int,
    **{f"services.{name}.{key}": kind for name in SOCKET_SERVICES
       for key, kind in (("enabled", bool), ("port", int))},
    "services.portscan.enabled": bool,
    "services.http.skin": str, "services.https.skin": str, "services.https.cert_subject": str,
    "services.smb.share": str, "services.smb.honey_user": str,
    "services.smb.honey_nt_hash": str,
    "network.mode": str, "network.address": str, "network.gateway": str, "network.dns": list,
}
KEYS = frozenset(_SHAPE)


@dataclass(frozen=True)
class Settings:
    device_id: bytes
    version: int
    values: Mapping[str, Any]  # dotted key -> value, every key in KEYS

    def body(self) -> bytes:
        doc = {"d": self.device_id.hex(), "s": dict(sorted(self.values.items())),
               "v": self.version}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def validate(values: Mapping[str, Any]) -> list[str]:
    """Every problem with ``values`` (dotted key -> value), none for a valid set."""
    problems = [f"{k}: not a setting (settings: {', '.join(sorted(KEYS))})"
                for k in values if k not in KEYS]
    for key, kind in _SHAPE.items():
        if key in values and (type(values[key]) is not kind):
            problems.append(f"{key}: expected {kind.__name__}, got {values[key]!r}")
    if problems:
        return problems
    for key in sorted(k for k in values if k.endswith(".port")):
        if not 0 < values[key] < 65536:
            problems.append(f"{key}: {values[key]} is not a port number")
    for key, pattern, what in (
            ("services.smb.share", _SHARE, "1-15 letters, digits, - or _"),
            ("services.smb.honey_user", _USER, "1-64 letters, digits, ., - or _"),
            ("services.smb.honey_nt_hash", _NT_HASH, "32 lower-case hex digits"),
            ("services.https.cert_subject", _SUBJECT, "ATTRIBUTE=VALUE,... (CN, O, OU, L, ST, "
                                                      "C of two letters; no commas inside "
                                                      "values)")):
        if key in values and not pattern.fullmatch(values[key]):
            problems.append(f"{key}: {values[key]!r} is not {what}")
    if ("services.smb.honey_user" in values) != ("services.smb.honey_nt_hash" in values):
        problems.append("services.smb: honey_user and honey_nt_hash go together")
    for key in ("services.http.skin", "services.https.skin"):
        if key in values and values[key] not in HTTP_SKINS:
            problems.append(f"{key}: {values[key]!r} is not one of {', '.join(HTTP_SKINS)}")
    personality = values.get("device.personality")
    if personality is not None and personality not in PERSONALITIES:
        problems.append(f"device.personality: {personality!r} is not one of "
                        f"{', '.join(PERSONALITIES)}")
    host = values.get("device.hostname")
    if host is not None and not _HOSTNAME.fullmatch(host):
        problems.append(f"device.hostname: {host!r} is not a host name (a-z, 0-9, -)")
    return problems + _network_problems(values)


def _network_problems(values: Mapping[str, Any]) -> list[str]:
    mode = values.get("network.mode", "dhcp")
    static = ("network.address", "network.gateway", "network.dns")
    if mode == "dhcp":
        return [f"{k}: only with network.mode = static" for k in static if k in values]
    if mode != "static":
        return [f"network.mode: {mode!r} is neither dhcp nor static"]
    problems = [f"{k}: needed with network.mode = static" for k in static if k not in values]
    if problems:
        return problems
    address, dns_list = values["network.address"], values["network.dns"]
    if not _PREFIX.fullmatch(address):
        return [f"network.address: {address!r} is not a.b.c.d/len"]
    if not all(type(x) is str and _IPV4.fullmatch(x) for x in dns_list):
        return [f"network.dns: {dns_list!r} is not a list of a.b.c.d addresses"]
    try:  # written into unit files as given: only the canonical forms are accepted
        iface = ipaddress.IPv4Interface(address)
        gateway = ipaddress.IPv4Address(values["network.gateway"])
        dns = [ipaddress.IPv4Address(x) for x in dns_list]
    except (ValueError, TypeError) as exc:
        return [f"network: {exc}"]
    if str(gateway) != values["network.gateway"] or [str(x) for x in dns] != dns_list \
            or iface.with_prefixlen != address:
        return ["network: addresses must be written in their canonical form (no leading zeros)"]
    if gateway not in iface.network:
        problems.append(f"network.gateway: {gateway} is outside {iface.network}")
    if not 1 <= len(dns) <= 3:
        problems.append("network.dns: one to three servers")
    return problems


def sign(seed: bytes, settings: Settings) -> bytes:
    """The wire form: the signature over DOMAIN + body, then the body."""
    body = settings.body()
    if len(body) > MAX_BYTES:
        raise ValueError(f"settings of {len(body)} bytes, more than {MAX_BYTES}")
    return bytes(SigningKey(seed).sign(DOMAIN + body).signature) + body


def verify_key_of(seed: bytes) -> bytes:
    return bytes(SigningKey(seed).verify_key)


def verify(verify_key: bytes, wire: bytes, device_id: bytes, current_version: int) -> Settings:
    """The settings in ``wire`` if the pinned key signed them, for this device, newer than what
    it holds, and valid; else one refusal (``AuthenticationError`` or ``DecodeError``)."""
    if not SIGNATURE_LEN < len(wire) <= WIRE_MAX:
        raise DecodeError(f"settings of {len(wire)} bytes", offset=0)
    signature, body = wire[:SIGNATURE_LEN], wire[SIGNATURE_LEN:]
    try:
        VerifyKey(verify_key).verify(DOMAIN + body, signature)
    except (BadSignatureError, NaclValueError, TypeError):
        raise AuthenticationError("settings not signed by this device's console") from None
    try:
        doc = json.loads(body.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DecodeError("signed settings are not JSON", offset=SIGNATURE_LEN) from None
    if not isinstance(doc, dict) or set(doc) != {"d", "s", "v"} or not isinstance(doc["s"], dict):
        raise DecodeError("signed settings have the wrong shape", offset=SIGNATURE_LEN)
    if doc["d"] != device_id.hex():
        raise DecodeError("settings for another device", offset=SIGNATURE_LEN)
    version = doc["v"]
    if type(version) is not int or not current_version < version < 2**53:
        raise DecodeError(f"settings version {version!r} is not above {current_version}",
                          offset=SIGNATURE_LEN)
    problems = validate(doc["s"])
    if problems:
        raise DecodeError("invalid signed settings: " + "; ".join(problems), offset=SIGNATURE_LEN)
    return Settings(device_id, version, doc["s"])


@dataclass(frozen=True)
class Pin:
    """This device's id and the settings key it pinned at pairing, as the agent hands them to
    the applier and the applier keeps them: ``"<id hex> <key hex>\\n"``."""

    device_id: bytes
    key: bytes

    def text(self) -> str:
        return f"{self.device_id.hex()} {self.key.hex()}\n"

    @classmethod
    def parse(cls, data: bytes) -> Pin | None:
        """The pin in ``data``; None for anything else."""
        words = data.decode("ascii", "replace").split()
        try:
            pin = cls(bytes.fromhex(words[0]), bytes.fromhex(words[1]))
        except (IndexError, ValueError):
            return None
        return pin if len(pin.device_id) == DEVICE_ID_LEN and len(pin.key) == 32 else None


def kept(wire: bytes) -> tuple[int, dict[str, Any]]:
    """(version, values) of a settings document verified before (by the device, or signed by
    the console itself); (0, {}) when there is none or it cannot be read."""
    try:
        doc = json.loads(wire[SIGNATURE_LEN:].decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return 0, {}
    if not isinstance(doc, dict) or not isinstance(doc.get("s"), dict):
        return 0, {}
    version = doc.get("v")
    return (version, doc["s"]) if type(version) is int and version > 0 else (0, {})
