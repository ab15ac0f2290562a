"""Wire bytes in, wire bytes out: the console's DNS behaviour without sockets."""

from __future__ import annotations

import random

import dns.message
import dns.rcode
import dns.rdatatype
import dnslib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.protocol.messages import HeartbeatAck
from tests.console.conftest import Rig
from tests.console.device import TXT, A, scramble_case, txt_of, wire_query

SHARED = [HealthCheck.function_scoped_fixture]


def test_beacon_through_the_wire_with_scrambled_case(rig: Rig) -> None:
    header, labels = rig.device.heartbeat()
    mixed = scramble_case(labels, random.Random(3))
    query = wire_query(mixed, TXT, qid=0xBEEF, edns=1232)
    out = rig.responder.respond(query)
    assert out is not None
    msg = dns.message.from_wire(out)
    assert msg.id == 0xBEEF and msg.rcode() == dns.rcode.NOERROR
    assert out[12 : 12 + len(query) - 12 - 11] == query[12:-11]  # question echoed byte for byte
    assert str(msg.question[0].name) == ".".join(mixed) + "."
    txt = txt_of(out)
    assert txt is not None and isinstance(rig.device.open(header, txt), HeartbeatAck)
    again = rig.responder.respond(wire_query(mixed, TXT, qid=0xBEEF, edns=1232))
    assert again == out  # a duplicate is answered byte-identically
    rec = dnslib.DNSRecord.parse(out)
    assert rec.rr[0].ttl == 0 and rec.header.aa == 1


def test_nodata_with_soa_for_probes_and_junk_under_the_zone(rig: Rig) -> None:
    for labels, qtype in ((["x1", "C", "tEsT"], A), (["junk!", "c", "test"], TXT),
                          (["a" * 63, "b" * 63, "c", "test"], TXT), (["c", "test"], A)):
        out = rig.responder.respond(wire_query(labels, qtype))
        assert out is not None
        msg = dns.message.from_wire(out)
        assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
        assert msg.authority[0].rdtype == dns.rdatatype.SOA
        assert msg.authority[0].ttl == 0


def test_apex_soa_and_ns(rig: Rig) -> None:
    soa = dns.message.from_wire(rig.responder.respond(wire_query(["C", "test"], 6)) or b"")
    assert soa.answer[0].rdtype == dns.rdatatype.SOA
    ns = dns.message.from_wire(rig.responder.respond(wire_query(["c", "test"], 2)) or b"")
    assert str(ns.answer[0][0].target) == "ns.c.test."


def test_refused_outside_the_zone_and_for_other_classes(rig: Rig) -> None:
    out = rig.responder.respond(wire_query(["www", "example", "com"], A)) or b""
    assert dns.message.from_wire(out).rcode() == dns.rcode.REFUSED
    chaos = bytearray(wire_query(["version", "bind"], TXT))
    chaos[-1] = 3
    assert dns.message.from_wire(rig.responder.respond(bytes(chaos)) or b"").rcode() == \
        dns.rcode.REFUSED


def test_junk_with_a_header_is_formerr_without_is_silence(rig: Rig) -> None:
    assert rig.responder.respond(b"") is None
    assert rig.responder.respond(b"\x01" * 11) is None
    out = rig.responder.respond(b"\x12\x34\x01\x00" + b"\xff" * 20)
    assert out is not None
    msg = dns.message.from_wire(out)
    assert msg.id == 0x1234 and msg.rcode() == dns.rcode.FORMERR


def test_responses_and_other_opcodes(rig: Rig) -> None:
    query = bytearray(wire_query(["x", "c", "test"], A))
    query[2] |= 0x80  # QR: a response sent to us is never answered (no reflection loops)
    assert rig.responder.respond(bytes(query)) is None
    query[2] = 0x28  # opcode UPDATE
    out = rig.responder.respond(bytes(query)) or b""
    assert out[:2] == query[:2] and out[2] & 0x80 and out[3] & 0x0F == dns.rcode.NOTIMP


@settings(max_examples=2000, deadline=None, suppress_health_check=SHARED)
@given(data=st.binary(max_size=700), tcp=st.booleans())
def test_random_bytes_never_raise(rig: Rig, data: bytes, tcp: bool) -> None:
    out = rig.responder.respond(data, tcp)
    if out is not None:
        dns.message.from_wire(out, question_only=True)


@settings(max_examples=500, deadline=None, suppress_health_check=SHARED)
@given(pos=st.integers(0, 200), junk=st.binary(min_size=1, max_size=30))
def test_mutated_beacons_never_raise(rig: Rig, pos: int, junk: bytes) -> None:
    _, labels = rig.device.heartbeat()
    query = wire_query(labels, TXT)
    pos %= len(query)
    rig.responder.respond(query[:pos] + junk + query[pos + len(junk) :])
