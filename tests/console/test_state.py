"""The state directory is private whatever the umask: console.key (the console's private key),
console.toml and console.db (cleartext passwords attackers typed) are 0600, the directory 0700,
even when `init` is given a pre-existing world-writable directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from firmware.protocol.keys import OwnPrivateKey

ROOT = Path(__file__).resolve().parents[2]


def console(*args: str, umask: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", *args], cwd=ROOT, umask=umask,
                          capture_output=True, text=True, timeout=60, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_private_under_umask_000_in_a_0777_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    init = console("init", "--state", str(state), "--zone", "c.test")
    assert init.returncode == 0, init.stderr
    assert mode(state) == 0o700
    assert mode(state / "console.key") == 0o600
    assert mode(state / "console.toml") == 0o600
    device_key = OwnPrivateKey.generate().public().text()  # not random bytes: often non-canonical
    enroll = console("enroll", "--state", str(state), "--name", "pi-1", "--public-key",
                     device_key)
    assert enroll.returncode == 0, enroll.stderr
    assert mode(state / "console.db") == 0o600
    for extra in ("console.db-wal", "console.db-shm"):
        if (state / extra).exists():
            assert mode(state / extra) == 0o600, extra
    assert sorted(p.name for p in state.iterdir() if mode(p) != 0o600) == []


def test_init_leaves_a_directory_that_holds_other_things_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "someone-elses.txt").write_text("x")
    refused = console("init", "--state", str(shared), "--zone", "c.test")
    assert refused.returncode == 64 and "not empty" in refused.stderr
    assert "hint:" in refused.stderr
    assert mode(shared) == 0o755 and not (shared / "console.key").exists()


def test_the_shared_writers_set_their_modes_under_umask_000(tmp_path: Path) -> None:
    """Without the CLI's own umask: write_atomic, private_dir and the SQLite helper themselves."""
    from firmware.agent.queue import EventQueue
    from firmware.shared.atomic import private_dir, write_atomic
    old = os.umask(0)
    try:
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o777)
        assert mode(private_dir(loose)) == 0o700
        write_atomic(loose / "key", b"secret", 0o600)
        assert mode(loose / "key") == 0o600
        queue_dir = tmp_path / "agent"
        queue_dir.mkdir(mode=0o777)
        EventQueue(queue_dir / "queue.db", max_events=10).close()
        assert mode(queue_dir) == 0o700 and mode(queue_dir / "queue.db") == 0o600
    finally:
        os.umask(old)
