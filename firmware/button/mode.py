"""Production or config mode, and what the LED shows in each: the button's rules, pure.

Config mode is the only mode in which the device pairs and takes settings, so every way in and
out is a rule here, tested without GPIO or files: held at power-on or a fresh card starts in
config mode; a LONG press enters it (or, in config mode, restarts its timeout); a SHORT press
leaves it; it ends by itself ``config_timeout`` seconds after entry or the last LONG press.
While settings are being applied, a SHORT press or the timeout does not cut them off: the leave
waits until applying ends.  A SHORT press in production changes nothing but is reported: someone
is at the box.  In production the LED stays dark whatever happens, since a blinking box tells
an intruder what it is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from firmware.button.pattern import DARK, MAX_CODE_DIGITS, Pattern, Show
from firmware.button.press import Press

BUTTON, POWER_ON, FIRST_BOOT, TIMEOUT = "button", "power-on", "first-boot", "timeout"
PAIRING_MAX_BYTES = 256


class Mode(enum.Enum):
    PRODUCTION = "production"
    CONFIG = "config"


@dataclass(frozen=True)
class Enter:
    """Config mode entered; ``reason`` is button, power-on or first-boot."""

    reason: str


@dataclass(frozen=True)
class Leave:
    """Config mode left; ``reason`` is button or timeout, after ``seconds`` in config mode."""

    reason: str
    seconds: int


@dataclass(frozen=True)
class Tamper:
    """A short press in production: nothing changes, the console hears of it."""


Action = Enter | Leave | Tamper


class ModeMachine:
    """The mode and its timeout; every method takes the time and returns what to do."""

    def __init__(self, config_timeout: float) -> None:
        self.config_timeout = config_timeout
        self.mode = Mode.PRODUCTION
        self.entered_at = 0.0
        self.refreshed_at = 0.0  # entry or the last LONG press: the timeout counts from here
        self.applying = False
        self.pending: str | None = None  # the reason of a leave deferred while applying

    def start(self, now: float, held_at_power_on: bool, fresh_card: bool) -> list[Action]:
        if held_at_power_on:
            return self._enter(now, POWER_ON)
        if fresh_card:
            return self._enter(now, FIRST_BOOT)
        return []

    def on_press(self, now: float, press: Press) -> list[Action]:
        if self.mode is Mode.PRODUCTION:
            return self._enter(now, BUTTON) if press is Press.LONG else [Tamper()]
        if press is Press.LONG:  # stay, and count the timeout from now
            self.refreshed_at, self.pending = now, None
            return []
        return self._leave(now, BUTTON)

    def tick(self, now: float) -> list[Action]:
        expired = self.deadline()
        return self._leave(now, TIMEOUT) if expired is not None and now >= expired else []

    def set_applying(self, now: float, applying: bool) -> list[Action]:
        """Settings started (True) or finished (False) being applied; a deferred leave happens."""
        self.applying = applying
        if applying or self.pending is None or self.mode is not Mode.CONFIG:
            return []
        reason, self.pending = self.pending, None
        return self._leave(now, reason)

    def deadline(self) -> float | None:
        """When config mode times out (None: not in config mode, or a leave is waiting)."""
        if self.mode is not Mode.CONFIG or self.pending is not None:
            return None
        return self.refreshed_at + self.config_timeout

    def _enter(self, now: float, reason: str) -> list[Action]:
        self.mode, self.entered_at, self.refreshed_at, self.pending = Mode.CONFIG, now, now, None
        return [Enter(reason)]

    def _leave(self, now: float, reason: str) -> list[Action]:
        if self.applying:
            self.pending = reason
            return []
        self.mode, self.pending = Mode.PRODUCTION, None
        return [Leave(reason, max(0, int(now - self.entered_at)))]


@dataclass(frozen=True)
class Pairing:
    """The agent's pairing state: pending (with fingerprint digits), paired or error."""

    state: str
    code: str = ""


def parse_pairing(data: bytes) -> Pairing | None:
    """The first line of the agent's pairing file; anything unexpected counts as no state."""
    words = data[:PAIRING_MAX_BYTES].split(b"\n", 1)[0].decode("ascii", "replace").split()
    if not words or words[0] not in ("pending", "paired", "error"):
        return None
    code = words[1] if words[0] == "pending" and len(words) > 1 else ""
    good = code.isascii() and code.isdigit() and len(code) <= MAX_CODE_DIGITS
    return Pairing(words[0], code if good else "")


_PAIRING_PATTERN = {"pending": Pattern.PAIRING_PENDING, "paired": Pattern.PAIRED,
                    "error": Pattern.ERROR}


def led_for(mode: Mode, pairing: Pairing | None) -> Show:
    """Dark in production, always; in config mode the pairing state picks the pattern."""
    if mode is Mode.PRODUCTION:
        return DARK
    if pairing is None:
        return Show(Pattern.CONFIG)
    return Show(_PAIRING_PATTERN[pairing.state], pairing.code)
