"""The status LED's backends: the kernel's LED class in sysfs, a file for QEMU, or none.

The daemon must never stop for a lamp: a failing LED write is logged once and otherwise
ignored.  ``SysfsLed`` takes the LED from its kernel trigger (trigger ``none``) and draws each
pattern's rhythm (:mod:`firmware.button.pattern`) with one small thread, replaced when the
pattern changes; on close it leaves the LED dark.  QEMU's virt board has no LED, so
``RecordingLed`` writes the pattern's name to a file that tests read instead.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from firmware.button.pattern import DARK, Pattern, Show, Step, rhythm
from firmware.config import Button
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import StorageError

__all__ = ["Led", "NoLed", "Pattern", "RecordingLed", "Show", "SysfsLed", "open_led"]

log = logging.getLogger(__name__)
SYSFS_LEDS = Path("/sys/class/leds")


class Led(Protocol):
    def show(self, show: Show) -> None: ...
    def close(self) -> None: ...


class NoLed:
    """A board without a status LED."""

    def show(self, show: Show) -> None:
        pass

    def close(self) -> None:
        pass


class RecordingLed:
    """Writes the pattern shown (``config``, ``pairing-pending 123456`` ...) to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed = False

    def show(self, show: Show) -> None:
        try:
            write_atomic(self.path, f"{show.text()}\n".encode(), 0o644, dir_mode=0o755)
        except StorageError as exc:
            if not self.failed:
                log.warning("cannot record the LED pattern: %s", exc.message)
            self.failed = True

    def close(self) -> None:
        self.show(DARK)


class SysfsLed:
    """``/sys/class/leds/<name>``: trigger none, brightness drawn by one thread per pattern."""

    def __init__(self, name: str, root: Path = SYSFS_LEDS) -> None:
        self.dir = root / name
        self.failed = False
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.on_value = self._max_brightness()
        self._write("trigger", "none")
        self._set(False)

    def show(self, show: Show) -> None:
        self._stop_thread()
        steps = rhythm(show)
        if len(steps) == 1:  # a steady level needs no thread
            self._set(steps[0][0])
            return
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._draw, args=(steps, self.stop),
                                       name=f"led-{show.pattern.value}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._stop_thread()
        self._set(False)

    def _draw(self, steps: tuple[Step, ...], stop: threading.Event) -> None:
        while True:
            for on, seconds in steps:
                self._set(on)
                if stop.wait(seconds):
                    return

    def _stop_thread(self) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join(timeout=2.0)
            self.thread = None

    def _set(self, on: bool) -> None:
        self._write("brightness", str(self.on_value if on else 0))

    def _max_brightness(self) -> int:
        try:
            with (self.dir / "max_brightness").open("rb") as fh:
                text = fh.read(16).strip()
        except OSError:
            return 1  # the write that follows reports the missing LED
        return int(text) if text.isdigit() and 0 < int(text) < 1 << 16 else 1

    def _write(self, attribute: str, value: str) -> None:
        """Write one sysfs attribute; never create a file, never raise."""
        try:
            fd = os.open(self.dir / attribute, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            if not self.failed:
                log.warning("status LED %s: cannot write %s: %s (the LED stays as it is)",
                            self.dir, attribute, exc.strerror or exc)
            self.failed = True


def open_led(button: Button, record_path: Path) -> Led:
    """The LED backend ``[button] led`` names; ``record_path`` is where ``record`` writes."""
    if button.led == "sysfs":
        return SysfsLed(button.led_name)
    if button.led == "record":
        return RecordingLed(record_path)
    return NoLed()
