"""The SSH honeypot: records every login attempt and never lets one succeed.

Built on asyncssh (Debian packages it; memory-safe Python end to end).  It advertises the
configured banner and a persistent ed25519 host key, so the device's fingerprint stays stable
across restarts.  The service only ever reads that key: on the device it has no writable storage,
and a root oneshot (``--make-host-key``, see :func:`make_host_key`) creates the key before the
service starts.  It offers password, keyboard-interactive (asyncssh
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
from pathlib import Path
from typing import Any

import asyncssh

from firmware.config import DeviceConfig
from firmware.protocol.catalogue import EventCode
from firmware.services.base import Service
from firmware.services.guard import Guard
from firmware.services.sshwire import parse_client_hello
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import ConfigError
from firmware.shared.ownership import group_id, own

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

    @classmethod
    def make_host_key(cls, cfg: DeviceConfig, group: str | None = None) -> str:
        key, created = make_host_key(cfg.ssh.host_key, group)
        return (f"coalmine: SSH host key {key.get_fingerprint('sha256')} "
                f"({'new' if created else 'kept'}) in {cfg.ssh.host_key}")

    async def start(self) -> None:
        ssh = self.cfg.ssh
        key = load_host_key(ssh.host_key)
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


MAKE_KEY = ("python3 -m firmware.services ssh --make-host-key (as root; on the device "
            "coalmine-ssh-hostkey.service runs it before the honeypot starts)")


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """Read the host key; the service never creates or changes it (it cannot write there)."""
    try:
        return asyncssh.read_private_key(str(path))
    except FileNotFoundError:
        raise ConfigError(f"SSH host key {path} does not exist",
                          hint=f"create it first: {MAKE_KEY}") from None
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigError(f"cannot read SSH host key {path}: {exc}",
                          hint=f"the service's group must be able to read it; {MAKE_KEY} "
                               "sets its group and mode again") from None


def make_host_key(path: Path, group: str | None = None) -> tuple[asyncssh.SSHKey, bool]:
    """Create the host key if it is missing; returns ``(key, created)``.

    The key is ed25519, written whole or not at all (``write_atomic``) with mode 0640 in a
    directory of mode 0750.  With ``group`` (the service's group; needs root) the directory is
    made setgid to that group, so the key belongs to it from the moment it appears, and only
    that group can read it.  An existing key is kept (its group and mode are set again); one
    that cannot be read is an error, never silently replaced.
    """
    gid = group_id(group) if group is not None else None
    if gid is not None:
        own(path.parent, gid, 0o2750, directory=True)
    try:
        key = asyncssh.read_private_key(str(path))
        created = False
    except FileNotFoundError:
        key = asyncssh.generate_private_key("ssh-ed25519")
        write_atomic(path, key.export_private_key(), mode=0o640, dir_mode=0o750)
        created = True
        log.info("created SSH host key %s", path)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigError(f"cannot read SSH host key {path}: {exc}",
                          hint="move it away to have a new one made (the device's SSH "
                               "fingerprint then changes)") from None
    if gid is not None:
        own(path, gid, 0o640)
    return key, created

