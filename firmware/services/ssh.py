"""The SSH honeypot: records every login attempt and never lets one succeed.

Built on asyncssh (Debian packages it; memory-safe Python end to end).  It advertises the
configured banner and a persistent host key (generated as ed25519 on first start, so the
device's fingerprint stays stable across restarts), offers password, keyboard-interactive (asyncssh
maps it onto the password check) and public-key authentication, records each attempt, and
answers every one with failure.  Events keep OpenCanary's codes and logdata keys:

* 4000 new connection;
* 4001 remote version (REMOTEVERSION, and HASSH when the client's KEXINIT was seen);
* 4002 password attempt (USERNAME, PASSWORD, LOCALVERSION, REMOTEVERSION);
* 4003 public-key attempt (USERNAME, KEYTYPE, FINGERPRINT ``SHA256:...``, LOCALVERSION,
  REMOTEVERSION) -- OpenCanary does not log these at all.

Login time is bounded by asyncssh's ``login_timeout`` and, underneath, by the base's guard
(bytes, time, connections per source); a client gets at most ``MAX_AUTH_ATTEMPTS`` tries.

Known limit: asyncssh applies SASLprep (RFC 4013) to user names and passwords and drops the
connection on control or bidi characters before any callback runs; such a client still leaves
4000 and 4001 (with its raw version line), just no 4002.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import asyncssh

from firmware.config import DeviceConfig
from firmware.errors import ConfigError, StorageError
from firmware.protocol.catalogue import EventCode
from firmware.services.base import Service
from firmware.services.guard import Guard
from firmware.services.sshwire import parse_client_hello

log = logging.getLogger(__name__)

MAX_AUTH_ATTEMPTS = 6
SSH_PREFIX = "SSH-2.0-"


class SSHHoneypot(Service):
    """Low-interaction SSH service."""

    name = "ssh"
    default_port = 22
    event_codes = frozenset({EventCode.SSH_NEW_CONNECTION, EventCode.SSH_REMOTE_VERSION,
                             EventCode.SSH_LOGIN_ATTEMPT, EventCode.SSH_PUBKEY_ATTEMPT})
    sniff_bytes = 16384  # version line + KEXINIT, for REMOTEVERSION and HASSH

    @classmethod
    def enabled(cls, cfg: DeviceConfig) -> bool:
        return cfg.ssh.enabled

    async def start(self) -> None:
        ssh = self.cfg.ssh
        key = load_or_create_host_key(ssh.host_key)
        await asyncssh.create_server(
            lambda: _Attempts(self), ssh.host, ssh.port, tunnel=_GuardedListener(self),
            server_host_keys=[key], server_version=ssh.version.removeprefix(SSH_PREFIX),
            login_timeout=self.cfg.limits.connection_timeout,
            password_auth=True, kbdint_auth=True, public_key_auth=True,
            host_based_auth=False, gss_host=None, allow_scp=False,
            agent_forwarding=False, x11_forwarding=False)
        log.info("ssh host key %s", key.get_fingerprint("sha256"))


class _GuardedListener:
    """What asyncssh calls to listen (its ``tunnel`` hook): the base's guarded listener.

    asyncssh accepts any object with ``create_server(factory, host, port)`` as a listener
    (its ``_TunnelListenerProtocol``, present from 2.10 on); this one puts the base's
    :class:`~firmware.services.guard.Guard` between the socket and asyncssh.
    """

    def __init__(self, service: Service) -> None:
        self.service = service

    async def create_server(self, session_factory: Any, host: str, port: int) -> asyncio.Server:
        return await self.service.listen(lambda: session_factory("", 0), host, port)


class _Attempts(asyncssh.SSHServer):
    """One connection's asyncssh callbacks: log, count, refuse."""

    def __init__(self, service: SSHHoneypot) -> None:
        self.service = service
        self.conn: asyncssh.SSHServerConnection | None = None
        self.guard: Guard | None = None  # kept: asyncssh reports the loss after the guard is gone
        self.attempts = 0
        self.version_sent = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.guard = self.service.guard_of(conn)
        self.service.emit(EventCode.SSH_NEW_CONNECTION, conn, {})

    def connection_lost(self, exc: Exception | None) -> None:
        self._remote_version()

    def begin_auth(self, username: str) -> bool:
        self._remote_version()
        return True  # authentication is always required; nothing ever satisfies it

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def host_based_auth_supported(self) -> bool:
        return False

    def validate_password(self, username: str, password: str) -> bool:
        self._count()
        self._emit(EventCode.SSH_LOGIN_ATTEMPT, USERNAME=username, PASSWORD=password)
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self._count()
        self._emit(EventCode.SSH_PUBKEY_ATTEMPT, USERNAME=username,
                   KEYTYPE=key.get_algorithm(), FINGERPRINT=key.get_fingerprint("sha256"))
        return False

    # --- helpers ---------------------------------------------------------------------------------

    def _hello(self) -> tuple[str | bytes, str | None]:
        hello = parse_client_hello(bytes(self.guard.head)) if self.guard is not None else None
        if hello is not None and hello.version is not None:
            return hello.version, hello.hassh
        version = self.conn.get_extra_info("client_version", "") if self.conn else ""
        return str(version or ""), None

    def _remote_version(self) -> None:
        if self.version_sent or self.conn is None:
            return
        version, hassh = self._hello()
        if not version:
            return
        self.version_sent = True
        data: dict[str, str | bytes | int] = {"REMOTEVERSION": version}
        if hassh is not None:
            data["HASSH"] = hassh
        self.service.emit(EventCode.SSH_REMOTE_VERSION, self._origin(), data)

    def _emit(self, code: EventCode, **data: str | bytes | int) -> None:
        if self.conn is None:
            return
        self._remote_version()
        data["LOCALVERSION"] = self.service.cfg.ssh.version
        data["REMOTEVERSION"] = self._hello()[0]
        self.service.emit(code, self._origin(), data)

    def _origin(self) -> Any:
        """Where the addresses come from: the guard's socket outlives asyncssh's view of it."""
        if self.guard is not None and self.guard.transport is not None:
            return self.guard.transport
        return self.conn

    def _count(self) -> None:
        self.attempts += 1
        if self.attempts >= MAX_AUTH_ATTEMPTS and self.conn is not None:
            conn = self.conn
            asyncio.get_running_loop().call_soon(
                conn.disconnect, asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                "Too many authentication failures")


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """Read the host key, or create it (ed25519, mode 0600, parent directory 0700)."""
    try:
        return asyncssh.read_private_key(str(path))
    except FileNotFoundError:
        pass
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigError(f"cannot read SSH host key {path}: {exc}",
                          hint="fix its permissions, or remove it to have a new one made") from None
    key = asyncssh.generate_private_key("ssh-ed25519")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key())
    except OSError as exc:
        raise StorageError(f"cannot create SSH host key {path}: {exc}",
                           hint="the service user needs write access to that directory") from None
    log.info("created SSH host key %s", path)
    return key
