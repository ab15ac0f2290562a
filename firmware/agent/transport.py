"""Sending one query name to the console through DNS and returning the TXT answer's bytes.

Uses dnspython (Debian: python3-dnspython) through the system resolver from /etc/resolv.conf
or a configured HOST:PORT.  It handles TC -> TCP and several nameservers; retries with new
counters are the caller's job, so this makes exactly one attempt per call.
"""

from __future__ import annotations

from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from firmware.shared.errors import TransportError


class Transport(Protocol):
    def exchange(self, qname: str) -> bytes:
        """Send a TXT query for ``qname``; return the concatenated TXT strings of the answer."""
        ...


class DnsTransport:
    """The real DNS path: system resolver or a configured resolver address."""

    def __init__(self, resolver: tuple[str, int] | None, timeout: float) -> None:
        if resolver is None:
            try:
                self.resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise TransportError("no resolver in /etc/resolv.conf",
                                     hint="set [console] resolver = \"HOST:PORT\"") from None
        else:
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [resolver[0]]
            self.resolver.port = resolver[1]
        self.resolver.use_edns(0, 0, 1232)
        self.resolver.timeout = timeout
        self.resolver.lifetime = timeout
        self.resolver.cache = None

    def exchange(self, qname: str) -> bytes:
        name = dns.name.from_text(qname)
        try:
            answer = self.resolver.resolve(name, dns.rdatatype.TXT, raise_on_no_answer=False,
                                           search=False)
        except dns.exception.DNSException as exc:
            raise TransportError(f"DNS query failed: {type(exc).__name__}: {exc}") from None
        if answer.rrset is None:
            raise TransportError("console answered without data (frame rejected or lost)")
        out = b""
        for rdata in answer.rrset:
            out += b"".join(rdata.strings)
        return out
