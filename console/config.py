"""The console's state directory: configuration (console.toml), private key, database path.

Loaded once at the edge (the CLI) into a frozen dataclass and passed in; validation collects
every problem before raising one ``ConfigError``.  The private key lives in its own file
and is never printed; only its public half is shown to the operator.  Everything in the state
directory is private (directory 0700, files 0600): the key, and the database with cleartext
passwords.
"""

from __future__ import annotations

import base64
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from console.dnswire import MAX_QUERY
from console.health import HealthLimits
from firmware.protocol.keys import OwnPrivateKey, decode_key_text
from firmware.protocol.names import max_frame_bytes
from firmware.shared.atomic import private_dir, write_atomic
from firmware.shared.cli import module_command
from firmware.shared.errors import ConfigError, DecodeError, StorageError, UsageError

CONFIG_FILE = "console.toml"
KEY_FILE = "console.key"
SETTINGS_KEY_FILE = "settings.key"  # Ed25519 seed: signs device settings, nothing else
DB_FILE = "console.db"
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAY_PRECEDE = {"lost+found"}  # a fresh file system mounted as the state directory has one


@dataclass(frozen=True)
class ServerLimits:
    """Safe defaults for what clients can push on the server."""

    tcp_connections: int = 256  # all sources together
    tcp_per_source: int = 8  # one address cannot take every slot
    tcp_idle_timeout: float = 10.0  # since the last byte received
    tcp_lifetime: float = 30.0  # since accept: trickling bytes does not keep a slot forever
    max_query: int = MAX_QUERY  # longest UDP datagram or TCP message read (dnswire.MAX_QUERY)
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
    health: HealthLimits = field(default_factory=HealthLimits)

    @property
    def db_path(self) -> Path:
        return self.state / DB_FILE

    def settings_seed(self) -> bytes:
        """The settings signing key (made on first use: state directories from before it)."""
        path = self.state / SETTINGS_KEY_FILE
        try:
            raw = base64.b64decode(path.read_text().strip(), validate=True)
        except FileNotFoundError:
            raw = secrets.token_bytes(32)
            write_atomic(path, (_b64(raw) + "\n").encode("ascii"), 0o600)
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read {path}: {exc}",
                               hint="restore it from your backup of the state directory; "
                                    "without it, paired devices take no new settings") from None
        if len(raw) != 32:
            raise StorageError(f"{path} does not hold a 32-byte key",
                               hint="restore it from your backup of the state directory")
        return raw


def zone_problems(zone: str) -> list[str]:
    name = zone.strip(".").lower()
    labels = name.split(".")
    problems = [f"zone label {label!r} is not a DNS hostname label"
                for label in labels if not _LABEL.fullmatch(label)]
    if not problems and max_frame_bytes(name) < 64:
        problems.append(f"zone {name!r} is too long to leave room for frames")
    return problems


def init_state(state: Path, zone: str) -> OwnPrivateKey:
    """Create the state directory, a fresh console key and console.toml; refuses to overwrite.

    The directory ends up 0700 and both files 0600 whatever the umask or the directory's old
    mode (console.db, created later by the store, holds the passwords attackers typed).
    """
    problems = zone_problems(zone)
    if problems:
        raise UsageError(f"bad zone {zone!r}", problems=problems,
                         hint="use a zone you delegate to this console, e.g. c.example.com")
    if (state / KEY_FILE).exists() or (state / CONFIG_FILE).exists():
        raise UsageError(f"{state} already holds a console",
                         hint="use another --state directory or remove the old one deliberately")
    _refuse_foreign_directory(state)
    key = OwnPrivateKey.generate()
    name = zone.strip(".").lower()
    private_dir(state)
    write_atomic(state / KEY_FILE, (_b64(key.raw) + "\n").encode("ascii"), 0o600)
    write_atomic(state / SETTINGS_KEY_FILE,
                 (_b64(secrets.token_bytes(32)) + "\n").encode("ascii"), 0o600)
    write_atomic(state / CONFIG_FILE, (
        f'zone = "{name}"\nsoa_mname = "ns.{name}"\nsoa_rname = "hostmaster.{name}"\n'
    ).encode("ascii"), 0o600)
    return key


def _refuse_foreign_directory(state: Path) -> None:
    """``init`` makes its directory 0700: never do that to one that holds other things."""
    try:
        foreign = sorted(p.name for p in state.iterdir() if p.name not in _MAY_PRECEDE)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot read {state}: {exc.strerror}",
                           hint="check the path and its permissions") from None
    if foreign:
        more = " ..." if len(foreign) > 3 else ""
        raise UsageError(f"{state} is not empty ({', '.join(foreign[:3])}{more})",
                         hint="give init a new or empty directory: it makes it private "
                         "(mode 0700)")


def load(state: Path) -> ConsoleConfig:
    """Read and validate console.toml and console.key under ``state``."""
    try:
        raw = (state / CONFIG_FILE).read_text()
        key_text = (state / KEY_FILE).read_text()
    except FileNotFoundError as exc:
        raise UsageError(f"{exc.filename} not found",
                         hint=f"run `{module_command('console')} init --state {state} --zone ZONE` "
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
    unknown = sorted(set(data) - {"zone", "soa_mname", "soa_rname", "health"})
    problems += [f"unknown setting {name!r}" for name in unknown]
    health = _health(data.get("health", {}), problems)
    key: OwnPrivateKey | None = None
    try:
        key = OwnPrivateKey(decode_key_text(key_text))
    except DecodeError as exc:
        problems.append(f"{KEY_FILE}: {exc.message}")
    if problems or key is None:
        raise ConfigError(f"invalid console state in {state}", problems=problems)
    return ConsoleConfig(state, values["zone"], values["soa_mname"], values["soa_rname"], key,
                         health=health)


def _health(table: object, problems: list[str]) -> HealthLimits:
    """The optional [health] table: when the console calls a device offline or stalled."""
    if not isinstance(table, dict):
        problems.append("[health] must be a table")
        return HealthLimits()
    values: dict[str, Any] = {}
    for name in sorted(table):
        default = getattr(HealthLimits, name, None)
        value = table[name]
        if default is None:
            problems.append(f"unknown setting 'health.{name}'")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append(f"health.{name} must be a positive number")
        else:
            values[name] = type(default)(value)
    return HealthLimits(**values)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
