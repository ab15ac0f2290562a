"""The hand-written DNS codec: golden bytes, round trips, and cross-checks by dnslib/dnspython."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dnslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console import dnswire as w
from firmware.shared.errors import DecodeError

QUERY = bytes.fromhex(
    "1234 0100 0001 0000 0000 0000"  # id, RD, one question
    "02 6142 01 63 04 74657374 00"  # aB.c.test.
    "0010 0001"  # TXT IN
)
TXT_RESPONSE = bytes.fromhex(
    "1234 8500 0001 0001 0000 0000"  # QR AA RD, one answer
    "02 6142 01 63 04 74657374 00 0010 0001"  # the question, case kept
    "c00c 0010 0001 00000000 0003 02 6869"  # TXT, TTL 0, "hi"
)


def test_golden_query_and_txt_response() -> None:
    assert w.build_query([b"aB", b"c", b"test"], w.TYPE_TXT, qid=0x1234) == QUERY
    q = w.parse_query(QUERY)
    assert (q.id, q.labels, q.qtype, q.qclass, q.edns_size) == (
        0x1234, (b"aB", b"c", b"test"), 16, 1, None)
    assert w.build_response(q, answers=(w.txt_answer(b"hi"),)) == TXT_RESPONSE
    assert w.txt_response(q, b"hi") == TXT_RESPONSE


def test_golden_edns_query_and_opt_echo() -> None:
    data = QUERY[:11] + b"\x01" + QUERY[12:] + bytes.fromhex("00 0029 1000 00000000 0000")
    q = w.parse_query(data)
    assert q.edns_size == 4096 and w.udp_limit(q) == 1232
    out = w.build_response(q)
    assert out.endswith(bytes.fromhex("00 0029 04d0 00000000 0000"))  # we offer 1232


@st.composite
def names(draw: st.DrawFn) -> list[bytes]:
    alphabet = st.sampled_from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
    labels = draw(st.lists(st.lists(alphabet, min_size=1, max_size=63).map(bytes), max_size=6))
    total = sum(len(x) + 1 for x in labels) + 1
    return labels if total <= 255 else labels[:3]


@settings(max_examples=300, deadline=None)
@given(labels=names(), qtype=st.integers(0, 65535), qid=st.integers(0, 65535),
       edns=st.none() | st.integers(0, 65535))
def test_query_round_trip(labels: list[bytes], qtype: int, qid: int, edns: int | None) -> None:
    data = w.build_query(labels, qtype, qid=qid, edns_size=edns)
    q = w.parse_query(data)
    assert (list(q.labels), q.qtype, q.id, q.edns_size) == (labels, qtype, qid, edns)
    parsed = dnslib.DNSRecord.parse(data)  # an independent parser agrees
    assert parsed.header.id == qid and parsed.q.qtype == qtype


@settings(max_examples=200, deadline=None)
@given(labels=names(), payload=st.binary(max_size=2000), edns=st.none() | st.just(1232),
       tcp=st.booleans())
def test_txt_response_parses_in_dnslib_and_dnspython(
    labels: list[bytes], payload: bytes, edns: int | None, tcp: bool
) -> None:
    q = w.parse_query(w.build_query(labels, w.TYPE_TXT, qid=7, edns_size=edns))
    limit = w.TCP_MAX if tcp else w.udp_limit(q)
    out = w.build_response(q, answers=(w.txt_answer(payload),), limit=limit)
    assert w.txt_response(q, payload, limit) == out  # the hot path's one-step form
    assert out[12 : 12 + len(q.question)] == q.question  # byte-for-byte echo
    msg = dns.message.from_wire(out)
    if len(out) > 12 + len(q.question) + 11 + (11 if edns else 0):
        assert not msg.flags & w.FLAG_TC
        got = b"".join(msg.answer[0][0].strings)
        assert got == (payload or b"")
        assert msg.answer[0].ttl == 0
        rec = dnslib.DNSRecord.parse(out)
        assert b"".join(rec.rr[0].rdata.data) == payload
    else:
        assert msg.flags & w.FLAG_TC and len(payload) + len(q.question) + 40 > limit
    assert len(out) <= limit


def test_truncation_without_edns_at_512() -> None:
    q = w.parse_query(w.build_query([b"x", b"c", b"test"], w.TYPE_TXT))
    out = w.build_response(q, answers=(w.txt_answer(b"z" * 600),), limit=w.udp_limit(q))
    msg = dns.message.from_wire(out)
    assert msg.flags & dns.flags.TC and not msg.answer and len(out) < 512
    full = w.build_response(q, answers=(w.txt_answer(b"z" * 600),), limit=w.TCP_MAX)
    assert b"".join(dns.message.from_wire(full).answer[0][0].strings) == b"z" * 600


def test_soa_and_errors_parse() -> None:
    q = w.parse_query(w.build_query([b"Junk", b"C", b"tEst"], w.TYPE_A, edns_size=1232))
    soa = w.soa_rdata(w.encode_name("ns.c.test"), w.encode_name("hostmaster.c.test"), 1, 0)
    out = w.build_response(q, authority=(w.rr(w.encode_name("c.test"), w.TYPE_SOA, 0, soa),))
    msg = dns.message.from_wire(out)
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert msg.authority[0].rdtype == dns.rdatatype.SOA
    assert str(msg.question[0].name) == "Junk.C.tEst."
    refused = dns.message.from_wire(w.build_response(q, w.RCODE_REFUSED))
    assert refused.rcode() == dns.rcode.REFUSED
    bad = dns.message.from_wire(w.build_error(9, 0x0100, w.RCODE_FORMERR))
    assert bad.rcode() == dns.rcode.FORMERR and bad.id == 9
    badvers = dns.message.from_wire(w.build_response(q, w.RCODE_BADVERS))
    assert badvers.rcode() == dns.rcode.BADVERS


@pytest.mark.parametrize("data", [
    b"", b"\x00" * 11,
    QUERY[:-1],  # truncated question
    QUERY[:4] + b"\x00\x02" + QUERY[6:],  # two questions claimed
    QUERY[:12] + b"\xc0\x0c" + QUERY[-4:],  # compression in the question
    QUERY[:12] + b"\x40" + b"a" * 64 + b"\x00" + QUERY[-4:],  # extended label type
    QUERY + b"\x00",  # trailing garbage
    QUERY[:11] + b"\x01" + QUERY[12:] + b"\x00\x00\x29",  # truncated OPT
    QUERY[:12] + (b"\x3f" + b"a" * 63) * 4 + b"\x00" + QUERY[-4:],  # name over 255
])
def test_malformed_queries_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        w.parse_query(data)


@settings(max_examples=2000, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    try:
        w.parse_query(data)
    except DecodeError:
        pass


@settings(max_examples=500, deadline=None)
@given(prefix=st.integers(0, len(QUERY)), junk=st.binary(max_size=40))
def test_mutated_queries_only_ever_raise_decode_error(prefix: int, junk: bytes) -> None:
    try:
        w.parse_query(QUERY[:prefix] + junk + QUERY[prefix:])
    except DecodeError:
        pass


def name_of(size: int) -> bytes:
    """A wire name of exactly ``size`` bytes (root byte included): 63-byte labels, then one
    shorter label to make up the rest."""
    body = size - 1
    labels = [b"a" * 63] * (body // 64)
    rest = body % 64
    if rest:
        labels.append(b"b" * (rest - 1))
    return b"".join(bytes((len(x),)) + x for x in labels) + b"\x00"


def test_names_up_to_255_bytes_parse_and_one_byte_more_does_not() -> None:
    for size in (254, 255):
        name = name_of(size)
        assert len(name) == size
        assert len(w.parse_query(QUERY[:12] + name + QUERY[-4:]).question) == size + 4
    with pytest.raises(DecodeError, match="longer than 255"):
        w.parse_query(QUERY[:12] + name_of(256) + QUERY[-4:])


@pytest.mark.parametrize("labels", [5, 50, 1000])
def test_a_long_name_is_read_no_further_than_255_bytes(labels: int) -> None:
    data = QUERY[:12] + (b"\x3f" + b"a" * 63) * labels + b"\x00" + QUERY[-4:]
    with pytest.raises(DecodeError, match="longer than 255") as info:
        w.parse_query(data)
    assert info.value.offset < w.HEADER_LEN + w.MAX_NAME_WIRE  # stopped inside the bound


def test_max_query_holds_the_longest_query_with_common_options() -> None:
    """12 header + 255 name + 4 + OPT (11) with a cookie (4 + 8 + 32), client subnet for an
    IPv6 /128 (4 + 4 + 16) and NSID (4), padded to exactly MAX_QUERY: it parses."""
    cookie = b"\x00\x0a\x00\x28" + bytes(40)
    subnet = b"\x00\x08\x00\x14" + b"\x00\x02\x80\x00" + bytes(16)
    nsid = b"\x00\x03\x00\x00"
    head = QUERY[:11] + b"\x01" + name_of(255) + QUERY[-4:]
    options = cookie + subnet + nsid
    assert len(head) + 11 + len(options) == 354  # what the bound must hold at least
    pad = w.MAX_QUERY - len(head) - 11 - len(options)
    options += b"\x00\x0c" + (pad - 4).to_bytes(2, "big") + bytes(pad - 4)
    data = head + b"\x00" + bytes.fromhex("0029 04d0 00000000") + len(options).to_bytes(
        2, "big") + options
    assert len(data) == w.MAX_QUERY == 512
    q = w.parse_query(data)
    assert q.edns_size == 1232 and len(q.question) == 259
    assert dns.message.from_wire(data).edns == 0  # and an independent parser agrees
