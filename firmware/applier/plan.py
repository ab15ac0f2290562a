"""What a set of signed settings means for the running system, pure: files and a host name.

Settings never touch the read-only root.  Each boot, and each apply in config mode, turns the
values into run-time files that override the image's defaults: a drop-in for the SSH honeypot's
listening socket (its port) or masks for its units (disabled), drop-ins for the ports of the
other honeypots' sockets, a drop-in for ``eth0``'s network (a static address, the DHCP host
name and vendor class, the MAC address), the IP TTL, and ``settings.toml``, the last
configuration layer the device's services read.  A personality
(:mod:`firmware.protocol.personality`) is expanded first, into the settings it stands for.  The
honeypots other than SSH are off in the image: a plan names those the settings enable, and
the applier starts their sockets.  Two plans compare by their files and that set, so applying
changes only the units whose files changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware.protocol.personality import LINUX_TTL, PERSONALITIES, expand, mac_address
from firmware.protocol.settings import OPTIONAL_SERVICES, SOCKET_SERVICES

MASK = "/dev/null"  # a file whose content is this is a symlink to /dev/null: the unit is masked
SSH_UNITS = ("system/coalmine-ssh.socket", "system/coalmine-ssh.service")
NETWORK_DROPIN = "network/20-wired.network.d/50-coalmine-settings.conf"


def socket_dropin(service: str) -> str:
    return f"system/coalmine-{service}.socket.d/50-coalmine-settings.conf"


SSH_SOCKET_DROPIN = socket_dropin("ssh")


# every file a plan may hold
MANAGED = (SSH_SOCKET_DROPIN, *SSH_UNITS, NETWORK_DROPIN,
           *(socket_dropin(name) for name in SOCKET_SERVICES))


@dataclass(frozen=True)
class Plan:
    """Run-time files (path under /run/systemd -> content, or MASK) and the settings layer."""

    files: Mapping[str, str] = field(default_factory=dict)
    layer: str = ""
    hostname: str | None = None
    services: frozenset[str] = frozenset()  # the honeypots off in the image that run
    ttl: int = LINUX_TTL  # the IP TTL of what the device sends

    def changed(self, other: Plan) -> set[str]:
        """Managed paths whose content differs between the two plans."""
        return {p for p in MANAGED if self.files.get(p) != other.files.get(p)}

    def restart(self, other: Plan) -> set[str]:
        """The honeypots off in the image to stop and start again (or only stop) going from
        ``other`` to this plan: turned on or off, or their port or settings changed."""
        return {name for name in OPTIONAL_SERVICES
                if (name in self.services) != (name in other.services)
                or (name in self.services and (
                    self.files.get(socket_dropin(name)) != other.files.get(socket_dropin(name))
                    or _table(self.layer, name) != _table(other.layer, name)))}

    def ssh_restart(self, other: Plan) -> bool:
        """The SSH honeypot must restart going from ``other``: its units, its socket's port or
        what it reads of its settings (a personality's version string) changed."""
        return (any(p.startswith("system/coalmine-ssh") for p in self.changed(other))
                or _table(self.layer, "ssh") != _table(other.layer, "ssh"))

    @property
    def ssh_enabled(self) -> bool:
        return SSH_UNITS[0] not in self.files


def plan(values: Mapping[str, Any], device_id: bytes = b"") -> Plan:
    """The plan for validated settings values (dotted key -> value) of the device ``device_id``
    (its MAC address under a personality comes from it); {} is the image's default."""
    chosen = PERSONALITIES.get(values.get("device.personality", ""))
    values = expand(values)
    files: dict[str, str] = {}
    layer: list[str] = []
    if values.get("services.ssh.enabled") is False:
        files.update(dict.fromkeys(SSH_UNITS, MASK))
    services = frozenset(name for name in OPTIONAL_SERVICES
                         if values.get(f"services.{name}.enabled") is True)
    for name in ("ssh", *OPTIONAL_SERVICES):
        port = values.get(f"services.{name}.port")
        if port is not None:
            files[socket_dropin(name)] = (f"# coalmine signed settings: the {name} honeypot's "
                                          f"port\n[Socket]\nListenStream=\nListenStream={port}\n")
        # what the service reads of its settings
        table = sorted((k.rpartition(".")[2], v) for k, v in values.items()
                       if k.startswith(f"services.{name}."))
        if table:
            layer += [f"[services.{name}]", *(f"{k} = {_toml(v)}" for k, v in table), ""]
    hostname = values.get("device.hostname")
    if hostname is not None:
        layer += ["[device]", f"node_name = {_toml(hostname)}", ""]
    link = {"MACAddress": mac_address(chosen.oui, device_id)} if chosen and device_id else {}
    dhcp = {"Hostname": hostname, "VendorClassIdentifier": chosen.vendor_class if chosen else ""}
    network = _network(values, link, dhcp)
    if network:
        files[NETWORK_DROPIN] = network
    text = "\n".join(layer)
    return Plan(files, "# coalmine signed settings (written at boot and in config mode)\n"
                + text if text else "", hostname, services,
                chosen.ttl if chosen else LINUX_TTL)


def _table(layer: str, name: str) -> str:
    """The ``[services.NAME]`` table of a settings layer (what that service reads)."""
    start = layer.find(f"[services.{name}]")
    if start < 0:
        return ""
    end = layer.find("\n[", start + 1)
    return layer[start:end if end >= 0 else len(layer)]


def _network(values: Mapping[str, Any], link: Mapping[str, str],
             dhcp: Mapping[str, str | None]) -> str:
    out = []
    if link:
        out += ["[Link]", *(f"{k}={v}" for k, v in link.items()), ""]
    if values.get("network.mode") == "static":
        dns = " ".join(values["network.dns"])
        out += ["[Network]", "DHCP=no", f"Address={values['network.address']}",
                f"Gateway={values['network.gateway']}", f"DNS={dns}", ""]
    options = [f"{k}={v}" for k, v in dhcp.items() if v]
    if options:
        out += ["[DHCPv4]", *options, ""]
    return "# coalmine signed settings: eth0\n" + "\n".join(out) if out else ""


def _toml(value: Any) -> str:
    """A TOML value for the few kinds settings hold (a JSON string is a TOML basic string: its
    escapes, control characters included, are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)
