"""Flood control with a controlled clock: bursts, windows, a bounded table, counts never lost."""

from firmware.agent.flood import FloodControl
from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event


def attempt(src: str, port: int = 22, code: EventCode = EventCode.SSH_LOGIN_ATTEMPT) -> Event:
    return Event(code, 0.0, src_host=src, src_port=40000, dst_host="10.0.0.2", dst_port=port)


def test_burst_then_counted_then_reported_when_the_window_ends():
    now = [100.0]
    fc = FloodControl(burst=2, window=60, most=10, clock=lambda: now[0])
    assert [len(fc.admit(attempt("10.0.0.7"))) for _ in range(5)] == [1, 1, 0, 0, 0]
    assert fc.admit(attempt("10.0.0.7", port=23)) != [], "another port is another group"
    assert fc.admit(attempt("10.0.0.7", code=EventCode.SSH_PUBKEY_ATTEMPT)) != []
    now[0] = 159.0
    assert fc.due() == []
    now[0] = 160.0
    (count,) = fc.due()
    assert (count.code, count.src_host, count.dst_port) == (EventCode.EVENTS_AGGREGATED,
                                                            "10.0.0.7", 22)
    assert count.data == {"CODE": 4002, "COUNT": 3, "SECONDS": 60}
    assert fc.admit(attempt("10.0.0.7")) != [], "a new window starts with a burst again"


def test_a_late_event_of_an_old_window_reports_it_and_starts_a_new_one():
    now = [0.0]
    fc = FloodControl(burst=1, window=10, most=10, clock=lambda: now[0])
    fc.admit(attempt("a"))
    fc.admit(attempt("a"))
    fc.admit(attempt("b"))
    now[0] = 11.0
    out = fc.admit(attempt("a"))
    assert [e.code for e in out] == [EventCode.EVENTS_AGGREGATED, EventCode.SSH_LOGIN_ATTEMPT]
    now[0] = 12.0
    assert fc.due() == [], "b held nothing: no count; a's new window is not over"
    assert list(fc.groups) == [("a", 4002, 22)]


def test_a_full_table_reports_early_and_stays_bounded():
    """nmap -D style: many sources.  Each source's first event goes out; the table never grows
    past its bound; a group pushed out reports its count at once."""
    fc = FloodControl(burst=1, window=60, most=3, clock=lambda: 0.0)
    fc.admit(attempt("s0"))
    fc.admit(attempt("s0"))  # held
    out = [e for i in range(1, 1000) for e in fc.admit(attempt(f"s{i}"))]
    assert len(fc.groups) == 3
    counts = [e for e in out if e.code == EventCode.EVENTS_AGGREGATED]
    assert [(e.src_host, e.data["COUNT"]) for e in counts] == [("s0", 1)]
    assert len(out) - len(counts) == 999, "every new source's first event"


def test_device_events_are_never_held_and_flush_reports_everything():
    fc = FloodControl(burst=1, window=60, most=10, clock=lambda: 5.0)
    own = Event(EventCode.BUTTON_PRESSED, 0.0)
    assert all(fc.admit(own) == [own] for _ in range(50))
    for _ in range(4):
        fc.admit(attempt("x"))
    (count,) = fc.flush()
    assert count.data["COUNT"] == 3 and not fc.groups and fc.held_total == 3


def test_an_ipv6_source_is_its_slash_64_and_its_count_says_so():
    now = [0.0]
    fc = FloodControl(burst=2, window=60, most=10, clock=lambda: now[0])
    sent = [fc.admit(attempt(f"2001:db8:7:9::{i:x}")) for i in range(1, 200)]
    assert sum(len(s) for s in sent) == 2, "rotating addresses inside one /64 is one source"
    assert fc.admit(attempt("2001:db8:7:a::1")) != [], "the next /64 is another source"
    now[0] = 60.0
    (count,) = fc.due()
    assert count.src_host == "2001:db8:7:9::" and count.data["PREFIX"] == 64
    assert count.data["COUNT"] == 197


def test_a_wall_clock_set_back_does_not_keep_counts_back():
    ticks, wall = [0.0], [1_800_000_000.0]
    fc = FloodControl(burst=1, window=60, most=10, clock=lambda: ticks[0], wall=lambda: wall[0])
    fc.admit(attempt("10.0.0.7"))
    fc.admit(attempt("10.0.0.7"))
    wall[0] -= 86_400  # a spoofed NTP answer: a day back
    ticks[0] = 61.0
    (count,) = fc.due()
    assert count.data["COUNT"] == 1 and count.time == wall[0]
