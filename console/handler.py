"""DNS message in, DNS message out: the glue between ``dnswire`` and the pure ``Console``.

Still no sockets, so the whole protocol behaviour (FORMERR for junk with a header, silence for
junk without one, REFUSED outside the zone, NODATA with an SOA inside it, TC above the size the
client accepts) is tested by calling ``respond`` with bytes.
"""

from __future__ import annotations

from console import dnswire as w
from console.core import Answer, Console, Kind
from firmware.errors import DecodeError

SOA_SERIAL = 1
_SOA_TTL = 0  # with minimum 0: resolvers keep no negative answers for the zone


class Responder:
    """Builds the response bytes for one request; returns None when silence is the answer."""

    def __init__(self, console: Console, zone: str, soa_mname: str, soa_rname: str) -> None:
        self.console = console
        mname, rname = w.encode_name(soa_mname), w.encode_name(soa_rname)
        soa = w.soa_rdata(mname, rname, SOA_SERIAL, 0)
        self._soa_authority = (w.rr(w.encode_name(zone), w.TYPE_SOA, _SOA_TTL, soa),)
        self._soa_answer = (w.rr(b"\xc0\x0c", w.TYPE_SOA, _SOA_TTL, soa),)
        self._ns_answer = (w.rr(b"\xc0\x0c", w.TYPE_NS, 3600, mname),)

    def respond(self, data: bytes, tcp: bool = False) -> bytes | None:
        head = w.peek_header(data)
        if head is None or head[1] & w.FLAG_QR:  # no header, or a response: never answer
            return None
        try:
            query = w.parse_query(data)
        except DecodeError:
            return w.build_error(head[0], head[1], w.RCODE_FORMERR)
        limit = w.TCP_MAX if tcp else w.udp_limit(query)
        if query.opcode != 0:
            return w.build_response(query, w.RCODE_NOTIMP, limit=limit)
        if query.edns_version != 0:
            return w.build_response(query, w.RCODE_BADVERS, limit=limit)
        if query.qclass != w.CLASS_IN:
            return w.build_response(query, w.RCODE_REFUSED, limit=limit)
        answer = self.console.handle(query.labels, query.qtype)
        return self._build(query, answer, limit)

    def _build(self, query: w.Query, answer: Answer, limit: int) -> bytes:
        if answer.kind is Kind.TXT:
            return w.build_response(query, answers=(w.txt_answer(answer.txt),), limit=limit)
        if answer.kind is Kind.REFUSED:
            return w.build_response(query, w.RCODE_REFUSED, limit=limit)
        if answer.kind is Kind.APEX and query.qtype == w.TYPE_SOA:
            return w.build_response(query, answers=self._soa_answer, limit=limit)
        if answer.kind is Kind.APEX and query.qtype == w.TYPE_NS:
            return w.build_response(query, answers=self._ns_answer, limit=limit)
        return w.build_response(query, authority=self._soa_authority, limit=limit)
