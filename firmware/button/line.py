"""The button's GPIO line behind one small interface, so the daemon never knows the backend.

``GpiodLine`` uses the kernel's GPIO character device through libgpiod's v2 Python bindings
(module ``gpiod``; Debian trixie's python3-libgpiod): any board, QEMU's PL061 included.
``RPiGPIOLine`` uses the RPi.GPIO module (Debian's python3-rpi-lgpio provides it) for setups
that already rely on it.  Each library is imported lazily inside its backend: the image carries
one of them and the build host neither, so a missing or wrong library becomes an
``EnvironmentFault`` with a hint when the daemon starts, never an ImportError at import time.
Both report the logical level (True = pressed): ``active_low`` is the backend's business.
libgpiod also says when each edge came (the kernel's timestamp on the monotonic clock), so a
press that begins and ends while the daemon is busy (writing the mode file, a slow card, an
emulated CPU) still counts: ``changes`` hands those edges to the daemon, which feeds them to
the detector at their own times before it samples the level.
"""

from __future__ import annotations

import importlib
import threading
from datetime import timedelta
from types import ModuleType
from typing import Protocol

from firmware.config import Button
from firmware.shared.errors import EnvironmentFault

CONSUMER = "coalmine-button"
MAX_TIMED = 64  # edges kept between two rounds of the daemon (a chattering contact: the rest
# is seen by the level sample)
GPIOD_HINT = ("install libgpiod's v2 Python bindings (Debian trixie: python3-libgpiod 2.x; "
              "Debian 12's 1.6 is the old v1 API), or set [button] backend in device.toml")
RPI_HINT = ("RPi.GPIO works on Raspberry Pi boards only (Debian: python3-rpi-lgpio); "
            "elsewhere set [button] backend = \"gpiod\" in device.toml")


class Line(Protocol):
    def read(self) -> bool:
        """The current level: True = pressed."""
        ...

    def wait_edge(self, timeout: float) -> bool:
        """Block at most ``timeout`` seconds; True if an edge arrived (and was consumed)."""
        ...

    def changes(self) -> list[tuple[float, bool]]:
        """The level changes timed since the last call, oldest first: (monotonic seconds,
        level).  Empty for a backend that cannot time them (the daemon's sample is all)."""
        ...

    def close(self) -> None: ...


class NoLine:
    """A board without a button (``backend = "none"``): never pressed, waits out its timeout."""

    def __init__(self) -> None:
        self._never = threading.Event()

    def read(self) -> bool:
        return False

    def wait_edge(self, timeout: float) -> bool:
        self._never.wait(timeout)
        return False

    def changes(self) -> list[tuple[float, bool]]:
        return []

    def close(self) -> None:
        self._never.set()


def _gpiod() -> ModuleType:
    try:
        gpiod = importlib.import_module("gpiod")
    except ImportError:
        raise EnvironmentFault("the gpiod button backend needs the Python module gpiod, which "
                               "is not installed", hint=GPIOD_HINT) from None
    if not hasattr(gpiod, "request_lines"):
        version = getattr(gpiod, "__version__", "1.x")
        raise EnvironmentFault(f"the installed gpiod module ({version}) has the old v1 API, "
                               "not libgpiod v2 (no gpiod.request_lines)", hint=GPIOD_HINT)
    return gpiod


class GpiodLine:
    """One input line of ``chip`` with edge detection on both edges (libgpiod v2)."""

    def __init__(self, chip: str, offset: int, *, active_low: bool, debounce: float) -> None:
        gpiod = _gpiod()
        line = importlib.import_module("gpiod.line")
        settings = gpiod.LineSettings(
            direction=line.Direction.INPUT, edge_detection=line.Edge.BOTH,
            bias=line.Bias.PULL_UP if active_low else line.Bias.PULL_DOWN,
            active_low=active_low, debounce_period=timedelta(seconds=debounce))
        try:
            self.request = gpiod.request_lines(chip, consumer=CONSUMER, config={offset: settings})
        except OSError as exc:
            raise EnvironmentFault(
                f"cannot request GPIO line {offset} of {chip}: {exc.strerror or exc}",
                hint="check [button] chip and line in device.toml (gpiodetect, gpioinfo), that "
                     "no driver holds the line and that the daemon's group may open the chip",
            ) from None
        self.offset = offset
        self.active = line.Value.ACTIVE
        self.rising = getattr(getattr(gpiod, "EdgeEvent", None), "Type", None)
        self.timed: list[tuple[float, bool]] = []

    def read(self) -> bool:
        return bool(self.request.get_value(self.offset) == self.active)

    def wait_edge(self, timeout: float) -> bool:
        if not self.request.wait_edge_events(timeout):
            return False
        for event in self.request.read_edge_events():  # consumed: no busy loop
            stamp = getattr(event, "timestamp_ns", None)
            if self.rising is not None and isinstance(stamp, int) and len(self.timed) < MAX_TIMED:
                self.timed.append((stamp / 1e9, event.event_type == self.rising.RISING_EDGE))
        return True

    def changes(self) -> list[tuple[float, bool]]:
        out, self.timed = self.timed, []
        return out

    def close(self) -> None:
        self.request.release()


class RPiGPIOLine:
    """One input pin by BCM number through RPi.GPIO, pulled up when the button is active low."""

    def __init__(self, pin: int, *, active_low: bool) -> None:
        try:
            gpio = importlib.import_module("RPi.GPIO")
        except ImportError:
            raise EnvironmentFault("the rpi-gpio button backend needs the Python module "
                                   "RPi.GPIO, which is not installed", hint=RPI_HINT) from None
        except RuntimeError as exc:  # it refuses to import on a board it does not know
            raise EnvironmentFault(f"RPi.GPIO: {exc}", hint=RPI_HINT) from None
        try:
            gpio.setwarnings(False)
            gpio.setmode(gpio.BCM)
            gpio.setup(pin, gpio.IN, pull_up_down=gpio.PUD_UP if active_low else gpio.PUD_DOWN)
        except Exception as exc:  # RuntimeError, OSError or lgpio.error: all mean "cannot"
            raise EnvironmentFault(f"RPi.GPIO cannot set up GPIO{pin}: {exc}",
                                   hint=RPI_HINT + "; see docs/button.md") from None
        self.gpio, self.pin, self.active_low = gpio, pin, active_low

    def read(self) -> bool:
        return bool(self.gpio.input(self.pin)) != self.active_low

    def wait_edge(self, timeout: float) -> bool:
        ms = max(1, round(timeout * 1000))
        return self.gpio.wait_for_edge(self.pin, self.gpio.BOTH, timeout=ms) is not None

    def changes(self) -> list[tuple[float, bool]]:
        return []  # RPi.GPIO's edges carry no time

    def close(self) -> None:
        self.gpio.cleanup(self.pin)


def open_line(button: Button) -> Line:
    """The backend ``[button] backend`` names, with its chip, line and polarity."""
    if button.backend == "gpiod":
        return GpiodLine(button.chip, button.line, active_low=button.active_low,
                         debounce=button.debounce)
    if button.backend == "rpi-gpio":
        return RPiGPIOLine(button.line, active_low=button.active_low)
    return NoLine()
