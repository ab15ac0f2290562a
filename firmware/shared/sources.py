"""Whom a source address stands for, the same way wherever sources are counted or grouped.

An IPv4 address is one source.  An IPv6 host is normally given a whole /64 and can send from
any address in it, so per-address limits and aggregation would be no limit at all: an IPv6
source is its /64.  Used by the services' connection guard and the agent's flood control.
"""

from __future__ import annotations

import ipaddress


def source_key(host: str) -> str:
    """``host`` itself for IPv4 (and anything that is not an address), its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return host
