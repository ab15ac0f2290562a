"""DNS message in, DNS message out: the glue between ``dnswire`` and the pure console core.

Still no sockets, so the whole protocol behaviour (FORMERR for junk with a header, silence for
junk without one and for responses, REFUSED outside the zone, NODATA with an SOA inside it,
SERVFAIL when the core cannot answer, TC above the size the client accepts) is tested by calling
``respond`` with bytes.

Every answer also says whether it acknowledges something the core still has to make durable
(``needs_commit``): the server commits once per batch of queries and only then sends, and
sends ``servfail`` instead of an acknowledgement whose commit failed.  So nothing a device is
told it may forget is ever only in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from console import dnswire as w
from console.core import Kind
from firmware.shared.errors import DecodeError

SOA_SERIAL = 1
_SOA_TTL = 0  # with minimum 0: resolvers keep no negative answers for the zone


class CoreAnswer(Protocol):
    """What the core says about one query name (``console.core.Answer``)."""

    @property
    def kind(self) -> Kind: ...
    @property
    def txt(self) -> bytes: ...
    @property
    def durable(self) -> bool: ...  # it acknowledges something that must be on disk first


class Core(Protocol):
    """The pure core as the DNS layers see it (``console.core.Console``)."""

    def handle(self, labels: Sequence[bytes], qtype: int) -> CoreAnswer: ...
    def commit(self) -> bool: ...  # make durable everything handled since the last call


class Response(NamedTuple):
    """The bytes to send back (None: silence) and whether they may leave only after a commit."""

    wire: bytes | None
    needs_commit: bool = False


SILENCE = Response(None)


class Responder:
    """Builds the response for one request."""

    def __init__(self, core: Core, zone: str, soa_mname: str, soa_rname: str) -> None:
        self.core = core
        mname, rname = w.encode_name(soa_mname), w.encode_name(soa_rname)
        soa = w.soa_rdata(mname, rname, SOA_SERIAL, 0)
        self._soa_authority = (w.rr(w.encode_name(zone), w.TYPE_SOA, _SOA_TTL, soa),)
        self._soa_answer = (w.rr(b"\xc0\x0c", w.TYPE_SOA, _SOA_TTL, soa),)
        self._ns_answer = (w.rr(b"\xc0\x0c", w.TYPE_NS, 3600, mname),)

    def respond(self, data: bytes, tcp: bool = False) -> Response:
        head = w.peek_header(data)
        if head is None or head[1] & w.FLAG_QR:  # no header, or a response: never answer
            return SILENCE
        try:
            query = w.parse_query(data)
        except DecodeError:
            return Response(w.build_error(head[0], head[1], w.RCODE_FORMERR))
        limit = w.TCP_MAX if tcp else w.udp_limit(query)
        if query.opcode != 0:
            return Response(w.build_response(query, w.RCODE_NOTIMP, limit=limit))
        if query.edns_version != 0:
            return Response(w.build_response(query, w.RCODE_BADVERS, limit=limit))
        if query.qclass != w.CLASS_IN:
            return Response(w.build_response(query, w.RCODE_REFUSED, limit=limit))
        answer = self.core.handle(query.labels, query.qtype)
        return Response(self._build(query, answer, limit), answer.durable)

    def servfail(self, data: bytes) -> bytes | None:
        """SERVFAIL for ``data``: the question echoed when it parses, a bare header otherwise.

        None only where ``respond`` is silent too (no header, or a response).
        """
        head = w.peek_header(data)
        if head is None or head[1] & w.FLAG_QR:
            return None
        try:
            query = w.parse_query(data)
        except DecodeError:
            return w.build_error(head[0], head[1], w.RCODE_SERVFAIL)
        return w.build_response(query, w.RCODE_SERVFAIL)  # header + question fit in 512

    def _build(self, query: w.Query, answer: CoreAnswer, limit: int) -> bytes:
        if answer.kind is Kind.TXT:
            return w.txt_response(query, answer.txt, limit)
        if answer.kind is Kind.REFUSED:
            return w.build_response(query, w.RCODE_REFUSED, limit=limit)
        if answer.kind is Kind.SERVFAIL:
            return w.build_response(query, w.RCODE_SERVFAIL, limit=limit)
        if answer.kind is Kind.APEX and query.qtype == w.TYPE_SOA:
            return w.build_response(query, answers=self._soa_answer, limit=limit)
        if answer.kind is Kind.APEX and query.qtype == w.TYPE_NS:
            return w.build_response(query, answers=self._ns_answer, limit=limit)
        return w.build_response(query, authority=self._soa_authority, limit=limit)
