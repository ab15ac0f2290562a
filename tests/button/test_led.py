"""LED patterns and backends: rhythms, the recording LED's file, sysfs against a fake tree."""

from __future__ import annotations

import logging
import math
import stat
import time
from pathlib import Path

import pytest

from firmware.button.led import NoLed, RecordingLed, SysfsLed, open_led
from firmware.button.pattern import DARK, Pattern, Show, rhythm
from firmware.config import Button


def blinks_per_digit(show: Show) -> list[int]:
    """Count the blinks between the long pauses of a blink code."""
    counts, n = [], 0
    for on, seconds in rhythm(show):
        n += on
        if not on and seconds >= 1.0:
            counts.append(n)
            n = 0
    return counts


def test_each_pattern_has_its_own_rhythm():
    shown = [rhythm(Show(p)) for p in Pattern] + [rhythm(Show(Pattern.PAIRING_PENDING, "12"))]
    assert len(set(shown)) == len(shown)
    assert rhythm(DARK) == ((False, math.inf),)
    assert rhythm(Show(Pattern.PAIRED)) == ((True, math.inf),)
    assert sum(s for _, s in rhythm(Show(Pattern.CONFIG))) == 1.0  # 1 Hz
    assert sum(s for _, s in rhythm(Show(Pattern.ERROR))) == pytest.approx(0.2)  # 5 Hz


def test_blink_code_blinks_each_digit_and_zero_as_ten():
    assert blinks_per_digit(Show(Pattern.PAIRING_PENDING, "3106")) == [3, 1, 10, 6]
    steps = rhythm(Show(Pattern.PAIRING_PENDING, "3106"))
    assert steps[-1] == (False, 3.0)  # a longer pause before the code repeats


@pytest.mark.parametrize("code", ["12a", "1" * 13, "\u0661"])
def test_a_blink_code_is_short_ascii_digits(code):
    with pytest.raises(ValueError, match="digits"):
        Show(Pattern.PAIRING_PENDING, code)


def test_recording_led_writes_the_pattern_name_atomically(tmp_path):
    path = tmp_path / "run" / "button" / "led"
    led = RecordingLed(path)
    led.show(Show(Pattern.CONFIG))
    assert path.read_text() == "config\n"
    led.show(Show(Pattern.PAIRING_PENDING, "123456"))
    assert path.read_text() == "pairing-pending 123456\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    led.close()
    assert path.read_text() == "dark\n"
    assert [p.name for p in path.parent.iterdir()] == ["led"]  # no temporary file left


def test_recording_led_failure_is_logged_once_and_never_raises(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    led = RecordingLed(blocker / "led")  # a directory that cannot exist
    with caplog.at_level(logging.WARNING):
        for pattern in Pattern:
            led.show(Show(pattern))
    assert len(caplog.records) == 1


def fake_led(tmp_path: Path, max_brightness: str = "255") -> Path:
    led = tmp_path / "leds" / "ACT"
    led.mkdir(parents=True)
    (led / "trigger").write_text("none [mmc0] timer heartbeat\n")
    (led / "brightness").write_text("0\n")
    (led / "max_brightness").write_text(f"{max_brightness}\n")
    return led


def test_sysfs_led_takes_the_led_from_its_trigger_and_sets_levels(tmp_path):
    d = fake_led(tmp_path)
    led = SysfsLed("ACT", root=tmp_path / "leds")
    assert (d / "trigger").read_text() == "none"
    assert (d / "brightness").read_text() == "0"
    led.show(Show(Pattern.PAIRED))
    assert (d / "brightness").read_text() == "255"
    led.show(DARK)
    assert (d / "brightness").read_text() == "0"
    assert led.thread is None  # steady levels need no thread
    led.close()


def test_sysfs_led_blinks_with_a_thread_and_is_dark_after_close(tmp_path):
    d = fake_led(tmp_path, max_brightness="1")
    led = SysfsLed("ACT", root=tmp_path / "leds")
    led.show(Show(Pattern.ERROR))  # 5 Hz: both levels within a fraction of a second
    seen: set[str] = set()
    deadline = time.monotonic() + 5.0
    while seen != {"0", "1"} and time.monotonic() < deadline:
        seen.add((d / "brightness").read_text() or "0")  # "" between truncate and write
        time.sleep(0.01)
    assert seen == {"0", "1"}
    thread = led.thread
    assert thread is not None and thread.is_alive()
    led.show(Show(Pattern.CONFIG))  # replaced, not added
    assert not thread.is_alive()
    led.close()
    assert led.thread is None and (d / "brightness").read_text() == "0"


def test_sysfs_led_without_the_led_logs_once_and_never_raises(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        led = SysfsLed("ACT", root=tmp_path / "leds")
        led.show(Show(Pattern.PAIRED))
        led.show(Show(Pattern.ERROR))
        time.sleep(0.3)
        led.close()
    assert len(caplog.records) == 1
    assert not (tmp_path / "leds").exists()  # never creates files where the LED should be


def test_open_led_picks_the_backend(tmp_path):
    record = tmp_path / "led"
    assert isinstance(open_led(Button(led="none"), record), NoLed)
    assert isinstance(open_led(Button(led="record"), record), RecordingLed)
    assert isinstance(open_led(Button(led="sysfs", led_name="nonexistent-led"), record),
                      SysfsLed)
