"""End to end on loopback: OpenSSH client -> SSH honeypot -> agent -> unbound -> console.

unbound runs with 0x20 letter-case randomisation and QNAME minimisation, as big public
resolvers do; the console must echo the question's case and survive the minimisation walk."""

from collections import Counter

import pytest

from scripts.lab import Lab


@pytest.fixture(scope="module")
def lab():
    with Lab(heartbeat=2) as running:
        yield running


def test_ssh_login_attempt_reaches_console_through_unbound(lab):
    assert lab.ssh_attempt("alice", "s3cret-pw") != 0  # login never succeeds
    event = lab.wait_event(lambda e: e["logtype"] == 4002 and e["logdata"]["USERNAME"] == "alice")
    assert event["logdata"]["PASSWORD"] == "s3cret-pw"
    assert event["logdata"]["REMOTEVERSION"].startswith("SSH-2.0-OpenSSH")
    assert event["logdata"]["LOCALVERSION"].startswith("SSH-2.0-")
    assert event["src_host"] == "127.0.0.1" and event["dst_port"] == lab.ssh_port
    assert event["node_id"] == "lab-device"
    masked = [e for e in lab.events(show_passwords=False) if e["logtype"] == 4002]
    assert masked and all(e["logdata"]["PASSWORD"] == "********" for e in masked)


def test_heartbeats_arrive(lab):
    lab.wait_for(lambda: "last_heartbeat=never" not in lab.console("devices"), 20, "heartbeat")


def test_console_down_then_up_every_event_exactly_once(lab):
    lab.kill("console")
    users = [f"outage{i}" for i in range(4)]
    for user in users:
        lab.ssh_attempt(user, "pw")
    lab.kill("agent")  # the queue must survive an agent restart too
    lab.start_agent()
    lab.start_console()
    lab.wait_event(lambda e: e["logdata"].get("USERNAME") == users[-1], timeout=60)
    lab.wait_for(lambda: set(users) <= {e["logdata"].get("USERNAME") for e in lab.events()},
                 30, "all outage events")  # one `console events` run per poll
    counts = Counter(e["logdata"].get("USERNAME") for e in lab.events() if e["logtype"] == 4002)
    assert all(counts[u] == 1 for u in users), counts
