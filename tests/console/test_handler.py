"""Wire bytes in, wire bytes out: the console's DNS behaviour without sockets (fake core)."""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dnslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.handler import Responder
from tests.console.fakes import NS, SOA, TXT, A, FakeCore, query

BEACON = "ABcdEFGhiJkLmNOPqRstUvWxyZ0123.ack-aBCdeFgHIJKlmnopQRStUV.x1.C.tEsT"


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def responder(core: FakeCore) -> Responder:
    return Responder(core, "c.test", "ns.c.test", "hostmaster.c.test")


def answer(responder: Responder, data: bytes, tcp: bool = False) -> dns.message.Message:
    wire = responder.respond(data, tcp).wire
    assert wire is not None
    return dns.message.from_wire(wire)


def test_txt_echoes_the_question_byte_for_byte_and_says_it_needs_a_commit(
    responder: Responder,
) -> None:
    q = query("ack-" + BEACON, TXT, qid=0xBEEF, edns=1232)
    out = responder.respond(q)
    assert out.wire is not None and out.needs_commit
    msg = dns.message.from_wire(out.wire)
    assert msg.id == 0xBEEF and msg.rcode() == dns.rcode.NOERROR
    assert out.wire[12 : len(q) - 11] == q[12:-11]  # question echoed byte for byte
    assert str(msg.question[0].name) == "ack-" + BEACON + "."
    assert b"".join(msg.answer[0][0].strings) == b"ack 1"
    rec = dnslib.DNSRecord.parse(out.wire)
    assert rec.rr[0].ttl == 0 and rec.header.aa == 1
    plain = responder.respond(query("txt.c.test", TXT))
    assert plain.wire is not None and not plain.needs_commit


def test_nodata_with_soa_for_probes_and_junk_under_the_zone(responder: Responder) -> None:
    for name, qtype in (("x1.C.tEsT", A), ("junk!.c.test", TXT),
                        ("a" * 63 + "." + "b" * 63 + ".c.test", TXT)):
        out = responder.respond(query(name, qtype))
        assert out.wire is not None and not out.needs_commit
        msg = dns.message.from_wire(out.wire)
        assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
        assert msg.authority[0].rdtype == dns.rdatatype.SOA and msg.authority[0].ttl == 0


def test_apex_soa_and_ns(responder: Responder) -> None:
    assert answer(responder, query("C.test", SOA)).answer[0].rdtype == dns.rdatatype.SOA
    ns = answer(responder, query("c.test", NS))
    assert str(ns.answer[0][0].target) == "ns.c.test."


def test_refused_outside_the_zone_and_for_other_classes(responder: Responder) -> None:
    assert answer(responder, query("www.example.com", A)).rcode() == dns.rcode.REFUSED
    chaos = answer(responder, query("version.bind", TXT, qclass=3))
    assert chaos.rcode() == dns.rcode.REFUSED


def test_servfail_from_the_core_echoes_the_question(responder: Responder) -> None:
    q = query("sick.c.test", TXT, qid=77, edns=1232)
    out = responder.respond(q)
    assert out.wire is not None and not out.needs_commit
    msg = dns.message.from_wire(out.wire)
    assert msg.id == 77 and msg.rcode() == dns.rcode.SERVFAIL and msg.edns == 0
    assert out.wire[12 : len(q) - 11] == q[12:-11]


def test_servfail_fallback_echoes_what_it_can(responder: Responder) -> None:
    q = query("ack.c.test", TXT, qid=5)
    whole = dns.message.from_wire(responder.servfail(q) or b"")
    assert whole.id == 5 and whole.rcode() == dns.rcode.SERVFAIL
    assert str(whole.question[0].name) == "ack.c.test."
    bare = dns.message.from_wire(responder.servfail(b"\x00\x06\x01\x00" + b"\xff" * 20) or b"")
    assert bare.id == 6 and bare.rcode() == dns.rcode.SERVFAIL and not bare.question
    assert responder.servfail(b"\x01" * 11) is None  # no header: nobody to answer
    assert responder.servfail(b"\x00\x07\x81\x00" + q[4:]) is None  # a response


def test_junk_with_a_header_is_formerr_without_is_silence(responder: Responder) -> None:
    assert responder.respond(b"").wire is None
    assert responder.respond(b"\x01" * 11).wire is None
    msg = answer(responder, b"\x12\x34\x01\x00" + b"\xff" * 20)
    assert msg.id == 0x1234 and msg.rcode() == dns.rcode.FORMERR


def test_responses_are_never_answered_and_other_opcodes_are_notimp(
    responder: Responder,
) -> None:
    q = bytearray(query("x.c.test", A))
    q[2] |= 0x80  # QR: a response sent to us is never answered (no reflection loops)
    assert responder.respond(bytes(q)).wire is None
    q[2] = 0x10  # opcode STATUS
    msg = answer(responder, bytes(q))
    assert msg.opcode() == dns.opcode.STATUS and msg.rcode() == dns.rcode.NOTIMP
    assert msg.id == 0x1234 and msg.flags & dns.flags.QR


def as_query(wire: bytes) -> bytes:
    """Opcode cleared: dnspython reads an UPDATE's sections as zone and prerequisites."""
    return wire[:2] + bytes((wire[2] & 0x87,)) + wire[3:]


def _reads_whole(data: bytes, asked: dns.message.Message) -> bool:
    """dnspython reads the whole query (no trailing bytes) and its question in plain labels."""
    plain = asked.question[0].name.to_wire() or b""
    if data[12 : 12 + len(plain)].lower() != plain.lower():
        return False  # compressed: the console refuses compression in the question
    try:
        dns.message.from_wire(as_query(data))
    except (dns.exception.DNSException, ValueError, IndexError):
        return False
    return True


def assert_well_formed_reply(data: bytes, wire: bytes | None) -> None:
    """The reply to ``data``: silence only without a header or for a response; otherwise a
    complete DNS response with the query's id, FORMERR whenever an independent parser
    (dnspython) cannot read the query's question, and that question echoed byte for byte
    otherwise.  (The console skips additional records it does not need; dnspython rejects
    some, e.g. of type 0, so only the question is compared.)"""
    if len(data) < 12 or data[2] & 0x80:
        assert wire is None
        return
    assert wire is not None
    assert wire[2] & 0x78 == data[2] & 0x78  # the opcode is echoed
    reply = dns.message.from_wire(as_query(wire))  # the whole message parses, not just a header
    assert reply.id == int.from_bytes(data[:2], "big") and reply.flags & dns.flags.QR
    try:
        asked: dns.message.Message | None = dns.message.from_wire(as_query(data),
                                                                  question_only=True)
    except (dns.exception.DNSException, ValueError, IndexError):
        asked = None
    if asked is None or len(asked.question) != 1:
        assert reply.rcode() == dns.rcode.FORMERR
    elif _reads_whole(data, asked):  # a query dnspython reads whole is never FORMERR
        assert reply.rcode() != dns.rcode.FORMERR, "a readable query got FORMERR"
    if reply.rcode() == dns.rcode.FORMERR:
        assert not reply.question
        return
    assert asked is not None
    end = 12 + len(asked.question[0].name.to_wire() or b"") + 4
    assert wire[12:end] == data[12:end]  # the question, byte for byte
    assert reply.question[0].name.to_text() == asked.question[0].name.to_text()
    if data[2] & 0x78:
        assert reply.rcode() == dns.rcode.NOTIMP
    else:
        assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.REFUSED, dns.rcode.SERVFAIL,
                                 dns.rcode.BADVERS)


@settings(max_examples=2000, deadline=None)
@given(data=st.binary(max_size=700), tcp=st.booleans())
def test_random_bytes_get_a_well_formed_reply_or_silence(data: bytes, tcp: bool) -> None:
    responder = Responder(FakeCore(), "c.test", "ns.c.test", "hostmaster.c.test")
    assert_well_formed_reply(data, responder.respond(data, tcp).wire)


@settings(max_examples=1000, deadline=None)
@given(pos=st.integers(0, 200), junk=st.binary(min_size=1, max_size=30), edns=st.booleans())
def test_mutated_beacons_get_a_well_formed_reply(pos: int, junk: bytes, edns: bool) -> None:
    responder = Responder(FakeCore(), "c.test", "ns.c.test", "hostmaster.c.test")
    q = query(BEACON, TXT, edns=1232 if edns else None)
    pos %= len(q)
    mutated = q[:pos] + junk + q[pos + len(junk) :]
    assert_well_formed_reply(mutated, responder.respond(mutated).wire)


def test_mutated_real_beacons_leave_the_real_console_answering(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The same mutations against the real core: every reply well formed, nothing raises, and
    a device's next honest heartbeat is still answered."""
    from tests.console.conftest import make_rig
    from tests.console.device import wire_query
    rig = make_rig(tmp_path_factory.mktemp("mutated") / "console.db")
    _, labels = rig.device.heartbeat()
    beacon = wire_query(labels, edns=1232)

    @settings(max_examples=500, deadline=None)
    @given(pos=st.integers(0, len(beacon) - 1), junk=st.binary(min_size=1, max_size=30))
    def mutate(pos: int, junk: bytes) -> None:
        mutated = beacon[:pos] + junk + beacon[pos + len(junk) :]
        assert_well_formed_reply(mutated, rig.responder.respond(mutated).wire)

    mutate()
    _, labels = rig.device.heartbeat()
    out = rig.responder.respond(wire_query(labels))
    assert out.wire is not None and dns.message.from_wire(out.wire).answer
    rig.store.close()
