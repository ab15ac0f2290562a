"""The mode machine (ways into and out of config mode) and the LED pattern it picks."""

from __future__ import annotations

import pytest

from firmware.button.mode import (
    Enter,
    Leave,
    Mode,
    ModeMachine,
    Pairing,
    Tamper,
    led_for,
    parse_pairing,
)
from firmware.button.pattern import DARK, Pattern, Show
from firmware.button.press import Press

TIMEOUT = 900.0


def mode_of(m):
    return m.mode  # untyped on purpose: mypy would narrow m.mode after the first assert


def in_config(at: float = 0.0) -> ModeMachine:
    m = ModeMachine(TIMEOUT)
    assert m.on_press(at, Press.LONG) == [Enter("button")]
    return m


@pytest.mark.parametrize(("held", "fresh", "actions", "mode"), [
    (True, False, [Enter("power-on")], Mode.CONFIG),
    (False, True, [Enter("first-boot")], Mode.CONFIG),
    (True, True, [Enter("power-on")], Mode.CONFIG),
    (False, False, [], Mode.PRODUCTION),
])
def test_start(held, fresh, actions, mode):
    m = ModeMachine(TIMEOUT)
    assert m.start(5.0, held, fresh) == actions
    assert mode_of(m) is mode


def test_long_press_enters_and_short_press_leaves_with_the_seconds_spent():
    m = in_config(10.0)
    assert mode_of(m) is Mode.CONFIG
    assert m.on_press(52.7, Press.SHORT) == [Leave("button", 42)]
    assert mode_of(m) is Mode.PRODUCTION


def test_short_press_in_production_is_tamper_and_changes_nothing():
    m = ModeMachine(TIMEOUT)
    assert m.on_press(1.0, Press.SHORT) == [Tamper()]
    assert mode_of(m) is Mode.PRODUCTION and m.tick(10_000.0) == []


def test_config_mode_times_out():
    m = in_config(0.0)
    assert m.tick(TIMEOUT - 0.1) == []
    assert m.tick(TIMEOUT) == [Leave("timeout", 900)]
    assert mode_of(m) is Mode.PRODUCTION and m.tick(2 * TIMEOUT) == []


def test_long_press_in_config_mode_stays_and_restarts_the_timeout():
    m = in_config(0.0)
    assert m.on_press(800.0, Press.LONG) == []
    assert mode_of(m) is Mode.CONFIG
    assert m.tick(TIMEOUT + 1) == []
    assert m.deadline() == 800.0 + TIMEOUT
    assert m.tick(800.0 + TIMEOUT) == [Leave("timeout", 1700)]  # seconds since entry


def test_short_press_while_applying_settings_leaves_when_applying_ends():
    m = in_config(0.0)
    assert m.set_applying(10.0, True) == []
    assert m.on_press(12.0, Press.SHORT) == []
    assert mode_of(m) is Mode.CONFIG
    assert m.set_applying(20.0, False) == [Leave("button", 20)]
    assert mode_of(m) is Mode.PRODUCTION


def test_timeout_while_applying_waits_for_applying_to_end():
    m = in_config(0.0)
    m.set_applying(890.0, True)
    assert m.tick(TIMEOUT + 5) == [] and mode_of(m) is Mode.CONFIG
    assert m.tick(TIMEOUT + 50) == []
    assert m.set_applying(TIMEOUT + 60, False) == [Leave("timeout", 960)]


def test_long_press_while_applying_cancels_a_waiting_leave():
    m = in_config(0.0)
    m.set_applying(1.0, True)
    m.on_press(2.0, Press.SHORT)
    assert m.on_press(5.0, Press.LONG) == []
    assert m.set_applying(6.0, False) == []
    assert mode_of(m) is Mode.CONFIG


def test_applying_ending_without_a_waiting_leave_changes_nothing():
    m = in_config(0.0)
    m.set_applying(1.0, True)
    assert m.set_applying(2.0, False) == [] and mode_of(m) is Mode.CONFIG


@pytest.mark.parametrize("pairing", [None, Pairing("pending", "123456"), Pairing("paired"),
                                     Pairing("error")])
def test_led_is_dark_in_production_whatever_the_pairing_state(pairing):
    assert led_for(Mode.PRODUCTION, pairing) == DARK


@pytest.mark.parametrize(("pairing", "show"), [
    (None, Show(Pattern.CONFIG)),
    (Pairing("pending", "123456"), Show(Pattern.PAIRING_PENDING, "123456")),
    (Pairing("pending"), Show(Pattern.PAIRING_PENDING)),
    (Pairing("paired"), Show(Pattern.PAIRED)),
    (Pairing("error"), Show(Pattern.ERROR)),
])
def test_led_pattern_in_config_mode_follows_the_pairing_state(pairing, show):
    assert led_for(Mode.CONFIG, pairing) == show


@pytest.mark.parametrize(("data", "pairing"), [
    (b"pending 123456\n", Pairing("pending", "123456")),
    (b"pending 123456 extra words\nsecond line", Pairing("pending", "123456")),
    (b"paired\n", Pairing("paired")),
    (b"error console refused the pairing\n", Pairing("error")),
    (b"pending\n", Pairing("pending")),
    (b"pending 12ab56\n", Pairing("pending")),  # not digits: no blink code
    (b"pending 1234567890123\n", Pairing("pending")),  # too long for a blink code
    ("pending \u0661\u0662\u0663".encode(), Pairing("pending")),  # digits, but not ASCII
    (b"", None), (b"\n", None), (b"bogus state\n", None), (b"\xff\xfe\x00", None),
    (b"x" * 10_000, None),
    (b" " * 300 + b"paired", None),  # beyond the 256 bytes read
])
def test_parse_pairing_trusts_nothing_beyond_the_first_short_line(data, pairing):
    assert parse_pairing(data) == pairing
