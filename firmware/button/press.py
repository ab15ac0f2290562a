"""Turning raw button levels into presses: pure, so every timing rule is tested without GPIO.

A level change counts only once it has held for ``debounce`` seconds (contact bounce and
electrical noise never reach the mode machine).  A LONG press is reported once, as soon as the
button has been held ``long_press`` seconds, while it is still held: the operator sees the LED
change and knows to let go.  A SHORT press is reported on release of a shorter press; the release
after a LONG press reports nothing.  Time is passed in, so the tests drive a fake clock.
"""

from __future__ import annotations

import enum


class Press(enum.Enum):
    SHORT = "short"
    LONG = "long"


class PressDetector:
    """Debounced press lengths from level samples; ``feed`` a sample, ``tick`` between them."""

    def __init__(self, debounce: float, long_press: float, *, held: bool = False) -> None:
        """``held``: the button is down already (at power-on); that press reports nothing."""
        self.debounce = debounce
        self.long_press = long_press
        self.pressed = held
        self.pressed_at = 0.0
        self.consumed = held  # the current press has been reported (LONG) or does not count
        self.candidate: bool | None = None
        self.candidate_since = 0.0

    def feed(self, now: float, pressed: bool) -> list[Press]:
        """One level sample at ``now`` (True = pressed)."""
        out = self.tick(now)  # what happened up to now, on the level known so far
        if pressed == self.pressed:
            self.candidate = None  # a bounce that did not hold
        elif self.candidate != pressed:
            self.candidate, self.candidate_since = pressed, now
        return out + self._settle(now)

    def tick(self, now: float) -> list[Press]:
        """Time passes without a new sample: settle a held change, report a LONG press."""
        out = self._settle(now)
        if self.pressed and not self.consumed and now - self.pressed_at >= self.long_press:
            self.consumed = True
            out.append(Press.LONG)
        return out

    def deadline(self) -> float | None:
        """The next time ``tick`` could report something (None: nothing pending)."""
        if self.candidate is not None:
            return self.candidate_since + self.debounce
        if self.pressed and not self.consumed:
            return self.pressed_at + self.long_press
        return None

    def _settle(self, now: float) -> list[Press]:
        if self.candidate is None or now - self.candidate_since < self.debounce:
            return []
        level, since = self.candidate, self.candidate_since
        self.candidate = None
        self.pressed = level
        if level:
            self.pressed_at, self.consumed = since, False
            return []
        if self.consumed:
            return []
        self.consumed = True  # a press that outlasted long_press between samples is still LONG
        return [Press.SHORT if since - self.pressed_at < self.long_press else Press.LONG]
