"""Pairing from the device's side: ask the console, only in config mode, until a person decides.

A device whose key the console does not know yet sends nothing but registration frames, and
those only while it is in config mode (the button daemon writes ``<run_dir>/state/mode``): in
production nothing the device sends asks its console for anything.  While the request is
pending the device shows the six-digit code the console will list (serial console, and the
status LED through the pairing state file the button daemon reads); once the operator approved
it, the device records that it is paired (``<data_dir>/paired``, naming both keys and the
console's settings key, pinned from the approving answer) and
the agent sends heartbeats and events as usual.  Events that arrived meanwhile wait in the
queue.  A rejected key is never offered again: the next config-mode session makes a new key
(the old one is kept aside) and asks anew.  A paired device asks once in every config-mode
session too: if the console revoked it, it makes a new key and pairs anew.
``console.enrolled = true`` (a key enrolled by hand with ``console enroll``, for labs and
tests) skips all of this.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable

from firmware.agent.beacon import Beacon
from firmware.config import DeviceConfig
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.protocol.messages import REG_APPROVED, REG_PENDING, REG_REJECTED
from firmware.protocol.pairing import fingerprint, shown
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import StorageError

log = logging.getLogger("coalmine.agent")
PAIRED_FILE = "paired"
MODE_BYTES = 64


def in_config_mode(cfg: DeviceConfig) -> bool:
    """What the button daemon says (a missing or unreadable file: production)."""
    try:
        with cfg.mode_file.open("rb") as fh:
            return fh.read(MODE_BYTES).strip() == b"config"
    except OSError:
        return False


class Pairer:
    """The agent's pairing state; the sender asks ``busy()`` before anything else it does."""

    EMITS = frozenset({EventCode.PAIRING_REQUESTED})

    def __init__(self, cfg: DeviceConfig, beacon: Beacon, put_own: Callable[[Event], None],
                 rekey: Callable[[], Beacon]) -> None:
        self.cfg = cfg
        self.beacon = beacon
        self.put_own = put_own
        self.rekey = rekey  # moves a refused key aside, makes a new one: the new beacon
        self.console_key = cfg.console.public_key
        self.marker = cfg.data_dir / PAIRED_FILE
        self.state_file = cfg.pairing_file
        self.code = ""
        self.refused = False  # this key was rejected: never offer it again
        self.config = self.entered = self.was_config = False
        self.confirming = False  # paired, in a new config-mode session: still paired?
        self.settings_key = b""  # the console's settings key, pinned at pairing
        self.paired = cfg.console.enrolled or self._marker_matches()

    def _identity(self) -> str:
        """What the marker holds: this console's key and this device's key."""
        console = self.console_key.text() if self.console_key else ""
        return f"{console} {self.beacon.link.device_key.public().text()}"

    def _marker_matches(self) -> bool:
        """Paired with this console under this key; the settings key it pinned then, kept."""
        try:
            fields = self.marker.read_text(errors="replace")[:300].split()
        except OSError:
            return False
        if " ".join(fields[:2]) != self._identity():
            return False
        with contextlib.suppress(binascii.Error, ValueError, IndexError):
            self.settings_key = base64.b64decode(fields[2], validate=True)
        return True

    def busy(self) -> bool:
        """Whether pairing has work now: while unpaired, and once per config-mode session while
        paired (to learn that the console revoked this key, and pair anew)."""
        config = in_config_mode(self.cfg)
        self.entered, self.was_config, self.config = config and not self.was_config, config, config
        if self.entered and self.paired and not self.cfg.console.enrolled:
            self.confirming = True
        return not self.paired or self.confirming

    def step(self) -> float:
        """One round of pairing (after ``busy()``); the seconds to wait before the next."""
        if not self.config:
            self.confirming = False
            if self.code or self.refused:
                self._state("")
            return 1.0
        if self.entered and self.refused:
            self._new_key("the console refused the old key: pairing with a new one")
        if self.refused:
            return 5.0
        ack = self.beacon.register(self.cfg.node_name)
        self.confirming = False
        if ack.status == REG_APPROVED:
            if not self.paired:
                self._paired(ack.settings_key)
            return 0.0
        if ack.status == REG_REJECTED and self.paired:  # revoked; a person is at the box
            self.paired = False
            self.marker.unlink(missing_ok=True)
            self._new_key("the console revoked this device: pairing anew with a new key")
            return 0.0
        if ack.status == REG_REJECTED:
            self.refused = True
            self._state("error rejected by the console")
            log.error("the console rejected this device's pairing request; leave config mode "
                      "and enter it again to ask with a new key")
        elif ack.status == REG_PENDING:
            self._pending(ack.nonce)
        return 5.0

    def _new_key(self, why: str) -> None:
        log.warning("%s", why)
        self.beacon = self.rekey()
        self.refused, self.code = False, ""

    def _pending(self, nonce: bytes) -> None:
        console = self.console_key
        if console is None:
            return
        code = fingerprint(console.raw, self.beacon.link.device_key.public().raw, nonce)
        if code == self.code:
            return
        self.code = code
        self._state(f"pending {code}")
        print(f"coalmine: pairing code {shown(code)}: approve it at the console with "
              f"`console approve {code}` only if the console lists the same code", flush=True)
        self.put_own(Event(EventCode.PAIRING_REQUESTED, time.time(),
                           data={"FINGERPRINT": code}))

    def _paired(self, settings_key: bytes) -> None:
        self.settings_key = settings_key  # pinned: later answers cannot change it
        pinned = base64.b64encode(settings_key).decode("ascii")
        try:
            write_atomic(self.marker, f"{self._identity()} {pinned}\n".encode())
        except StorageError as exc:  # still paired for this run; asks again next start
            log.error("%s (%s)", exc.message, exc.hint)
        self.paired = True
        self._state("paired")
        print("coalmine: paired with the console", flush=True)

    def _state(self, text: str) -> None:
        """Tell the button daemon (status LED) where pairing stands."""
        try:
            write_atomic(self.state_file, (text + "\n").encode(), 0o644, dir_mode=0o755)
        except StorageError as exc:
            log.warning("cannot write %s: %s", self.state_file, exc.message)
