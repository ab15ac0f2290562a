"""Signed settings from the console: fetched only in config mode, verified before anything uses
them (docs/pairing.md, "Settings").

Once per config-mode session a paired device asks its console for its newest settings, a few
dozen bytes per answer (``SETTINGS_GET`` / ``SETTINGS_PART``), and verifies the whole document
under the settings key it pinned when it was paired: its own device id, a version above the one
it holds, only settings that exist.  What verifies is kept on the data partition
(``settings.signed``) for the step that applies it; what does not is refused and reported.  In
production mode the agent never asks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from firmware.agent.beacon import Beacon
from firmware.agent.pairing import Pairer
from firmware.protocol import settings as signed
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.protocol.messages import SettingsGet, SettingsPart
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import InputError, StorageError, TransportError

log = logging.getLogger("coalmine.agent")
SIGNED_FILE = "settings.signed"


class SettingsFetcher:
    EMITS = frozenset({EventCode.SETTINGS_RECEIVED, EventCode.SETTINGS_REFUSED})

    def __init__(self, data_dir: Path, pairer: Pairer, put_own: Callable[[Event], None]
                 ) -> None:
        self.path = data_dir / SIGNED_FILE
        self.pairer = pairer
        self.put_own = put_own
        self.done = False  # asked in this config-mode session

    def held(self) -> int:
        try:
            return signed.kept(self.path.read_bytes()[:signed.SIGNATURE_LEN
                                                      + signed.MAX_BYTES])[0]
        except OSError:
            return 0

    def busy(self) -> bool:
        """Whether to ask now: paired, in config mode, a settings key pinned, not asked yet."""
        if not self.pairer.config:
            self.done = False
            return False
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
        try:
            write_atomic(self.path, bytes(wire))
        except StorageError as exc:
            log.error("%s (%s)", exc.message, exc.hint)
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
