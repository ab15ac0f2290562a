"""Test doubles of the button daemon's world: a fake clock, a scripted GPIO line, a memory sink.

``SimulatedLine`` implements the same ``Line`` interface as the real backends: its levels are a
script of (time, level) changes against the ``FakeClock``, and ``wait_edge`` moves the clock on
to the next change or by the whole timeout, as a real line's wait would take that long.  So a
test reads as a story: "press at 1 s for 3.5 s, run to 10 s, the mode file says config".
"""

from __future__ import annotations

from firmware.button.line import Line
from firmware.protocol.event import Event

T0 = 1000.0  # the fake monotonic clock's start
WALL0 = 1_750_000_000.0  # the fake wall clock at T0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return WALL0 + self.now - T0


class SimulatedLine:
    """A GPIO line whose level follows a script; times are seconds after ``T0``."""

    def __init__(self, clock: FakeClock, *, held: bool = False) -> None:
        self.clock = clock
        self.level = held
        self.script: list[tuple[float, bool]] = []
        self.closed = False
        self.waits = 0
        self.timed = True  # False: a backend that cannot time edges (RPi.GPIO)
        self.busy = False  # True: waits sleep their whole timeout, as a loop held up elsewhere
        self.applied: list[tuple[float, bool]] = []

    def at(self, seconds: float, pressed: bool) -> SimulatedLine:
        self.script = sorted([*self.script, (T0 + seconds, pressed)])
        return self

    def press(self, at: float, hold: float) -> SimulatedLine:
        return self.at(at, True).at(at + hold, False)

    def bounce(self, at: float, pulses: int, width: float) -> SimulatedLine:
        """``pulses`` pulses of ``width`` seconds, ``width`` apart: contact chatter."""
        for i in range(pulses):
            self.press(at + 2 * i * width, width)
        return self

    def read(self) -> bool:
        self._apply()
        return self.level

    def wait_edge(self, timeout: float) -> bool:
        self._apply()
        due = self.script[0][0] if self.script else None
        self.waits += 1
        if due is not None and due <= self.clock.now + timeout and not self.busy:
            self.clock.now = max(self.clock.now, due)
            self._apply()
            return True
        self.clock.now += timeout
        self._apply()  # what came while the loop was busy: the kernel timed it
        return False

    def changes(self) -> list[tuple[float, bool]]:
        out, self.applied = self.applied, []
        return out if self.timed else []

    def close(self) -> None:
        self.closed = True

    def _apply(self) -> None:
        while self.script and self.script[0][0] <= self.clock.now:
            change = self.script.pop(0)
            self.level = change[1]
            self.applied.append(change)


class MemorySink:
    """Test double of ``SocketSink`` for the daemon: keeps the events in a list."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.flushes = 0

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        self.flushes += 1


def _conforms(line: SimulatedLine) -> Line:
    return line  # mypy checks that the double implements the real interface
