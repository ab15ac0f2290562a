"""The press detector: debounce, short and long presses, the press held at power-on."""

from __future__ import annotations

from collections.abc import Callable

from firmware.button.press import Press, PressDetector

DEBOUNCE, LONG = 0.05, 3.0
STEP = 0.01


def sample(level: Callable[[float], bool], until: float,
           detector: PressDetector | None = None) -> list[tuple[float, Press]]:
    """Feed ``level(t)`` every 10 ms from 0 to ``until``; the presses with their times."""
    det = detector or PressDetector(DEBOUNCE, LONG)
    out = []
    for i in range(round(until / STEP) + 1):
        t = i * STEP
        out += [(t, p) for p in det.feed(t, level(t))]
    return out


def held(start: float, end: float) -> Callable[[float], bool]:
    return lambda t: start <= t < end


def test_short_press_is_reported_on_release():
    got = sample(held(1.0, 1.5), 3.0)
    assert [p for _, p in got] == [Press.SHORT]
    assert 1.5 <= got[0][0] <= 1.5 + DEBOUNCE + STEP


def test_long_press_is_reported_once_while_still_held():
    got = sample(held(1.0, 6.0), 8.0)
    assert [p for _, p in got] == [Press.LONG]
    assert 4.0 <= got[0][0] < 4.0 + 2 * STEP  # three seconds after the press began, not on release


def test_nothing_on_release_after_a_long_press_and_the_next_press_counts():
    got = sample(lambda t: 1.0 <= t < 5.0 or 6.0 <= t < 6.3, 7.0)
    assert [p for _, p in got] == [Press.LONG, Press.SHORT]


def test_bounces_shorter_than_debounce_are_ignored():
    chatter = lambda t: any(k * 0.06 <= t - 1.0 < k * 0.06 + 0.03 for k in range(10))  # noqa: E731
    assert sample(chatter, 3.0) == []


def test_chatter_at_the_start_of_a_press_makes_one_short_press():
    level = lambda t: (1.0 <= t < 1.02) or (1.04 <= t < 1.8)  # noqa: E731
    assert [p for _, p in sample(level, 3.0)] == [Press.SHORT]


def test_a_dropout_inside_a_long_press_does_not_split_it():
    level = lambda t: 1.0 <= t < 6.0 and not 2.0 <= t < 2.03  # noqa: E731
    assert [p for _, p in sample(level, 7.0)] == [Press.LONG]


def test_press_held_at_power_on_reports_nothing_and_the_next_one_does():
    det = PressDetector(DEBOUNCE, LONG, held=True)
    got = sample(lambda t: t < 5.0 or 6.0 <= t < 6.2, 7.0, det)
    assert [p for _, p in got] == [Press.SHORT]


def test_tick_reports_the_long_press_without_new_samples():
    det = PressDetector(DEBOUNCE, LONG)
    assert det.feed(0.0, True) == []
    assert det.tick(0.1) == []  # the press settles: it began at 0.0
    assert det.deadline() == 3.0
    assert det.tick(2.99) == []
    assert det.tick(3.0) == [Press.LONG]
    assert det.tick(9.0) == [] and det.deadline() is None


def test_a_press_that_outlasts_long_press_between_samples_is_long():
    det = PressDetector(DEBOUNCE, LONG)
    det.feed(0.0, True)
    det.feed(0.1, True)
    assert det.feed(5.0, False) == [Press.LONG]  # held 5 s as far as anyone knows
    assert det.feed(5.1, False) == []


def test_deadline_is_the_end_of_the_debounce_while_a_change_is_pending():
    det = PressDetector(DEBOUNCE, LONG)
    det.feed(1.0, True)
    assert det.deadline() == 1.0 + DEBOUNCE
