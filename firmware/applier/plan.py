"""What a set of signed settings means for the running system, pure: files and a host name.

Settings never touch the read-only root.  Each boot, and each apply in config mode, turns the
values into run-time files that override the image's defaults: a drop-in for the SSH honeypot's
listening socket (its port) or masks for its units (disabled), a drop-in for ``eth0``'s network
(a static address, the DHCP host name), and ``settings.toml``, the last configuration layer
the device's services read.  Two plans compare by those files, so applying changes only the
units whose files changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MASK = "/dev/null"  # a file whose content is this is a symlink to /dev/null: the unit is masked
SSH_SOCKET_DROPIN = "system/coalmine-ssh.socket.d/50-coalmine-settings.conf"
SSH_UNITS = ("system/coalmine-ssh.socket", "system/coalmine-ssh.service")
NETWORK_DROPIN = "network/20-wired.network.d/50-coalmine-settings.conf"
MANAGED = (SSH_SOCKET_DROPIN, *SSH_UNITS, NETWORK_DROPIN)  # every file a plan may hold


@dataclass(frozen=True)
class Plan:
    """Run-time files (path under /run/systemd -> content, or MASK) and the settings layer."""

    files: Mapping[str, str] = field(default_factory=dict)
    layer: str = ""
    hostname: str | None = None

    def changed(self, other: Plan) -> set[str]:
        """Managed paths whose content differs between the two plans."""
        return {p for p in MANAGED if self.files.get(p) != other.files.get(p)}

    @property
    def ssh_enabled(self) -> bool:
        return SSH_UNITS[0] not in self.files


def plan(values: Mapping[str, Any]) -> Plan:
    """The plan for validated settings values (dotted key -> value); {} is the image's default."""
    files: dict[str, str] = {}
    layer: list[str] = []
    if values.get("services.ssh.enabled") is False:
        files.update(dict.fromkeys(SSH_UNITS, MASK))
    if "services.ssh.port" in values:
        port = int(values["services.ssh.port"])
        files[SSH_SOCKET_DROPIN] = ("# coalmine signed settings: the SSH honeypot's port\n"
                                    f"[Socket]\nListenStream=\nListenStream={port}\n")
    ssh = {k.rpartition(".")[2]: values[k] for k in ("services.ssh.enabled", "services.ssh.port")
           if k in values}
    if ssh:
        layer += ["[services.ssh]", *(f"{k} = {_toml(v)}" for k, v in sorted(ssh.items())), ""]
    hostname = values.get("device.hostname")
    if hostname is not None:
        layer += ["[device]", f"node_name = {_toml(hostname)}", ""]
    network = _network(values, hostname)
    if network:
        files[NETWORK_DROPIN] = network
    text = "\n".join(layer)
    return Plan(files, "# coalmine signed settings (written at boot and in config mode)\n"
                + text if text else "", hostname)


def _network(values: Mapping[str, Any], hostname: str | None) -> str:
    out = []
    if values.get("network.mode") == "static":
        dns = " ".join(values["network.dns"])
        out += ["[Network]", "DHCP=no", f"Address={values['network.address']}",
                f"Gateway={values['network.gateway']}", f"DNS={dns}", ""]
    if hostname is not None:
        out += ["[DHCPv4]", f"Hostname={hostname}", ""]
    return "# coalmine signed settings: eth0\n" + "\n".join(out) if out else ""


def _toml(value: Any) -> str:
    """A TOML value for the few kinds settings hold (validated before: no quoting surprises)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
