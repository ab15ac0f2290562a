"""GPIO backends without GPIO: their error paths, and their calls into fake gpiod / RPi.GPIO.

The real gpiod backend is exercised in QEMU (PL061 controller, line 3 wired to QEMU's power
button); here the libraries are stand-ins in ``sys.modules`` with the same call surface.
"""

from __future__ import annotations

import enum
import sys
import types
from datetime import timedelta
from typing import Any

import pytest

from firmware.button.line import GpiodLine, NoLine, RPiGPIOLine, open_line
from firmware.config import Button
from firmware.shared.errors import EnvironmentFault
from tests.button.fakes import FakeClock, SimulatedLine


class FakeRequest:
    def __init__(self, chip: str, consumer: str, config: dict[int, Any]) -> None:
        self.chip, self.consumer, self.config = chip, consumer, config
        self.value: Any = None
        self.pending: list[str] = []
        self.released = False
        self.timeouts: list[float] = []

    def get_value(self, offset: int) -> Any:
        assert offset in self.config
        return self.value

    def wait_edge_events(self, timeout: float) -> bool:
        self.timeouts.append(timeout)
        return bool(self.pending)

    def read_edge_events(self) -> list[str]:
        out, self.pending = self.pending, []
        return out

    def release(self) -> None:
        self.released = True


def install_gpiod_v2(monkeypatch: pytest.MonkeyPatch, error: OSError | None = None) -> list[Any]:
    """A ``gpiod`` module with libgpiod v2's surface; returns the list its requests land in."""
    line = types.ModuleType("gpiod.line")
    vars(line).update(
        Direction=enum.Enum("Direction", "AS_IS INPUT OUTPUT"),
        Edge=enum.Enum("Edge", "NONE RISING FALLING BOTH"),
        Bias=enum.Enum("Bias", "AS_IS DISABLED PULL_UP PULL_DOWN"),
        Value=enum.Enum("Value", "INACTIVE ACTIVE"))
    requests: list[Any] = []

    def request_lines(chip: str, *, consumer: str, config: dict[int, Any]) -> FakeRequest:
        if error is not None:
            raise error
        request = FakeRequest(chip, consumer, config)
        requests.append(request)
        return request

    gpiod = types.ModuleType("gpiod")
    edge_event = types.SimpleNamespace(Type=enum.Enum("Type", "RISING_EDGE FALLING_EDGE"))
    vars(gpiod).update(LineSettings=lambda **kw: kw, request_lines=request_lines, line=line,
                       EdgeEvent=edge_event)
    monkeypatch.setitem(sys.modules, "gpiod", gpiod)
    monkeypatch.setitem(sys.modules, "gpiod.line", line)
    return requests


def test_gpiod_missing_is_an_environment_fault_with_a_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiod", None)  # import gpiod raises ImportError
    with pytest.raises(EnvironmentFault, match="not installed") as err:
        GpiodLine("/dev/gpiochip0", 3, active_low=False, debounce=0.05)
    assert "python3-libgpiod 2" in err.value.hint
    assert err.value.exit_code == 69


def test_gpiod_v1_api_is_refused_with_a_hint(monkeypatch):
    v1 = types.ModuleType("gpiod")  # Debian 12's python3-libgpiod 1.6: Chip, Line, no request_lines
    vars(v1).update(Chip=object, __version__="1.6.3")
    monkeypatch.setitem(sys.modules, "gpiod", v1)
    with pytest.raises(EnvironmentFault, match=r"1\.6\.3.*v1 API") as err:
        GpiodLine("/dev/gpiochip0", 3, active_low=False, debounce=0.05)
    assert "v2" in err.value.hint


def test_gpiod_requests_one_input_line_with_both_edges_bias_and_debounce(monkeypatch):
    requests = install_gpiod_v2(monkeypatch)
    line = GpiodLine("/dev/gpiochip0", 17, active_low=True, debounce=0.05)
    (req,) = requests
    gl = sys.modules["gpiod.line"]
    assert (req.chip, req.consumer) == ("/dev/gpiochip0", "coalmine-button")
    assert req.config == {17: {
        "direction": gl.Direction.INPUT, "edge_detection": gl.Edge.BOTH,
        "bias": gl.Bias.PULL_UP, "active_low": True,
        "debounce_period": timedelta(milliseconds=50)}}
    req.value = gl.Value.ACTIVE
    assert line.read() is True
    req.value = gl.Value.INACTIVE
    assert line.read() is False
    assert line.wait_edge(0.25) is False and req.timeouts == [0.25]
    req.pending = ["rising", "falling"]
    assert line.wait_edge(0.25) is True and req.pending == []  # consumed: no busy loop
    assert line.changes() == []  # events without a time: only the sampled level counts
    kind = sys.modules["gpiod"].EdgeEvent.Type
    req.pending = [types.SimpleNamespace(event_type=kind.RISING_EDGE, timestamp_ns=5_000_000_000),
                   types.SimpleNamespace(event_type=kind.FALLING_EDGE, timestamp_ns=5_120_000_000)]
    assert line.wait_edge(0.25) is True
    assert line.changes() == [(5.0, True), (5.12, False)] and line.changes() == []
    line.close()
    assert req.released


def test_gpiod_active_high_button_is_pulled_down(monkeypatch):
    requests = install_gpiod_v2(monkeypatch)
    GpiodLine("/dev/gpiochip0", 3, active_low=False, debounce=0.05)
    assert requests[0].config[3]["bias"].name == "PULL_DOWN"
    assert requests[0].config[3]["active_low"] is False


def test_gpiod_request_failure_names_chip_and_line(monkeypatch):
    install_gpiod_v2(monkeypatch, OSError(16, "Device or resource busy"))
    with pytest.raises(EnvironmentFault, match="line 3 of /dev/gpiochip0: Device or resource busy"):
        open_line(Button(backend="gpiod", chip="/dev/gpiochip0", line=3))


class FakeRPiGPIO(types.ModuleType):
    BCM, IN, BOTH, PUD_UP, PUD_DOWN = "BCM", "IN", "BOTH", "PUD_UP", "PUD_DOWN"

    def __init__(self) -> None:
        super().__init__("RPi.GPIO")
        self.calls: list[tuple[Any, ...]] = []
        self.level = 1
        self.edge: int | None = None

    def setwarnings(self, on: bool) -> None:
        self.calls.append(("setwarnings", on))

    def setmode(self, mode: str) -> None:
        self.calls.append(("setmode", mode))

    def setup(self, pin: int, direction: str, pull_up_down: str) -> None:
        self.calls.append(("setup", pin, direction, pull_up_down))

    def input(self, pin: int) -> int:
        return self.level

    def wait_for_edge(self, pin: int, edge: str, timeout: int) -> int | None:
        self.calls.append(("wait_for_edge", pin, edge, timeout))
        return self.edge

    def cleanup(self, pin: int) -> None:
        self.calls.append(("cleanup", pin))


def install_rpi(monkeypatch: pytest.MonkeyPatch) -> FakeRPiGPIO:
    gpio = FakeRPiGPIO()
    package = types.ModuleType("RPi")
    vars(package).update(GPIO=gpio)
    monkeypatch.setitem(sys.modules, "RPi", package)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", gpio)
    return gpio


def test_rpi_gpio_uses_bcm_numbers_and_a_pull_up_for_an_active_low_button(monkeypatch):
    gpio = install_rpi(monkeypatch)
    line = open_line(Button(backend="rpi-gpio", line=17, active_low=True))
    assert ("setmode", "BCM") in gpio.calls and ("setup", 17, "IN", "PUD_UP") in gpio.calls
    gpio.level = 0  # pulled to ground: pressed
    assert line.read() is True
    gpio.level = 1
    assert line.read() is False
    assert line.wait_edge(0.25) is False
    gpio.edge = 17
    assert line.wait_edge(0.0001) is True
    assert gpio.calls[-2:] == [("wait_for_edge", 17, "BOTH", 250), ("wait_for_edge", 17, "BOTH", 1)]
    line.close()
    assert gpio.calls[-1] == ("cleanup", 17)


def test_rpi_gpio_missing_is_an_environment_fault(monkeypatch):
    monkeypatch.setitem(sys.modules, "RPi", None)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", None)
    with pytest.raises(EnvironmentFault, match=r"RPi\.GPIO, which is not installed") as err:
        RPiGPIOLine(17, active_low=True)
    assert "Raspberry Pi" in err.value.hint


def test_rpi_gpio_refusing_the_board_or_the_pin_is_an_environment_fault(monkeypatch):
    gpio = install_rpi(monkeypatch)

    def setup(*_args: Any, **_kw: Any) -> None:
        raise RuntimeError("No access to /dev/mem.  Try running as root!")

    gpio.setup = setup  # type: ignore[method-assign]
    with pytest.raises(EnvironmentFault, match="cannot set up GPIO17: No access to /dev/mem"):
        RPiGPIOLine(17, active_low=True)


def test_no_button_is_never_pressed_and_waits_out_its_timeout():
    line = open_line(Button(backend="none"))
    assert isinstance(line, NoLine)
    assert line.read() is False and line.wait_edge(0.01) is False
    line.close()


def test_simulated_line_follows_its_script_against_the_fake_clock():
    clock = FakeClock()
    line = SimulatedLine(clock).press(at=1.0, hold=0.5)
    assert line.read() is False
    assert line.wait_edge(0.25) is False and clock.now == pytest.approx(1000.25)
    clock.now = 1000.9
    assert line.wait_edge(0.25) is True and clock.now == 1001.0 and line.read() is True
    assert line.wait_edge(1.0) is True and line.read() is False
