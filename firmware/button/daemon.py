"""The button daemon's loop: the thin shell around the press detector and the mode machine.

It owns the device's mode.  At start it reads the button (held at power-on) and the fresh-card
marker, writes the mode file *before* it tells systemd it is ready, so every unit ordered after
it sees the mode, then loops: wait for an edge (at most a quarter second), feed the detector
the edges the kernel timed (so a press made while the loop was busy still counts), then the
line's sampled level, feed the machine, and carry out what they decide: rewrite the mode file, send
the event to the agent, set the LED.  Everything that touches the world (line, LED, clock, event
sink, systemd notifier, paths) is passed in, so the tests drive the real loop with fakes.

A failed mode-file write is not survived on purpose: the daemon exits, systemd restarts it, and
a restart starts in production mode (the fresh-card marker counts only on the first start of a
boot), so a file that could not be updated never leaves the device in config mode.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from firmware.button.led import Led, open_led
from firmware.button.line import Line, open_line
from firmware.button.mode import (
    PAIRING_MAX_BYTES,
    Action,
    Enter,
    Leave,
    Mode,
    ModeMachine,
    Tamper,
    led_for,
    parse_pairing,
)
from firmware.button.pattern import Show
from firmware.button.press import PressDetector
from firmware.config import Button, DeviceConfig
from firmware.eventpath import FlushingSink
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.shared.atomic import write_atomic
from firmware.shared.notify import Notify
from firmware.shared.readfile import read_bounded

EMITS = frozenset({EventCode.CONFIG_MODE_ENTERED, EventCode.CONFIG_MODE_LEFT,
                   EventCode.BUTTON_PRESSED})

log = logging.getLogger(__name__)
MIN_WAIT, MAX_WAIT = 0.02, 0.25  # seconds one loop waits for an edge
FLUSH_EVERY = 2.0  # seconds between retries of events the agent has not taken yet


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


@dataclass(frozen=True)
class Paths:
    """The files the daemon writes (mode, LED record) and reads (the rest)."""

    mode: Path  # "config\n" or "production\n", 0644
    led_record: Path  # the pattern shown, for [button] led = "record"
    pairing: Path  # the agent's pairing state: "pending 123456", "paired", "error <text>"
    applying: Path  # exists while settings are being applied
    config_marker: Path  # exists exactly while in config mode: starts coalmine-config.target
    fresh_card: Path  # exists on the boot that formatted the data partition, without a key

    @classmethod
    def of(cls, cfg: DeviceConfig) -> Paths:
        return cls(mode=cfg.mode_file, led_record=cfg.run_dir / "state" / "led",
                   pairing=cfg.pairing_file, applying=cfg.apply_dir / "applying",
                   config_marker=cfg.config_marker, fresh_card=cfg.fresh_card_file)


class ButtonDaemon:
    """``serve()`` until ``stop`` is set (SIGTERM); the line and the LED are closed at the end."""

    def __init__(self, button: Button, paths: Paths, line: Line, led: Led, sink: FlushingSink,
                 *, clock: Clock | None = None, notify: Notify = lambda _state: None) -> None:
        self.button, self.paths, self.line, self.led, self.sink = button, paths, line, led, sink
        self.clock = clock or SystemClock()
        self.notify = notify
        self.machine = ModeMachine(button.config_timeout)
        self.detector = PressDetector(button.debounce, button.long_press)
        self.stop = threading.Event()
        self.shown: Show | None = None
        self.flushed_at = 0.0
        self.fed_at = 0.0  # the time of the last level the detector was fed

    @classmethod
    def from_config(cls, cfg: DeviceConfig, sink: FlushingSink, notify: Notify) -> ButtonDaemon:
        paths = Paths.of(cfg)
        line = open_line(cfg.button)
        return cls(cfg.button, paths, line, open_led(cfg.button, paths.led_record), sink,
                   notify=notify)

    @property
    def mode(self) -> Mode:
        return self.machine.mode

    def serve(self) -> None:
        try:
            self.start()
            while not self.stop.is_set():
                self.step()
        finally:
            self.close()

    def start(self) -> None:
        """Decide the starting mode, write it, then tell systemd the daemon is ready."""
        now = self.clock.monotonic()
        held = self.line.read()
        fresh = self.paths.fresh_card.exists() and not self.paths.mode.exists()
        self.detector = PressDetector(self.button.debounce, self.button.long_press, held=held)
        actions = self.machine.start(now, held, fresh)
        self._write_mode()
        self._perform(actions)
        self._refresh_led()
        self.flushed_at = now
        log.info("button daemon started in %s mode", self.mode.value)
        self.notify(f"READY=1\nSTATUS={self.mode.value} mode")

    def step(self) -> None:
        """One round: wait for an edge or a deadline, then act on the line's level."""
        self.line.wait_edge(self._wait(self.clock.monotonic()))
        now = self.clock.monotonic()
        actions: list[Action] = []
        for timed, level in [*self.line.changes(), (now, self.line.read())]:
            at = self.fed_at = min(max(timed, self.fed_at), now)  # in order, never ahead
            for press in self.detector.feed(at, level):
                actions += self.machine.on_press(at, press)
        actions += self.machine.tick(now)
        if self.mode is Mode.CONFIG:
            applying = self.paths.applying.exists()
            if applying != self.machine.applying:
                actions += self.machine.set_applying(now, applying)
        self._perform(actions)
        self._refresh_led()
        if now - self.flushed_at >= FLUSH_EVERY:
            self.flushed_at = now
            self.sink.flush()

    def close(self) -> None:
        self.led.close()
        self.line.close()

    def _wait(self, now: float) -> float:
        deadlines = [d for d in (self.detector.deadline(), self.machine.deadline())
                     if d is not None]
        if not deadlines:
            return MAX_WAIT
        return min(MAX_WAIT, max(MIN_WAIT, min(deadlines) - now))

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Enter):
                log.info("config mode entered (%s)", action.reason)
                self._emit(EventCode.CONFIG_MODE_ENTERED, {"REASON": action.reason})
            elif isinstance(action, Leave):
                log.info("config mode left (%s) after %d s", action.reason, action.seconds)
                self._emit(EventCode.CONFIG_MODE_LEFT,
                           {"REASON": action.reason, "SECONDS": action.seconds})
            elif isinstance(action, Tamper):
                log.info("button pressed in production mode")
                self._emit(EventCode.BUTTON_PRESSED, {})
        if any(isinstance(a, Enter | Leave) for a in actions):
            self._write_mode()

    def _emit(self, code: EventCode, data: dict[str, str | int]) -> None:
        self.sink.emit(Event(code, self.clock.time(), data=data))

    def _write_mode(self) -> None:
        """The mode file, and the marker whose existence starts coalmine-config.target (whose
        applier stops, and the target with it, once the marker is gone)."""
        if self.mode is Mode.PRODUCTION:
            self.paths.config_marker.unlink(missing_ok=True)
        write_atomic(self.paths.mode, f"{self.mode.value}\n".encode(), 0o644, dir_mode=0o755)
        if self.mode is Mode.CONFIG:
            write_atomic(self.paths.config_marker, b"config\n", 0o644, dir_mode=0o755)

    def _refresh_led(self) -> None:
        pairing = None
        if self.mode is Mode.CONFIG:
            pairing = parse_pairing(read_bounded(self.paths.pairing, PAIRING_MAX_BYTES))
        show = led_for(self.mode, pairing)
        if show != self.shown:
            self.led.show(show)
            self.shown = show

