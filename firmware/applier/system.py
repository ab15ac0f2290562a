"""The applier's effects on the running system, behind one small interface (tests fake it).

Run-time files go under /run/systemd (they override the image's units and networks and vanish
at power-off: each boot writes them again from the signed settings).  Units are told through
``systemctl`` and systemd-networkd's D-Bus ``Reload``; the host name is set with
``sethostname`` (CAP_SYS_ADMIN, the applier unit's only capability).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Protocol

from firmware.applier.plan import MANAGED, MASK, Plan
from firmware.protocol.settings import PACKET_SERVICES
from firmware.shared import proc
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import StorageError, ToolError

SSH_SOCKET, SSH_SERVICE = "coalmine-ssh.socket", "coalmine-ssh.service"
TIMEOUT = 60.0
SYSCTL_FILE = Path("/run/sysctl.d/50-coalmine-settings.conf")
TTL_KEY = "net.ipv4.ip_default_ttl"
# the root oneshot that makes what a honeypot reads (from its settings) before it starts
PREPARED_BY = {"https": "coalmine-cert@https.service", "rdp": "coalmine-cert@rdp.service"}


class System(Protocol):
    def daemon_reload(self) -> None: ...
    def restart_ssh(self, enabled: bool) -> None: ...
    def restart_listener(self, name: str, enabled: bool, *, boot: bool = False) -> None: ...
    def reload_network(self) -> None: ...
    def set_hostname(self, name: str) -> None: ...
    def set_ttl(self, ttl: int) -> None: ...


class RealSystem:
    """systemd's own tools; a failure is a ``ToolError`` naming the command."""

    def daemon_reload(self) -> None:
        proc.run(["systemctl", "daemon-reload"], quiet=True, timeout=TIMEOUT)

    def restart_ssh(self, enabled: bool) -> None:
        proc.run(["systemctl", "stop", SSH_SERVICE, SSH_SOCKET], quiet=True, timeout=TIMEOUT)
        if enabled:
            proc.run(["systemctl", "start", SSH_SOCKET, SSH_SERVICE], quiet=True,
                     timeout=TIMEOUT)

    def restart_listener(self, name: str, enabled: bool, *, boot: bool = False) -> None:
        """Stop a honeypot that is off in the image (its service, then its socket), then start
        it again if it is enabled: its socket, or for the port-scan detector (no socket) its
        service.  At boot the applier runs before these may start (sysinit): the start is
        queued (``--no-block``), not waited for."""
        service = (f"coalmine-{name}.service" if name in PACKET_SERVICES
                   else f"coalmine-listener@{name}.service")
        starts = service if name in PACKET_SERVICES else f"coalmine-{name}.socket"
        if not boot:
            proc.run(["systemctl", "stop", *dict.fromkeys((service, starts))], quiet=True,
                     timeout=TIMEOUT)
        if enabled and name in PREPARED_BY and not boot:  # e.g. a new certificate subject
            proc.run(["systemctl", "restart", PREPARED_BY[name]], quiet=True, timeout=TIMEOUT)
        if enabled:
            proc.run(["systemctl", "start", *(["--no-block"] if boot else []), starts],
                     quiet=True, timeout=TIMEOUT)

    def reload_network(self) -> None:
        """``networkctl reload`` over D-Bus: networkctl itself refuses to run outside the
        network namespace of systemd-networkd, and the applier has none (PrivateNetwork=)."""
        proc.run(["busctl", "call", "org.freedesktop.network1", "/org/freedesktop/network1",
                  "org.freedesktop.network1.Manager", "Reload"], quiet=True, timeout=TIMEOUT)

    def set_hostname(self, name: str) -> None:
        try:
            socket.sethostname(name)
        except OSError as exc:
            raise ToolError(f"cannot set the host name to {name!r}: {exc.strerror}") from None


    def set_ttl(self, ttl: int) -> None:
        """The IP TTL, through systemd-sysctl: the applier has a network namespace of its own
        (PrivateNetwork=), and a TTL is a property of the namespace it is set in."""
        text = f"# coalmine signed settings: the personality's IP TTL\n{TTL_KEY} = {ttl}\n"
        write_atomic(SYSCTL_FILE, text.encode(), 0o644, dir_mode=0o755)
        proc.run(["systemctl", "restart", "--no-block", "systemd-sysctl.service"], quiet=True,
                 timeout=TIMEOUT)


def write_plan(root: Path, layer: Path, new: Plan) -> None:
    """Make the run-time files say ``new``: managed files it lacks are removed."""
    for rel in MANAGED:
        path = root / rel
        content = new.files.get(rel)
        try:
            if content is None:
                if path.is_symlink() or path.exists():
                    path.unlink()
                continue
            if content == MASK:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                os.symlink(MASK, path)
                continue
        except OSError as exc:
            raise StorageError(f"cannot update {path}: {exc.strerror or exc}",
                               hint="the applier needs /run/systemd writable") from None
        write_atomic(path, content.encode(), 0o644, dir_mode=0o755)
    if new.layer:
        write_atomic(layer, new.layer.encode(), 0o644, dir_mode=0o755)
    else:
        layer.unlink(missing_ok=True)

