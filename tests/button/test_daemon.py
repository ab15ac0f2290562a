"""The daemon's real loop, driven by a simulated line and a fake clock.

End to end: events leave through the real ``SocketSink`` into a Unix datagram socket bound in
tmp_path where the agent's would be, and are decoded as the agent decodes them.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.button.daemon import FLUSH_EVERY, ButtonDaemon, Paths
from firmware.button.led import RecordingLed
from firmware.config import Button, parse
from firmware.eventpath import FlushingSink, SocketSink, decode_datagram
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from tests.button.fakes import T0, WALL0, FakeClock, MemorySink, SimulatedLine


@dataclasses.dataclass
class Rig:
    daemon: ButtonDaemon
    clock: FakeClock
    line: SimulatedLine
    paths: Paths
    sink: MemorySink
    notified: list[tuple[str, str]]

    def run_to(self, seconds: float) -> None:
        while self.clock.now < T0 + seconds:
            self.daemon.step()

    def mode(self) -> str:
        return self.paths.mode.read_text()

    def led(self) -> str:
        return self.paths.led_record.read_text()

    def codes(self) -> list[EventCode]:
        return [e.code for e in self.sink.events]


def rig(tmp_path: Path, *, held: bool = False, sink: FlushingSink | None = None,
        **button: Any) -> Rig:
    clock = FakeClock()
    line = SimulatedLine(clock, held=held)
    paths = Paths.of(parse({"device": {"run_dir": str(tmp_path / "run")}}))
    memory = MemorySink()
    notified: list[tuple[str, str]] = []

    def notify(state: str) -> None:  # what the mode file said when readiness was signalled
        notified.append((state, paths.mode.read_text()))

    daemon = ButtonDaemon(Button(**button), paths, line, RecordingLed(paths.led_record),
                          sink or memory, clock=clock, notify=notify)
    return Rig(daemon, clock, line, paths, memory, notified)


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """Stands in for the agent: the socket it would own at run_dir/button/events.sock."""
    path = parse({"device": {"run_dir": str(tmp_path / "run")}}).event_socket("button")
    path.parent.mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[Event]:
    out = []
    while True:
        try:
            out.append(decode_datagram(sock.recv(8192), 8192))
        except BlockingIOError:
            return out


def test_long_press_enters_and_short_press_leaves_end_to_end(tmp_path, agent_socket):
    sink = SocketSink(tmp_path / "run" / "button" / "events.sock")
    r = rig(tmp_path, sink=sink)
    r.line.press(at=1.0, hold=4.0).press(at=65.0, hold=0.3)
    r.daemon.start()
    assert r.mode() == "production\n" and received(agent_socket) == []
    assert not r.paths.config_marker.exists()
    r.run_to(4.5)  # held for 3.5 s, still held: config mode already
    assert r.mode() == "config\n"
    assert r.paths.config_marker.exists(), "the marker that starts coalmine-config.target"
    (entered,) = received(agent_socket)
    assert entered.code is EventCode.CONFIG_MODE_ENTERED
    assert dict(entered.data) == {"REASON": "button"}
    assert entered.time == pytest.approx(WALL0 + 4.0, abs=0.05)
    r.run_to(70.0)
    assert r.mode() == "production\n" and not r.paths.config_marker.exists()
    (left,) = received(agent_socket)
    assert left.code is EventCode.CONFIG_MODE_LEFT
    assert dict(left.data) == {"REASON": "button", "SECONDS": 61}  # 4.0 s to 65.3 s
    sink.close()


def test_mode_file_is_written_before_readiness(tmp_path):
    r = rig(tmp_path)
    r.daemon.start()
    assert r.notified == [("READY=1\nSTATUS=production mode", "production\n")]
    assert oct(r.paths.mode.stat().st_mode & 0o777) == "0o644"


def test_button_held_at_power_on_starts_in_config_mode_and_its_release_does_not_leave(tmp_path):
    r = rig(tmp_path, held=True)
    r.line.at(2.0, False)
    r.daemon.start()
    assert r.notified[0][1] == "config\n"
    r.run_to(10.0)
    assert r.mode() == "config\n"
    assert [(e.code, dict(e.data)) for e in r.sink.events] == [
        (EventCode.CONFIG_MODE_ENTERED, {"REASON": "power-on"})]


def test_fresh_card_starts_in_config_mode_once_per_boot(tmp_path):
    r = rig(tmp_path)
    r.paths.fresh_card.parent.mkdir(parents=True)
    r.paths.fresh_card.write_text("")
    r.daemon.start()
    assert r.mode() == "config\n"
    assert dict(r.sink.events[0].data) == {"REASON": "first-boot"}
    again = rig(tmp_path)  # a restart in the same boot: the mode file is there already
    again.daemon.start()
    assert again.mode() == "production\n" and again.sink.events == []


def test_short_press_in_production_reports_tamper_and_stays_dark(tmp_path):
    r = rig(tmp_path)
    r.paths.pairing.parent.mkdir(parents=True)
    r.paths.pairing.write_text("paired\n")
    r.line.press(at=1.0, hold=0.2)
    r.daemon.start()
    r.run_to(3.0)
    assert r.codes() == [EventCode.BUTTON_PRESSED]
    assert dict(r.sink.events[0].data) == {}
    assert r.mode() == "production\n" and r.led() == "dark\n"


def test_bounces_change_nothing(tmp_path):
    r = rig(tmp_path)
    r.line.bounce(at=1.0, pulses=20, width=0.01)
    r.daemon.start()
    r.run_to(5.0)
    assert r.sink.events == [] and r.mode() == "production\n"


@pytest.mark.parametrize("timed", [True, False])
def test_a_press_made_while_the_loop_is_busy_counts_when_the_kernel_timed_it(tmp_path, timed):
    """The loop is held up (a slow card, an emulated CPU) for longer than a whole short press:
    the level it samples afterwards is released again.  libgpiod's timed edges still give the
    press; a backend without them (RPi.GPIO) loses it, as every level-sampling daemon would."""
    r = rig(tmp_path)
    r.line.timed = timed
    r.line.press(at=1.0, hold=3.5).press(at=20.1, hold=0.12)
    r.daemon.start()
    r.run_to(10.0)
    assert r.mode() == "config\n"
    r.line.busy = True
    r.run_to(20.0)
    r.daemon.step()  # one round that sleeps through the whole press (20.1 s to 20.22 s)
    r.line.busy = False
    assert r.clock.now >= T0 + 20.25
    r.run_to(25.0)
    assert (r.mode() == "production\n") is timed, r.codes()


def test_config_mode_times_out(tmp_path):
    r = rig(tmp_path, config_timeout=60.0)
    r.line.press(at=1.0, hold=3.5)
    r.daemon.start()
    r.run_to(63.0)  # entered at 4.0 s, when the press had lasted 3 s
    assert r.mode() == "config\n"
    r.run_to(65.0)
    assert r.mode() == "production\n"
    assert r.sink.events[-1].code is EventCode.CONFIG_MODE_LEFT
    assert r.sink.events[-1].time == pytest.approx(WALL0 + 64.0)  # on the dot, not a poll late
    assert dict(r.sink.events[-1].data) == {"REASON": "timeout", "SECONDS": 60}


def test_short_press_while_applying_leaves_only_when_applying_ends(tmp_path):
    r = rig(tmp_path)
    r.line.press(at=1.0, hold=3.5).press(at=10.0, hold=0.3)
    r.daemon.start()
    r.run_to(5.0)
    r.paths.applying.parent.mkdir(parents=True)
    r.paths.applying.write_text("")
    r.run_to(20.0)
    assert r.mode() == "config\n"
    r.paths.applying.unlink()
    r.run_to(21.0)
    assert r.mode() == "production\n"
    assert dict(r.sink.events[-1].data)["REASON"] == "button"


def test_led_follows_the_pairing_state_in_config_mode_only(tmp_path):
    r = rig(tmp_path)
    r.line.press(at=1.0, hold=3.5).press(at=20.0, hold=0.3)
    r.daemon.start()
    assert r.led() == "dark\n"
    r.run_to(5.0)
    assert r.led() == "config\n"
    r.paths.pairing.parent.mkdir(parents=True)
    r.paths.pairing.write_text("pending 123456\n")
    r.run_to(6.0)
    assert r.led() == "pairing-pending 123456\n"
    r.paths.pairing.write_bytes(b"\x00garbage" * 1000)
    r.run_to(7.0)
    assert r.led() == "config\n"
    r.paths.pairing.write_text("paired\n")
    r.run_to(8.0)
    assert r.led() == "paired\n"
    r.run_to(21.0)  # short press: production, dark although paired
    assert r.mode() == "production\n" and r.led() == "dark\n"


def test_events_wait_for_an_agent_that_comes_later(tmp_path):
    path = tmp_path / "run" / "button" / "events.sock"
    sink = SocketSink(path)
    r = rig(tmp_path, sink=sink, held=True)
    r.daemon.start()  # CONFIG_MODE_ENTERED: nobody listening yet
    assert len(sink.backlog) == 1
    path.parent.mkdir(parents=True, exist_ok=True)
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    agent.bind(str(path))
    agent.setblocking(False)
    r.run_to(FLUSH_EVERY + 0.5)  # no new event, yet the backlog leaves
    assert [e.code for e in received(agent)] == [EventCode.CONFIG_MODE_ENTERED]
    agent.close()
    sink.close()


def test_serve_stops_on_request_and_leaves_the_led_dark(tmp_path):
    r = rig(tmp_path)
    r.line.press(at=1.0, hold=3.5)
    steps = 0
    original = r.daemon.step

    def step() -> None:
        nonlocal steps
        original()
        steps += 1
        if r.clock.now >= T0 + 5.0:
            r.daemon.stop.set()  # what SIGTERM does

    r.daemon.step = step  # type: ignore[method-assign]
    r.daemon.serve()
    assert r.mode() == "config\n" and r.led() == "dark\n" and r.line.closed


def test_waits_are_bounded_so_the_loop_notices_files_and_signals(tmp_path):
    r = rig(tmp_path)
    r.daemon.start()
    r.run_to(10.0)
    assert r.line.waits >= 10.0 / 0.25
