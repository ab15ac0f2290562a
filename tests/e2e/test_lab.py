"""End to end on loopback: OpenSSH client -> SSH honeypot -> agent -> unbound -> console.

unbound runs with 0x20 letter-case randomisation and QNAME minimisation, as big public
resolvers do; the console must echo the question's case and survive the minimisation walk."""

from collections import Counter

import pytest

from scripts.lab import Lab


@pytest.fixture(scope="module")
def lab():
    with Lab(heartbeat=2, health={"offline_grace": 1}) as running:
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


def test_a_silent_device_is_reported_offline_then_online(lab):
    """Kill the agent: the console raises DEVICE_OFFLINE by itself (3 intervals + grace), shows
    it in `console devices`, and DEVICE_ONLINE when heartbeats come back."""
    lab.wait_for(lambda: "status=ok" in lab.console("devices"), 30, "a healthy device")
    lab.kill("agent")
    lab.wait_event(lambda e: e["logtype"] == 1200 and e["node_id"] == "lab-device", timeout=40)
    assert "status=offline" in lab.console("devices")
    lab.start_agent()
    lab.wait_event(lambda e: e["logtype"] == 1201, timeout=40)
    lab.wait_for(lambda: "status=ok" in lab.console("devices"), 30, "status ok again")


def test_the_device_reports_its_listeners(lab):
    event = lab.wait_event(lambda e: e["logtype"] == 1103, timeout=30)
    assert str(lab.ssh_port) not in event["logdata"]["TCP"].split(), "127.0.0.1 is loopback"
