"""Signed settings into effect: at boot from what was applied before, in config mode from what
the agent fetched; a change that cuts the device off from its console is rolled back.

The applier never trusts the agent's hand-off: it verifies the document again under the
settings key pinned at pairing, for this device, newer than what is in effect.  In config mode
(the only time this unit runs beyond boot, and the only time the data partition's
``settings/`` directory is writable to anything) it applies a new version, and when the network
changed it waits for the agent's next answered heartbeat over the new network; without one
within ``rollback_after`` seconds it goes back to the settings before.  Only an applied version
is kept (``applied.signed`` and the pin, on the data partition); each outcome is an event at
the console (SETTINGS_APPLIED, SETTINGS_NOT_APPLIED with the reason).
"""

from __future__ import annotations

import logging
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.applier.plan import Plan, plan
from firmware.applier.system import System, write_plan
from firmware.config import DeviceConfig, parse
from firmware.eventpath import FlushingSink
from firmware.protocol import settings as signed
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import CoalmineError, ConfigError, InputError
from firmware.shared.readfile import read_bounded

log = logging.getLogger("coalmine.applier")
PIN_FILE = "pin"
PIN_BYTES = 200
ROLLBACK_AFTER = 120.0  # seconds for the console to answer over a changed network
POLL = 1.0
SETTLE = 5.0  # seconds after networkd's reload before a heartbeat proves the new network


def read_pin(path: Path) -> signed.Pin | None:
    return signed.Pin.parse(read_bounded(path, PIN_BYTES))


@dataclass
class Applier:
    EMITS = frozenset({EventCode.SETTINGS_APPLIED, EventCode.SETTINGS_NOT_APPLIED})
    cfg: DeviceConfig
    system: System
    sink: FlushingSink
    runtime_root: Path = Path("/run/systemd")
    hostname_file: Path = Path("/etc/hostname")
    rollback_after: float = ROLLBACK_AFTER
    settle: float = SETTLE
    clock: Callable[[], float] = time.time  # event times
    monotonic: Callable[[], float] = time.monotonic  # the agent's contact file's clock
    stop: threading.Event = field(default_factory=threading.Event)
    version: int = 0  # in effect
    values: Mapping[str, Any] = field(default_factory=dict)
    device_id: bytes = b""  # whose settings they are (a personality's MAC address comes from it)
    tried: set[int] = field(default_factory=set)  # versions refused or rolled back this session

    # -- what is in effect ------------------------------------------------------------------

    def load(self) -> str:
        """Read and verify the applied settings; the reason when they cannot be used."""
        wire = read_bounded(self.cfg.applied_settings, signed.WIRE_MAX + 1)
        self.version, self.values, self.device_id = 0, {}, b""
        if not wire:
            return ""
        pin = read_pin(self.cfg.settings_dir / PIN_FILE)
        if pin is None:
            return "the applied settings have no pinned key beside them"
        try:
            got = signed.verify(pin.key, wire, pin.device_id, 0)
        except InputError as exc:
            return f"the applied settings do not verify: {exc.message}"
        self.version, self.values, self.device_id = got.version, dict(got.values), got.device_id
        return ""

    def boot(self) -> Plan:
        """Put the applied settings in effect at boot (before the units they change start).
        Settings that do not verify are not used, and the reason is left for the agent."""
        refused = self.cfg.apply_dir / "boot-refused"
        reason = self.load()
        if reason:
            log.error("settings not used: %s; running on the image's and coalmine.toml's", reason)
            write_atomic(refused, reason.encode(), 0o644, dir_mode=0o755)
        else:
            refused.unlink(missing_ok=True)
        new = plan(self.values, self.device_id)
        self._switch(Plan(), new, running=False)
        self._publish(self.version)
        if self.version:
            log.info("settings version %d in effect", self.version)
        return new

    # -- config mode ------------------------------------------------------------------------

    def serve(self) -> None:
        """Apply what the agent fetches until config mode ends (its marker is removed)."""
        self.load()
        (self.cfg.apply_dir / "applying").unlink(missing_ok=True)  # an applier killed mid-way
        while not self.stop.is_set() and self.cfg.config_marker.exists():
            self.poll()
            self.sink.flush()  # what waited for the agent
            self.stop.wait(POLL)
        log.info("config mode over: settings version %d in effect", self.version)

    def poll(self) -> None:
        wire = read_bounded(self.cfg.fetched_settings, signed.WIRE_MAX + 1)
        version = signed.kept(wire)[0] if wire else 0
        if version <= self.version or version in self.tried:
            return
        self.tried.add(version)
        try:
            self.apply(wire, version)
        except CoalmineError as exc:
            self._not_applied(version, f"failed: {exc.message}")
        except Exception as exc:  # a bug of ours costs this version, never the applier
            log.exception("applying settings version %d failed", version)
            self._not_applied(version, f"applier error: {type(exc).__name__}")

    def apply(self, wire: bytes, version: int) -> bool:
        pin = read_pin(self.cfg.settings_pin)
        try:
            if pin is None:
                raise InputError("the agent has pinned no settings key (not paired?)")
            got = signed.verify(pin.key, wire, pin.device_id, self.version)
        except InputError as exc:
            return self._not_applied(version, f"refused: {exc.message}")
        old, new = plan(self.values, self.device_id), plan(got.values, got.device_id)
        try:  # what every service will read: it must load, or the device would go dark
            parse(tomllib.loads(new.layer))
        except (ConfigError, tomllib.TOMLDecodeError) as exc:
            return self._not_applied(version, f"refused: the services could not read them: "
                                     f"{exc}")
        applying = self.cfg.apply_dir / "applying"
        write_atomic(applying, b"", 0o644, dir_mode=0o755)
        try:
            try:
                changed = self._switch(old, new)
                if any(p.startswith("network/") for p in changed):
                    self._await_contact()
                self._keep(pin, wire, got.version)
            except CoalmineError as exc:
                log.error("settings version %d failed (%s): going back", version, exc.message)
                try:
                    self._switch(new, old)
                except CoalmineError as again:  # the next boot starts on the old files
                    return self._not_applied(version, f"failed: {exc.message}; going back "
                                             f"failed too ({again.message}): restart the device")
                return self._not_applied(version, f"rolled back: {exc.message}")
        finally:
            applying.unlink(missing_ok=True)
        keys = sorted(k for k in {*self.values, *got.values}
                      if self.values.get(k) != got.values.get(k))
        self.version, self.values, self.device_id = got.version, dict(got.values), got.device_id
        log.warning("settings version %d applied: %s", version, " ".join(keys) or "no change")
        self.sink.emit(Event(EventCode.SETTINGS_APPLIED, self.clock(), data={
            "VERSION": version, "CHANGED": " ".join(keys)}))
        return True

    def _keep(self, pin: signed.Pin, wire: bytes, version: int) -> None:
        """What is in effect now, on the data partition (the pin first: the document is only
        used with a pin beside it) and for the agent's heartbeats."""
        write_atomic(self.cfg.settings_dir / PIN_FILE, pin.text().encode(), 0o644,
                     dir_mode=0o755)
        write_atomic(self.cfg.applied_settings, wire, 0o644, dir_mode=0o755)
        self._publish(version)

    def _publish(self, version: int) -> None:
        write_atomic(self.cfg.settings_in_effect, f"{version}\n".encode(), 0o644, dir_mode=0o755)

    def _not_applied(self, version: int, reason: str) -> bool:
        log.error("settings version %d not applied: %s", version, reason)
        self.sink.emit(Event(EventCode.SETTINGS_NOT_APPLIED, self.clock(), data={
            "VERSION": version, "REASON": reason[:300]}))
        return False

    def _await_contact(self) -> None:
        """Return once the console answered a heartbeat the agent sent over the new network
        (sent ``settle`` seconds after networkd was told, on the monotonic clock: the device may
        have no real-time clock); raise the reason to go back otherwise."""
        since = self.monotonic() + self.settle
        while self.monotonic() - since < self.rollback_after:
            if self.stop.is_set():
                raise InputError("the applier was stopped while it waited for the console")
            raw = read_bounded(self.cfg.contact_file, 32).decode("ascii", "replace").strip()
            try:
                if float(raw) > since:
                    return
            except ValueError:
                pass
            self.stop.wait(min(POLL, self.rollback_after / 10))
        raise InputError(f"the console did not answer within {self.rollback_after:.0f} s over "
                         "the new network")

    def _switch(self, old: Plan, new: Plan, *, running: bool = True) -> set[str]:
        """Go from ``old`` to ``new``: write the files, then tell only the units whose files
        changed.  At boot (not ``running``) the units have not started yet: they start on the
        new files, systemd only has to read its own again, and the honeypots the settings
        enable have their sockets started.  Returns the changed paths."""
        write_plan(self.runtime_root, self.cfg.settings_layer, new)
        changed = new.changed(old)
        restart = new.restart(old)
        if any(p.startswith("system/") for p in changed):
            self.system.daemon_reload()
        if running and new.ssh_restart(old):
            self.system.restart_ssh(new.ssh_enabled)
        for name in sorted(restart):
            self.system.restart_listener(name, name in new.services, boot=not running)
        if running and any(p.startswith("network/") for p in changed):
            self.system.reload_network()
        if new.hostname != old.hostname:
            self.system.set_hostname(new.hostname or self._default_hostname())
        if new.ttl != old.ttl:
            self.system.set_ttl(new.ttl)
        return changed

    def _default_hostname(self) -> str:
        name = read_bounded(self.hostname_file, 64).decode("ascii", "replace").strip()
        return name or "localhost"
