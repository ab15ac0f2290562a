"""Device configuration: typed, frozen, loaded once at the edge and passed in.

Files are TOML (``tomllib`` is in the standard library of both the host's Python 3.11 and the
image's 3.13).  Several files may be layered, later ones overriding earlier ones key by key: the
image ships defaults in /etc/coalmine/device.toml, the device's own settings live on the data
partition.  Validation collects every problem before raising one ``ConfigError``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.protocol.keys import PeerPublicKey
from firmware.protocol.settings import HTTP_SKINS
from firmware.shared.errors import ConfigError, DecodeError

DEFAULT_PATH = Path("/etc/coalmine/device.toml")


@dataclass(frozen=True)
class Limits:
    """Safe defaults for everything an attacker or an outage can push on."""

    queue_max_events: int = 10_000
    event_datagram_bytes: int = 8192
    connection_bytes: int = 65536
    connection_timeout: float = 30.0
    connections_per_source: int = 16  # an IPv4 address or an IPv6 /64
    connections_total: int = 256
    idle_exit: float = 300.0  # a socket-activated honeypot with nobody connected exits after this
    flood_burst: int = 5  # events of one source, code and port sent as they are per window
    flood_window: float = 60.0  # seconds; then the rest of the window is sent as one count
    flood_sources: int = 1024  # groups tracked at once (a full table reports counts early)
    memory_report: float = 3600.0  # seconds between memory reports (1115); OOM kills at once


@dataclass(frozen=True)
class ConsoleLink:
    zone: str
    public_key: PeerPublicKey | None
    resolver: tuple[str, int] | None  # None = the system resolver
    heartbeat_interval: float = 60.0
    query_timeout: float = 2.0
    max_backoff: float = 60.0
    # The device's key was enrolled at the console by hand (`console enroll`: labs and tests),
    # so the agent sends at once; otherwise it pairs first, in config mode (docs/pairing.md).
    enrolled: bool = False


BUTTON_BACKENDS = ("gpiod", "rpi-gpio", "none")
LED_BACKENDS = ("sysfs", "record", "none")


@dataclass(frozen=True)
class Button:
    """The config-mode button and the status LED (board files set chip, line and LED)."""

    backend: str = "gpiod"  # gpiod: the kernel's GPIO character device; rpi-gpio: RPi.GPIO
    chip: str = "/dev/gpiochip0"
    line: int = 3
    active_low: bool = False  # True: pressed pulls the line low (button to ground, pull-up)
    debounce: float = 0.05  # seconds a level must hold before it counts
    long_press: float = 3.0  # seconds held: enter config mode
    config_timeout: float = 900.0  # seconds in config mode before it ends by itself
    led: str = "none"  # sysfs: /sys/class/leds/<led_name>; record: the pattern to a file
    led_name: str = "ACT"


@dataclass(frozen=True)
class SSHService:
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 22
    host_key: Path = Path("/data/coalmine/ssh/host_key")
    version: str = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"


@dataclass(frozen=True)
class Listener:
    """A honeypot service that needs only where to listen and what to say first: FTP, HTTP,
    Telnet, Redis, MySQL, VNC, HTTPS and RDP (these two with a certificate).  Off unless the
    device's settings turn it on (a personality chooses)."""

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = 1
    banner: str = ""  # the greeting or version the service shows (its own default if empty)
    prompt: str = ""  # Telnet: the login prompt (empty: "login: ")
    skin: str = "nas"  # HTTP and HTTPS: which login page (HTTP_SKINS)
    # HTTPS and RDP: the certificate's subject as (attribute, value) pairs (empty: the skin's
    # default, for RDP the host name), and the one PEM file with its key and certificate, made
    # by --make-host-key (CERTIFICATES: where, by default)
    cert_subject: tuple[tuple[str, str], ...] = ()
    certificate: Path = Path("/data/coalmine/https/tls.pem")


# Each listener-only service and its well-known port (the port its .socket unit holds).
LISTENER_PORTS = {"ftp": 21, "http": 80, "https": 443, "telnet": 23, "redis": 6379,
                  "mysql": 3306, "vnc": 5900, "rdp": 3389}
# Where each TLS honeypot's certificate is by default (its own directory, made by tmpfiles.d)
CERTIFICATES = {"https": Path("/data/coalmine/https/tls.pem"),
                "rdp": Path("/data/coalmine/rdp/tls.pem")}
# What a certificate subject may name (``cert_subject = "CN=nas01,O=Synology Inc.,C=TW"``)
SUBJECT_ATTRIBUTES = ("CN", "O", "OU", "L", "ST", "C")


@dataclass(frozen=True)
class PortScan:
    """The port-scan detector (firmware/services/portscan.py): it reads the packets sent to the
    device, so it needs no port, only which interfaces to watch.  Off unless enabled."""

    enabled: bool = False
    interfaces: tuple[str, ...] = ()  # empty: every interface
    window: float = 60.0  # seconds a scan window lasts (per source and kind of probe)
    max_sources: int = 1024  # sources tracked at once; more go to one catch-all bucket


@dataclass(frozen=True)
class SMBService:
    """The Windows file share (firmware/services/smb.py).  It opens to the honey credential
    (its NT hash, never the password, is all the device keeps: enough to check an NTLMv2
    response and sign the session) and to guest or anonymous where a client allows it."""

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = 445
    server_name: str = "FS01"  # NetBIOS name (15 characters at most)
    domain: str = "WORKGROUP"  # NetBIOS workgroup or domain
    dns_domain: str = ""  # e.g. corp.example.com; empty: a workgroup server
    share: str = "Documents"
    honey_user: str = ""  # empty: no credential opens the share, only guest and anonymous
    honey_nt_hash: str = ""  # 32 hex digits: MD4 of the password's UTF-16LE
    guest: bool = True  # guest and anonymous sessions may list and read the share


@dataclass(frozen=True)
class DeviceConfig:
    data_dir: Path
    run_dir: Path
    node_name: str
    console: ConsoleLink
    ssh: SSHService
    limits: Limits
    button: Button = Button()
    listeners: dict[str, Listener] = field(default_factory=dict)  # by service name
    portscan: PortScan = PortScan()
    smb: SMBService = SMBService()
    settings_dir: Path = Path("/data/coalmine/settings")  # DEFAULT_SETTINGS_DIR

    def event_socket(self, service: str) -> Path:
        """Where ``service`` hands its events to the agent (one socket per service)."""
        return self.run_dir / service / "events.sock"

    # Run-time state the device's daemons share (docs/button.md, docs/pairing.md)
    @property
    def mode_file(self) -> Path:
        """The button daemon's word on the mode: "config" or "production" (its own directory)."""
        return self.run_dir / "state" / "mode"

    @property
    def pairing_file(self) -> Path:
        """The agent's word on pairing, for the status LED: "pending CODE", "paired", "error …"."""
        return self.run_dir / "agent" / "pairing"

    @property
    def config_marker(self) -> Path:
        """Exists exactly while the device is in config mode (starts coalmine-config.target)."""
        return self.run_dir / "state" / "config"

    @property
    def fresh_card_file(self) -> Path:
        """Exists on the boot whose first-boot step formatted the data partition (no key yet)."""
        return self.run_dir / "fresh-card"

    # Signed settings (docs/pairing.md, "Applying settings")
    @property
    def applied_settings(self) -> Path:
        """The signed settings in effect, written only by the applier, in config mode."""
        return self.settings_dir / "applied.signed"


    @property
    def fetched_settings(self) -> Path:
        """The agent's hand-off: the newest settings it fetched and verified in config mode."""
        return self.run_dir / "agent" / "settings.signed"

    @property
    def settings_pin(self) -> Path:
        """The agent's hand-off: this device's id and the settings key it pinned at pairing."""
        return self.run_dir / "agent" / "settings.pin"

    @property
    def contact_file(self) -> Path:
        """When (monotonic clock) the agent sent the last heartbeat the console answered: the
        applier's rollback check."""
        return self.run_dir / "agent" / "contact"

    @property
    def last_exit(self) -> Path:
        """How the agent's previous run ended, written by its unit's ``ExecStopPost=``
        (``$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS``) and reported at the next start."""
        return self.run_dir / "agent" / "last-exit"

    @property
    def apply_dir(self) -> Path:
        """The applier's run-time state: ``applying`` while it works, ``boot-refused``."""
        return self.run_dir / "apply"

    @property
    def settings_in_effect(self) -> Path:
        """The version the applier verified and put in effect ("0": none), for heartbeats."""
        return self.apply_dir / "in-effect"

    @property
    def settings_layer(self) -> Path:
        """The applied settings as the last device.toml layer the services read (written each
        boot and on each apply: /run, never the data partition)."""
        return self.apply_dir / "settings.toml"


DEFAULT_DATA_DIR = Path("/data/coalmine/agent")
DEFAULT_RUN_DIR = Path("/run/coalmine")
DEFAULT_NODE_NAME = "device"
DEFAULT_SETTINGS_DIR = Path("/data/coalmine/settings")


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base`` (tables merge, values replace)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(paths: Sequence[Path]) -> DeviceConfig:
    """Read and layer ``paths`` (missing later files are fine, a missing first file is not)."""
    raw: dict[str, Any] = {}
    for i, path in enumerate(paths):
        try:
            with path.open("rb") as fh:
                raw = merge(raw, tomllib.load(fh))
        except FileNotFoundError:
            if i == 0:
                raise ConfigError(f"configuration file {path} not found",
                                  hint="pass --config with the device.toml to use") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        return parse(raw)
    except ConfigError as exc:  # say where each bad value is written
        raise ConfigError("invalid device configuration",
                          problems=[_located(paths, problem) for problem in exc.problems],
                          hint=exc.hint) from None


def _located(paths: Sequence[Path], problem: str) -> str:
    """``problem`` ("console.zone: ...") prefixed with the file and line that set the key
    (the last file that sets it wins, as in ``merge``)."""
    dotted = problem.split(":", 1)[0]
    if " " in dotted or "." not in dotted:
        return problem
    table, _, key = dotted.rpartition(".")
    found = ""
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        current = ""
        for no, line in enumerate(lines, 1):
            text = line.strip()
            if text.startswith("[") and text.endswith("]"):
                current = text.strip("[]").strip()
            elif current == table and text.split("=", 1)[0].strip() == key:
                found = f"{path}:{no}: "
    return found + problem


def parse(raw: dict[str, Any]) -> DeviceConfig:
    """Validate a merged TOML document; every problem is reported at once."""
    p = _Problems()
    dev, con, ssh, lim = (p.table(raw, k) for k in ("device", "console", "services.ssh", "limits"))
    key_text = p.get(con, "console.public_key", str, "")
    public_key = None
    if key_text:
        try:
            public_key = PeerPublicKey.from_text(key_text)
        except DecodeError as exc:
            p.add(f"console.public_key: {exc.message}")
    zone = p.get(con, "console.zone", str, "").strip(".").lower()
    if zone and (len(zone) > 100 or any(not 0 < len(x) <= 63 for x in zone.split("."))):
        p.add("console.zone: not a valid DNS name of at most 100 characters")
    cfg_limits = Limits(**{
        name: p.get(lim, f"limits.{name}", type(default), default, positive=True)
        for name, default in vars(Limits()).items()
    })
    cfg = DeviceConfig(
        data_dir=Path(p.get(dev, "device.data_dir", str, str(DEFAULT_DATA_DIR))),
        run_dir=Path(p.get(dev, "device.run_dir", str, str(DEFAULT_RUN_DIR))),
        node_name=p.get(dev, "device.node_name", str, DEFAULT_NODE_NAME),
        settings_dir=Path(p.get(dev, "device.settings_dir", str, str(DEFAULT_SETTINGS_DIR))),
        console=ConsoleLink(
            zone=zone, public_key=public_key,
            resolver=_address(p, p.get(con, "console.resolver", str, "")),
            **{name: p.get(con, f"console.{name}", float, getattr(ConsoleLink, name),
                           positive=True)
               for name in ("heartbeat_interval", "query_timeout", "max_backoff")},
            enrolled=p.get(con, "console.enrolled", bool, ConsoleLink.enrolled),
        ),
        button=_button(p, p.table(raw, "button")),
        ssh=SSHService(
            enabled=p.get(ssh, "services.ssh.enabled", bool, SSHService.enabled),
            host=p.get(ssh, "services.ssh.host", str, SSHService.host),
            port=p.port(ssh, "services.ssh.port", SSHService.port),
            host_key=Path(p.get(ssh, "services.ssh.host_key", str, str(SSHService.host_key))),
            version=p.get(ssh, "services.ssh.version", str, SSHService.version),
        ),
        listeners={name: _listener(p, p.table(raw, f"services.{name}"), name, port)
                   for name, port in LISTENER_PORTS.items()},
        portscan=_portscan(p, p.table(raw, "services.portscan")),
        smb=_smb(p, p.table(raw, "services.smb")),
        limits=cfg_limits,
    )
    _one_service_per_port(p, cfg)
    p.raise_if_any()
    return cfg


def _one_service_per_port(p: _Problems, cfg: DeviceConfig) -> None:
    """Two enabled services on one port: the second socket could not bind, and that service
    would be silently missing from a device that looks healthy."""
    ports = [("ssh", cfg.ssh.port, cfg.ssh.enabled), ("smb", cfg.smb.port, cfg.smb.enabled),
             *((name, ls.port, ls.enabled) for name, ls in cfg.listeners.items())]
    seen: dict[int, str] = {}
    for name, port, enabled in sorted(ports):
        if enabled and port in seen:
            p.add(f"services.{seen[port]}.port and services.{name}.port: both {port}; "
                  "give each enabled service a port of its own")
        elif enabled:
            seen[port] = name


def _button(p: _Problems, table: dict[str, Any]) -> Button:
    d = Button()
    button = Button(
        backend=p.get(table, "button.backend", str, d.backend),
        chip=p.get(table, "button.chip", str, d.chip),
        line=p.get(table, "button.line", int, d.line),
        active_low=p.get(table, "button.active_low", bool, d.active_low),
        led=p.get(table, "button.led", str, d.led),
        led_name=p.get(table, "button.led_name", str, d.led_name),
        **{name: p.get(table, f"button.{name}", float, getattr(d, name), positive=True)
           for name in ("debounce", "long_press", "config_timeout")},
    )
    if button.backend not in BUTTON_BACKENDS:
        p.add(f"button.backend: {button.backend!r} is not one of {', '.join(BUTTON_BACKENDS)}")
    if button.led not in LED_BACKENDS:
        p.add(f"button.led: {button.led!r} is not one of {', '.join(LED_BACKENDS)}")
    if not 0 <= button.line < 1024:
        p.add(f"button.line: {button.line} is not a GPIO line offset")
    if "/" in button.led_name or button.led_name in ("", ".", ".."):
        p.add(f"button.led_name: {button.led_name!r} is not an LED name")
    if button.debounce >= button.long_press:
        p.add("button.debounce: must be shorter than button.long_press")
    return button


def _listener(p: _Problems, table: dict[str, Any], name: str, port: int) -> Listener:
    where = f"services.{name}"
    listener = Listener(enabled=p.get(table, f"{where}.enabled", bool, Listener.enabled),
                        host=p.get(table, f"{where}.host", str, Listener.host),
                        port=p.port(table, f"{where}.port", port),
                        banner=p.get(table, f"{where}.banner", str, Listener.banner),
                        prompt=p.get(table, f"{where}.prompt", str, Listener.prompt),
                        skin=p.get(table, f"{where}.skin", str, Listener.skin),
                        cert_subject=_subject(p, where, p.get(table, f"{where}.cert_subject",
                                                              str, "")),
                        certificate=Path(p.get(table, f"{where}.certificate", str,
                                               str(CERTIFICATES.get(name,
                                                                    Listener.certificate)))))
    if listener.skin not in HTTP_SKINS:
        p.add(f"{where}.skin: {listener.skin!r} is not one of {', '.join(HTTP_SKINS)}")
    lines = "\r\x00" if name == "telnet" else "\r\n\x00"  # Telnet's may have lines (LF)
    if any(c in listener.banner for c in lines) or len(listener.banner) > 512:
        p.add(f"{where}.banner: must be {'' if name == 'telnet' else 'one line, '}at most 512 "
              "characters, no CR or NUL")
    if any(c in listener.prompt for c in "\r\n\x00") or len(listener.prompt) > 64:
        p.add(f"{where}.prompt: must be one line of at most 64 characters")
    return listener


def _subject(p: _Problems, where: str, text: str) -> tuple[tuple[str, str], ...]:
    """``CN=nas01,O=Synology Inc.`` as pairs (``\\,`` is a comma inside a value)."""
    if not text:
        return ()
    pairs: list[tuple[str, str]] = []
    for part in (x.replace("\x00", ",") for x in text.replace("\\,", "\x00").split(",")):
        key, sep, value = part.partition("=")
        key, value = key.strip().upper(), value.strip()
        if not sep or key not in SUBJECT_ATTRIBUTES:
            p.add(f"{where}.cert_subject: {part.strip()!r} is not ATTRIBUTE=VALUE with an "
                  f"attribute of {', '.join(SUBJECT_ATTRIBUTES)}")
        elif not 0 < len(value) <= 64 or not value.isprintable():
            p.add(f"{where}.cert_subject: {key} must be 1-64 printable characters")
        elif key == "C" and not (len(value) == 2 and value.isascii() and value.isalpha()):
            p.add(f"{where}.cert_subject: C must be a two-letter country code, not {value!r}")
        else:
            pairs.append((key, value.upper() if key == "C" else value))
    if len(pairs) > 8:
        p.add(f"{where}.cert_subject: at most 8 attributes")
    return tuple(pairs)


def _smb(p: _Problems, table: dict[str, Any]) -> SMBService:
    d = SMBService()
    smb = SMBService(
        enabled=p.get(table, "services.smb.enabled", bool, d.enabled),
        host=p.get(table, "services.smb.host", str, d.host),
        port=p.port(table, "services.smb.port", d.port),
        guest=p.get(table, "services.smb.guest", bool, d.guest),
        **{name: p.get(table, f"services.smb.{name}", str, getattr(d, name))
           for name in ("server_name", "domain", "dns_domain", "share", "honey_user",
                        "honey_nt_hash")},
    )
    for name in ("server_name", "domain", "share"):
        value = getattr(smb, name)
        if not 0 < len(value) <= 15 or not all(c.isalnum() or c in "-_$" for c in value):
            p.add(f"services.smb.{name}: {value!r} is not 1-15 letters, digits, - or _")
    if smb.dns_domain and not all(0 < len(x) <= 63 and x.replace("-", "").isalnum()
                                  for x in smb.dns_domain.split(".")):
        p.add(f"services.smb.dns_domain: {smb.dns_domain!r} is not a DNS name")
    if smb.honey_nt_hash and (len(smb.honey_nt_hash) != 32
                              or not all(c in "0123456789abcdefABCDEF" for c in smb.honey_nt_hash)):
        p.add("services.smb.honey_nt_hash: not 32 hex digits (the NT hash: MD4 of the "
              "password in UTF-16LE)")
    if bool(smb.honey_user) != bool(smb.honey_nt_hash):
        p.add("services.smb: honey_user and honey_nt_hash go together")
    if len(smb.honey_user) > 64 or any(c in smb.honey_user for c in "\\/@\x00"):
        p.add("services.smb.honey_user: a plain user name of at most 64 characters")
    return smb


def _portscan(p: _Problems, table: dict[str, Any]) -> PortScan:
    d = PortScan()
    names = p.get(table, "services.portscan.interfaces", list, [])
    if not all(isinstance(n, str) and 0 < len(n) < 16 and "/" not in n and n.isprintable()
               for n in names):
        p.add("services.portscan.interfaces: a list of interface names (at most 15 characters)")
        names = []
    return PortScan(
        enabled=p.get(table, "services.portscan.enabled", bool, d.enabled),
        interfaces=tuple(names),
        window=p.get(table, "services.portscan.window", float, d.window, positive=True),
        max_sources=p.get(table, "services.portscan.max_sources", int, d.max_sources,
                          positive=True))


def _address(p: _Problems, text: str) -> tuple[str, int] | None:
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        p.add(f"console.resolver: {text!r} is not HOST:PORT")
        return None
    return host, int(port)


class _Problems:
    """Collects validation problems so the operator sees all of them in one go."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)

    def table(self, raw: dict[str, Any], dotted: str) -> dict[str, Any]:
        node: Any = raw
        for part in dotted.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            self.add(f"[{dotted}] must be a table")
            return {}
        return node

    def get(self, table: dict[str, Any], dotted: str, kind: type[Any], default: Any,
            *, positive: bool = False) -> Any:
        value = table.get(dotted.rsplit(".", 1)[-1], default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.add(f"{dotted}: expected {kind.__name__}, got {value!r}")
            return default
        if kind is float and not math.isfinite(value):  # TOML has nan and inf
            self.add(f"{dotted}: {value} is not a finite number")
            return default
        if positive and value <= 0:
            self.add(f"{dotted}: must be positive")
            return default
        return value

    def port(self, table: dict[str, Any], dotted: str, default: int) -> int:
        value: int = self.get(table, dotted, int, default)
        if not 0 < value < 65536:
            self.add(f"{dotted}: {value} is not a port number")
            return default
        return value

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError("invalid device configuration", problems=self.items,
                              hint="fix the values above in device.toml")
