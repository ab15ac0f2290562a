"""The signer's air gap, checked rather than trusted: no network interface but loopback is up.

Every command that touches a private key calls ``require_offline`` first.  It asks the kernel
for the interfaces of the signer's own network namespace and their flags (``if_nameindex`` and
the SIOCGIFFLAGS ioctl; /sys/class/net would show the namespace sysfs was mounted in), so a
cable plugged in, a Wi-Fi adapter brought up or a USB tether is seen whatever the desktop says.
Tests run the signer inside network namespaces of their own (``unshare -n``): one with nothing
up, one with a veth interface up; no bypass flag.
"""

from __future__ import annotations

import fcntl
import socket
import struct

from firmware.shared.errors import EnvironmentFault

SIOCGIFFLAGS = 0x8913
IFF_UP, IFF_LOOPBACK = 0x1, 0x8


def interfaces_up() -> list[str]:
    """Interfaces of this network namespace, loopback left out, that are up (unreadable ones
    count as up: fail closed)."""
    up = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS,
                                  struct.pack("16sH14x", name.encode()[:15], 0))
                flags = struct.unpack("16sH14x", raw)[1]
            except OSError:
                up.append(name)
                continue
            if flags & IFF_UP and not flags & IFF_LOOPBACK:
                up.append(name)
    return sorted(up)


def require_offline() -> None:
    up = interfaces_up()
    if up:
        raise EnvironmentFault(
            f"network interface(s) up: {', '.join(up)}; private keys are used only offline",
            hint="unplug the cable, switch Wi-Fi off (or: ip link set DEV down) and run again "
                 "(docs/ceremony.md)")
