"""The console's state directory: configuration (console.toml), private key, database path.

Loaded once at the edge (the CLI) into a frozen dataclass and passed in; validation collects
every problem before raising one ``ConfigError``.  The private key lives in its own file,
created with mode 0600 and never printed; only its public half is shown to the operator.
"""

from __future__ import annotations

import base64
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.errors import ConfigError, DecodeError, StorageError, UsageError
from firmware.protocol.keys import OwnPrivateKey, decode_key_text
from firmware.protocol.names import max_frame_bytes

CONFIG_FILE = "console.toml"
KEY_FILE = "console.key"
DB_FILE = "console.db"
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class ServerLimits:
    """Safe defaults for what clients can push on the server."""

    tcp_connections: int = 256
    tcp_idle_timeout: float = 10.0
    tcp_max_message: int = 1024  # a query is at most ~300 bytes
    tcp_max_pending_out: int = 262144
    flush_interval: float = 1.0


@dataclass(frozen=True)
class ConsoleConfig:
    state: Path
    zone: str
    soa_mname: str
    soa_rname: str
    private_key: OwnPrivateKey
    limits: ServerLimits = field(default_factory=ServerLimits)

    @property
    def db_path(self) -> Path:
        return self.state / DB_FILE


def zone_problems(zone: str) -> list[str]:
    name = zone.strip(".").lower()
    labels = name.split(".")
    problems = [f"zone label {label!r} is not a DNS hostname label"
                for label in labels if not _LABEL.fullmatch(label)]
    if not problems and max_frame_bytes(name) < 64:
        problems.append(f"zone {name!r} is too long to leave room for frames")
    return problems


def init_state(state: Path, zone: str) -> OwnPrivateKey:
    """Create the state directory, a fresh console key and console.toml; refuses to overwrite."""
    problems = zone_problems(zone)
    if problems:
        raise UsageError(f"bad zone {zone!r}", problems=problems,
                         hint="use a zone you delegate to this console, e.g. c.example.com")
    if (state / KEY_FILE).exists() or (state / CONFIG_FILE).exists():
        raise UsageError(f"{state} already holds a console",
                         hint="use another --state directory or remove the old one deliberately")
    key = OwnPrivateKey.generate()
    name = zone.strip(".").lower()
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(state / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_b64(key.raw) + "\n")
        (state / CONFIG_FILE).write_text(
            f'zone = "{name}"\nsoa_mname = "ns.{name}"\nsoa_rname = "hostmaster.{name}"\n'
        )
    except OSError as exc:
        raise StorageError(f"cannot write {state}: {exc.strerror}",
                           hint="check the path and its permissions") from None
    return key


def load(state: Path) -> ConsoleConfig:
    """Read and validate console.toml and console.key under ``state``."""
    try:
        raw = (state / CONFIG_FILE).read_text()
        key_text = (state / KEY_FILE).read_text()
    except FileNotFoundError as exc:
        raise UsageError(f"{exc.filename} not found",
                         hint=f"run `python3 -m console init --state {state} --zone ZONE` "
                         "first") from None
    except OSError as exc:
        raise StorageError(f"cannot read {state}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{state / CONFIG_FILE} is not TOML: {exc}") from None
    return _validate(state, data, key_text)


def _validate(state: Path, data: dict[str, Any], key_text: str) -> ConsoleConfig:
    problems: list[str] = []
    values: dict[str, str] = {}
    for name in ("zone", "soa_mname", "soa_rname"):
        value = data.get(name)
        if not isinstance(value, str):
            problems.append(f"{name} must be a string")
        else:
            values[name] = value.strip(".").lower()
            problems += [f"{name}: {p}" for p in zone_problems(value)] if name == "zone" else []
    unknown = sorted(set(data) - {"zone", "soa_mname", "soa_rname"})
    problems += [f"unknown setting {name!r}" for name in unknown]
    key: OwnPrivateKey | None = None
    try:
        key = OwnPrivateKey(decode_key_text(key_text))
    except DecodeError as exc:
        problems.append(f"{KEY_FILE}: {exc.message}")
    if problems or key is None:
        raise ConfigError(f"invalid console state in {state}", problems=problems)
    return ConsoleConfig(state, values["zone"], values["soa_mname"], values["soa_rname"], key)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
