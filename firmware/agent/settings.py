"""Signed settings from the console: fetched only in config mode, verified before anything uses
them (docs/pairing.md, "Settings").

Once per config-mode session a paired device asks its console for its newest settings, a few
dozen bytes per answer (``SETTINGS_GET`` / ``SETTINGS_PART``), and verifies the whole document
under the settings key it pinned when it was paired: its own device id, a version above the one
in effect, only settings that exist.  What verifies is handed to the settings applier (a unit of
its own, root, that verifies it again: ``<run_dir>/agent/settings.signed`` with the pin beside
it); what does not is refused and reported.  In production the agent never asks: when the
console's heartbeat acknowledgement says newer settings wait, it reports that it refused them
and why, once per stretch in production.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from firmware.agent.beacon import Beacon
from firmware.agent.pairing import Pairer
from firmware.config import DeviceConfig
from firmware.protocol import settings as signed
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.protocol.messages import SettingsGet, SettingsPart
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import InputError, StorageError, TransportError
from firmware.shared.readfile import read_bounded

log = logging.getLogger("coalmine.agent")
PRODUCTION_REFUSAL = ("the console has newer settings; in production the device takes none "
                      "(hold the config button for 3 s, then they are fetched and applied)")


class SettingsFetcher:
    EMITS = frozenset({EventCode.SETTINGS_RECEIVED, EventCode.SETTINGS_REFUSED})

    def __init__(self, cfg: DeviceConfig, pairer: Pairer, put_own: Callable[[Event], None]
                 ) -> None:
        self.cfg = cfg
        self.path = cfg.fetched_settings
        self.pairer = pairer
        self.put_own = put_own
        self.done = False  # asked in this config-mode session
        self.refused_in_production = False  # reported in this stretch in production

    def in_effect(self) -> int:
        """The version the applier verified and put in effect (0: none): heartbeats name it."""
        raw = read_bounded(self.cfg.settings_in_effect, 24).strip()
        return int(raw) if raw.isdigit() and len(raw) < 16 else 0

    def held(self) -> int:
        """The newest version in effect or handed to the applier."""
        return max(self.in_effect(), signed.kept(read_bounded(self.path, signed.WIRE_MAX))[0])

    def on_pending(self) -> None:
        """The console says newer settings wait: fetch them again in config mode, refuse them
        (reported once per stretch in production) otherwise."""
        if self.pairer.config:
            self.done = False
            return
        if self.refused_in_production:
            return
        self.refused_in_production = True
        log.warning("%s", PRODUCTION_REFUSAL)
        self.put_own(Event(EventCode.SETTINGS_REFUSED, time.time(), data={
            "VERSION": self.in_effect(), "REASON": PRODUCTION_REFUSAL}))

    def report_boot_refusal(self) -> None:
        """Settings the applier could not use at boot (a damaged or altered data partition)."""
        reason = read_bounded(self.cfg.apply_dir / "boot-refused", 300)
        if reason:
            self.put_own(Event(EventCode.SETTINGS_REFUSED, time.time(), data={
                "VERSION": 0, "REASON": "at boot: " + reason.decode("utf-8", "replace")}))

    def busy(self) -> bool:
        """Whether to ask now: paired, in config mode, a settings key pinned, not asked yet."""
        if not self.pairer.config:
            self.done = False
            return False
        self.refused_in_production = False
        return self.pairer.paired and bool(self.pairer.settings_key) and not self.done

    def step(self) -> float:
        beacon = self.pairer.beacon
        first = _part(beacon, 0)
        held = self.held()
        if first.version <= held:
            self.done = True
            return 0.0
        wire = bytearray(first.chunk)
        while len(wire) < first.total:
            part = _part(beacon, len(wire))
            if (part.version, part.total, part.offset) != (first.version, first.total,
                                                           len(wire)) or not part.chunk:
                raise TransportError("the settings changed while they were fetched")
            wire += part.chunk
        self.done = True
        try:
            got = signed.verify(self.pairer.settings_key, bytes(wire), beacon.device_id, held)
        except InputError as exc:
            log.error("settings version %d from the console refused: %s", first.version,
                      exc.message)
            self.put_own(Event(EventCode.SETTINGS_REFUSED, time.time(), data={
                "VERSION": first.version, "REASON": exc.message}))
            return 0.0
        try:  # the pin first: the applier takes the document only with a pin beside it
            pin = signed.Pin(beacon.device_id, self.pairer.settings_key).text()
            write_atomic(self.cfg.settings_pin, pin.encode(), 0o644, dir_mode=0o755)
            write_atomic(self.path, bytes(wire), 0o644, dir_mode=0o755)
        except StorageError as exc:  # the console hears why nothing will be applied
            log.error("%s (%s)", exc.message, exc.hint)
            self.put_own(Event(EventCode.SETTINGS_REFUSED, time.time(), data={
                "VERSION": got.version, "REASON": f"cannot hand over: {exc.message}"}))
            return 0.0
        log.warning("settings version %d received and verified", got.version)
        self.put_own(Event(EventCode.SETTINGS_RECEIVED, time.time(),
                           data={"VERSION": got.version}))
        return 0.0


def _part(beacon: Beacon, offset: int) -> SettingsPart:
    reply = beacon.exchange(SettingsGet(offset))
    if not isinstance(reply, SettingsPart):
        raise TransportError("console answered a settings request with the wrong reply type")
    return reply
