"""The SSH honeypot against real clients: OpenSSH via sshpass, asyncssh, and raw sockets.

Login never succeeds; every attempt is an event with the credentials or key fingerprint and the
client's version; garbage, stalling and flooding clients are cut off while others keep being
served; attacker strings arrive bounded and inert.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import grp
import os
import re
import stat
import subprocess
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from firmware.protocol.catalogue import EventCode
from firmware.protocol.event import Event
from firmware.services.__main__ import main as services_main
from firmware.services.ssh import MAX_AUTH_ATTEMPTS, SSHHoneypot, load_host_key, make_host_key
from firmware.shared.errors import ConfigError
from tests.services.test_base import closed_within, connect

SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
PASSWORD_ONLY = ["-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no"]
CONTROL = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def ssh(port: int, user: str, *opts: str, password: str | None = None) -> int:
    argv = ["ssh", *SSH_OPTS, *opts, "-p", str(port), f"{user}@127.0.0.1", "true"]
    if password is not None:
        argv = ["sshpass", "-p", password, *argv]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode


def code(c: EventCode) -> Callable[[Event], bool]:
    return lambda e: e.code == c


@pytest.fixture(autouse=True)
def host_key(tmp_path):
    """What the root oneshot does on the device before the honeypot starts."""
    key, created = make_host_key(tmp_path / "ssh" / "host_key")
    assert created
    return key


@pytest.fixture
def honeypot(start):
    return start(SSHHoneypot, connection_timeout=3.0)


def test_password_attempt_is_recorded_and_refused(honeypot):
    rc = ssh(honeypot.port, "admin", *PASSWORD_ONLY, password="s3cret pass")
    assert rc == 5  # sshpass: the password was refused
    ev = honeypot.wait_for(code(EventCode.SSH_LOGIN_ATTEMPT))
    assert ev.data["USERNAME"] == "admin"
    assert ev.data["PASSWORD"] == "s3cret pass"
    assert str(ev.data["REMOTEVERSION"]).startswith("SSH-2.0-OpenSSH_")
    assert ev.data["LOCALVERSION"] == honeypot.service.cfg.ssh.version
    assert (ev.src_host, ev.dst_host, ev.dst_port) == ("127.0.0.1", "127.0.0.1", honeypot.port)
    version = honeypot.wait_for(code(EventCode.SSH_REMOTE_VERSION))
    assert version.data["REMOTEVERSION"] == ev.data["REMOTEVERSION"]
    assert re.fullmatch(r"[0-9a-f]{32}", str(version.data["HASSH"]))
    assert honeypot.wait_for(code(EventCode.SSH_NEW_CONNECTION)).src_port == ev.src_port


def test_banner_is_the_configured_version(honeypot):
    with connect(honeypot.port) as s:
        s.sendall(b"SSH-2.0-probe\r\n")
        assert s.recv(300).split(b"\r\n")[0] == honeypot.service.cfg.ssh.version.encode()


def test_keyboard_interactive_is_recorded_as_a_password_attempt(honeypot):
    rc = ssh(honeypot.port, "root", "-o", "PreferredAuthentications=keyboard-interactive",
             "-o", "PubkeyAuthentication=no", password="kbd-pass")
    assert rc == 5
    ev = honeypot.wait_for(code(EventCode.SSH_LOGIN_ATTEMPT))
    assert (ev.data["USERNAME"], ev.data["PASSWORD"]) == ("root", "kbd-pass")


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    out = subprocess.run(["ssh-keygen", "-l", "-f", f"{path}.pub"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


def test_public_key_attempt_records_the_fingerprint(honeypot, tmp_path):
    fingerprint = keygen(tmp_path / "id")
    rc = ssh(honeypot.port, "deploy", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=yes",
             "-o", "PreferredAuthentications=publickey", "-o", "IdentitiesOnly=yes",
             "-i", str(tmp_path / "id"))
    assert rc == 255
    ev = honeypot.wait_for(code(EventCode.SSH_PUBKEY_ATTEMPT))
    assert ev.data["USERNAME"] == "deploy"
    assert ev.data["KEYTYPE"] == "ssh-ed25519"
    assert ev.data["FINGERPRINT"] == fingerprint
    assert str(ev.data["REMOTEVERSION"]).startswith("SSH-2.0-OpenSSH_")


def test_auth_attempts_per_connection_are_capped(honeypot, tmp_path):
    keys = [tmp_path / f"id{i}" for i in range(MAX_AUTH_ATTEMPTS + 3)]
    for k in keys:
        keygen(k)
    ids = [arg for k in keys for arg in ("-i", str(k))]
    ssh(honeypot.port, "u", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", "PreferredAuthentications=publickey", *ids)
    time.sleep(0.3)
    attempts = [e for e in honeypot.sink.events if e.code == EventCode.SSH_PUBKEY_ATTEMPT]
    assert len(attempts) == MAX_AUTH_ATTEMPTS


def test_garbage_and_stalling_clients_are_cut_off_while_others_are_served(honeypot):
    timeout = honeypot.service.cfg.limits.connection_timeout
    stall = connect(honeypot.port)  # connects, sends nothing
    drip = connect(honeypot.port)  # a valid start, then a byte at a time
    drip.sendall(b"SSH-2.0-slow\r\n")
    garbage = connect(honeypot.port)
    garbage.sendall(os.urandom(4096))
    with concurrent.futures.ThreadPoolExecutor() as pool:
        waits = [pool.submit(closed_within, s, timeout + 2) for s in (stall, garbage)]
        real = pool.submit(ssh, honeypot.port, "alice", *PASSWORD_ONLY, password="pw")
        for _ in range(int(timeout * 4)):
            try:
                drip.sendall(b"\x00")
            except OSError:
                break
            time.sleep(0.25)
        assert real.result() == 5
        elapsed = [w.result() for w in waits]
    assert elapsed[0] == pytest.approx(timeout, abs=1.0)
    assert elapsed[1] < timeout + 1
    assert closed_within(drip, 1.0) < 1.0
    ev = honeypot.wait_for(code(EventCode.SSH_LOGIN_ATTEMPT))
    assert (ev.data["USERNAME"], ev.data["PASSWORD"]) == ("alice", "pw")
    for s in (stall, drip, garbage):
        s.close()
    assert ssh(honeypot.port, "bob", *PASSWORD_ONLY, password="pw2") == 5  # still serving


def test_per_source_connection_limit(start):
    r = start(SSHHoneypot, connections_per_source=3, connection_timeout=5.0)
    held = [connect(r.port) for _ in range(3)]
    for s in held:
        assert s.recv(100).startswith(b"SSH-2.0-")
    extra = connect(r.port)
    assert closed_within(extra, 2) < 1
    assert ssh(r.port, "carol", *PASSWORD_ONLY, password="pw") == 255  # refused outright
    for s in held:
        s.close()
    time.sleep(0.3)
    assert ssh(r.port, "carol", *PASSWORD_ONLY, password="pw") == 5
    r.wait_for(code(EventCode.SSH_LOGIN_ATTEMPT))


def test_hostile_version_line_is_bounded_and_inert(honeypot):
    evil = b"SSH-2.0-\x1b[2J<script>alert(1)</script>\xff\xfe\xe2\x80\xae" + b"A" * 200
    with connect(honeypot.port) as s:
        s.sendall(evil + b"\r\n" + os.urandom(64))
        closed_within(s, 5)
    ev = honeypot.wait_for(code(EventCode.SSH_REMOTE_VERSION))
    text = str(ev.data["REMOTEVERSION"])
    assert text.startswith("SSH-2.0-\\x1b[2J<script>")
    assert "\ufffd\ufffd\\u202e" in text
    assert not any(unicodedata.category(c) in CONTROL for c in text)
    assert ev.src_host == "127.0.0.1"


def test_hostile_credentials_are_bounded_and_inert(honeypot):
    # asyncssh applies SASLprep to both ends (RFC 4252/4013), so control and bidi characters
    # are refused as a protocol error before any callback; what gets through is stored inert.
    username = 'root"}\',<script>' + "\u00e9" + "U" * 900
    password = "pw' OR 1=1;--\\" + "P" * 5000

    async def attempt() -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect("127.0.0.1", honeypot.port, username=username,
                                   password=password, known_hosts=None, client_keys=None,
                                   preferred_auth="password")

    asyncio.run(attempt())
    ev = honeypot.wait_for(code(EventCode.SSH_LOGIN_ATTEMPT))
    user, pw = str(ev.data["USERNAME"]), str(ev.data["PASSWORD"])
    assert user.startswith('root"}\',<script>\u00e9UUU') and len(user) <= 1024
    assert pw.startswith("pw' OR 1=1;--\\P") and len(pw) <= 1024
    assert ev.src_host == "127.0.0.1" and ev.src_port > 0


def test_host_key_is_created_private_and_reused(tmp_path):
    path = tmp_path / "state" / "ssh" / "host_key"
    first, created = make_host_key(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    assert first.get_algorithm() == "ssh-ed25519"
    again, created = make_host_key(path)
    assert not created and again.get_fingerprint() == first.get_fingerprint()
    assert load_host_key(path).get_fingerprint() == first.get_fingerprint()
    assert [p.name for p in path.parent.iterdir()] == ["host_key"], "no temporary left behind"
    path.write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="host key"):
        make_host_key(path)
    assert path.read_bytes() == b"not a key", "a key that cannot be read is never replaced"
    with pytest.raises(ConfigError, match="host key"):
        load_host_key(path)


def test_host_key_belongs_to_the_service_group(tmp_path):
    """As root (the device's oneshot): the group given may read the key, nobody else."""
    if os.geteuid() != 0:
        pytest.skip("setting the group needs root")
    group = grp.getgrgid(os.getgid()).gr_name
    other = next((g for g in grp.getgrall() if g.gr_gid != os.getgid()), None)
    assert other is not None
    path = tmp_path / "ssh" / "host_key"
    make_host_key(path, other.gr_name)
    for p, mode in ((path, 0o640), (path.parent, 0o2750)):
        st = p.stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (other.gr_gid, mode), p
    os.chown(path, 0, os.getgid())  # a key from before (or after a crash) is repaired
    os.chmod(path, 0o600)
    make_host_key(path, other.gr_name)
    assert (path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) == (other.gr_gid, 0o640)
    with pytest.raises(ConfigError, match="no group named"):
        make_host_key(path, group + "-does-not-exist")


def test_the_service_never_writes_its_key(tmp_path, start):
    """A missing key stops the service with the fix; nothing is created in its place."""
    (tmp_path / "ssh" / "host_key").unlink()
    with pytest.raises(ConfigError, match="does not exist") as info:
        start(SSHHoneypot)
    assert "--make-host-key" in info.value.hint
    assert list((tmp_path / "ssh").iterdir()) == []


def test_command_line_makes_the_host_key(tmp_path, capsys):
    conf = tmp_path / "device.toml"
    key = tmp_path / "other" / "host_key"
    conf.write_text(f'[services.ssh]\nhost_key = "{key}"\n')
    assert services_main(["ssh", "--make-host-key", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "coalmine: SSH host key SHA256:" in out and "(new)" in out
    assert load_host_key(key).get_fingerprint("sha256") in out
    assert services_main(["ssh", "--make-host-key", "--config", str(conf)]) == 0
    assert "(kept)" in capsys.readouterr().out
    assert services_main(["ssh", "--key-group", "x", "--config", str(conf)]) == 64


def test_the_client_sees_the_persistent_host_key(honeypot):
    key = load_host_key(honeypot.service.cfg.ssh.host_key)
    out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(honeypot.port), "127.0.0.1"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    assert key.export_public_key().decode().split()[1] in out
    # keyscan's connection is recorded too, with the version line OpenSSH's ssh-keyscan sends
    ev = honeypot.wait_for(code(EventCode.SSH_REMOTE_VERSION))
    assert ev.data["REMOTEVERSION"] == "SSH-2.0-OpenSSH-keyscan"
    assert (ev.src_host, ev.dst_port) == ("127.0.0.1", honeypot.port)
