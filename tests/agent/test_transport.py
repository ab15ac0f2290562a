"""The agent's DNS transport: system resolver by default, a configured address otherwise."""

import socket
import threading

import dns.message
import dns.rdatatype
import dns.resolver
import pytest

from firmware.agent.transport import DnsTransport
from firmware.shared.errors import TransportError


def test_system_resolver_is_read_from_resolv_conf():
    try:
        expected = dns.resolver.Resolver().nameservers
    except dns.resolver.NoResolverConfiguration:
        pytest.skip("this machine has no /etc/resolv.conf nameserver")
    assert DnsTransport(None, 1.0).resolver.nameservers == expected


def serve_once(handler):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)

    def loop():
        try:
            data, addr = sock.recvfrom(4096)
        except TimeoutError:
            return
        reply = handler(dns.message.from_wire(data))
        if reply is not None:
            sock.sendto(reply.to_wire(), addr)
        sock.close()

    threading.Thread(target=loop, daemon=True).start()
    return sock.getsockname()[1]


def test_configured_resolver_returns_joined_txt_strings():
    def answer(q):
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 0, "IN", "TXT", '"ab" "cd"'))
        return r

    port = serve_once(answer)
    assert DnsTransport(("127.0.0.1", port), 2.0).exchange("x.c.test.") == b"abcd"


def test_nodata_and_timeout_are_transport_errors():
    port = serve_once(dns.message.make_response)
    with pytest.raises(TransportError, match="without data"):
        DnsTransport(("127.0.0.1", port), 2.0).exchange("x.c.test.")
    silent = serve_once(lambda q: None)
    with pytest.raises(TransportError, match="failed"):
        DnsTransport(("127.0.0.1", silent), 0.3).exchange("x.c.test.")
