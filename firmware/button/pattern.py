"""What the status LED shows, as data: a pattern and the on/off rhythm that draws it.

Pure and separate from the LED backends so the mode machine can choose a pattern without
importing threads or sysfs, and so each rhythm is checked in a test.  Every pattern has its own
rhythm, told apart by eye: CONFIG blinks slowly (1 Hz), ERROR fast (5 Hz), PAIRED is solid on,
DARK is off, and PAIRING_PENDING blinks the pairing fingerprint's digits (digit d = d blinks,
0 = ten, a pause between digits, a longer one before the code repeats), so the operator can
compare it with the digits the console shows.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

MAX_CODE_DIGITS = 12

Step = tuple[bool, float]  # (LED on, seconds); a single step with math.inf is a steady level


class Pattern(enum.Enum):
    DARK = "dark"
    CONFIG = "config"
    PAIRING_PENDING = "pairing-pending"
    PAIRED = "paired"
    ERROR = "error"


@dataclass(frozen=True)
class Show:
    """A pattern and, for PAIRING_PENDING, the fingerprint digits to blink ("" = none)."""

    pattern: Pattern
    code: str = ""

    def __post_init__(self) -> None:
        if self.code and not (self.code.isdigit() and self.code.isascii()
                              and len(self.code) <= MAX_CODE_DIGITS):
            raise ValueError(f"blink code must be 1 to {MAX_CODE_DIGITS} digits")

    def text(self) -> str:
        """One line naming the pattern (and its code), e.g. ``pairing-pending 123456``."""
        return f"{self.pattern.value} {self.code}" if self.code else self.pattern.value


DARK = Show(Pattern.DARK)

BLINK_ON, BLINK_OFF = 0.25, 0.35  # one blink of a digit
DIGIT_PAUSE = 1.2  # off between two digits
CODE_PAUSE = 3.0  # off before the code starts again

_FIXED: dict[Pattern, tuple[Step, ...]] = {
    Pattern.DARK: ((False, math.inf),),
    Pattern.PAIRED: ((True, math.inf),),
    Pattern.CONFIG: ((True, 0.5), (False, 0.5)),
    Pattern.ERROR: ((True, 0.1), (False, 0.1)),
    # pending without a code: a double flash, unlike any other pattern
    Pattern.PAIRING_PENDING: ((True, 0.15), (False, 0.15), (True, 0.15), (False, 1.5)),
}


def rhythm(show: Show) -> tuple[Step, ...]:
    """The steps drawing ``show``, repeated for as long as it is shown."""
    if show.pattern is not Pattern.PAIRING_PENDING or not show.code:
        return _FIXED[show.pattern]
    steps: list[Step] = []
    for digit in show.code:
        blinks = int(digit) or 10
        steps += [(True, BLINK_ON), (False, BLINK_OFF)] * blinks
        steps[-1] = (False, DIGIT_PAUSE)
    steps[-1] = (False, CODE_PAUSE)
    return tuple(steps)
