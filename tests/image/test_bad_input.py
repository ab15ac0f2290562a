"""Bad input to the image build gives a clear error and the fix, before any slow work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.shared.cli import main_guard
from firmware.shared.errors import EnvironmentFault, InputError, ToolError, UsageError
from scripts.image import hosttools, lock
from scripts.image.common import OS_HINT, boards

REPO = Path(__file__).resolve().parents[2]


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scripts.image.build", *args], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=60)


def test_unknown_board_lists_the_boards() -> None:
    proc = run_build("--board", "rpi9")
    assert proc.returncode == 64
    assert "unknown BOARD='rpi9'" in proc.stderr
    for board in ("rpi4", "qemu-arm64"):
        assert board in proc.stderr
    assert sorted(boards()) == ["qemu-arm64", "rpi4"]


def test_make_image_unknown_board_installs_nothing(tmp_path: Path) -> None:
    """A wrong BOARD is refused before any package tool runs (shims record any call)."""
    calls = tmp_path / "calls"
    for tool in ("apt-get", "dpkg-query", "pip"):
        shim = tmp_path / tool
        shim.write_text(f'#!/bin/sh\necho {tool} >> "{calls}"\nexit 1\n')
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = subprocess.run(["make", "-s", "image", "BOARD=nope"], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=120, env=env)
    assert proc.returncode != 0
    assert "unknown BOARD='nope'" in proc.stderr and "qemu-arm64, rpi4" in proc.stderr
    assert not calls.exists(), f"ran {calls.read_text()} before checking the board"


def test_help() -> None:
    proc = run_build("--help")
    assert proc.returncode == 0 and "--board" in proc.stdout and "--debug" in proc.stdout


PIN = lock.Pin("root", "libfoo1", "1.0-1", "arm64", 5, "a" * 64, "trixie",
               "pool/main/libf/libfoo/libfoo1_1.0-1_arm64.deb")


def test_lock_not_served_by_archive_names_packages_and_fix() -> None:
    index = {("libfoo1", "1.0-2"): {"SHA256": "b" * 64, "Filename": "pool/x.deb"},
             ("libbar", "2"): {"SHA256": "c" * 64, "Filename": "pool/bar.deb"}}
    bar = lock.Pin("root", "libbar", "2", "arm64", 1, "d" * 64, "trixie", "pool/bar.deb")
    with pytest.raises(InputError) as err:
        lock.check_served([PIN, bar], index)
    text = err.value.message
    assert "libfoo1 1.0-1: not served (archive has: 1.0-2)" in text
    assert "libbar 2: archive SHA-256 cccccccccccccccc... != locked dddddddddddddddd..." in text
    assert "2 packages" in text
    assert "make lock" in err.value.hint


def test_download_with_wrong_hash_is_refused(tmp_path: Path) -> None:
    deb = tmp_path / PIN.deb
    deb.write_bytes(b"other bytes than the lock says")
    with pytest.raises(InputError) as err:
        lock.verify(deb, PIN)
    assert "libfoo1 1.0-1 has SHA-256" in err.value.message
    assert "make lock" in err.value.hint
    assert not deb.exists(), "nothing unverified is left behind"


def test_os_error_at_the_entry_point_is_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    def full() -> None:
        raise OSError(28, "No space left on device", "/work/out/qemu-arm64/coalmine.img")

    assert main_guard(full, os_hint=OS_HINT) == 71  # EX_OSERR
    err = capsys.readouterr().err
    assert "error: No space left on device: /work/out/qemu-arm64/coalmine.img" in err
    assert "df -h" in err

    def bug() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):  # a bug is not dressed up as a user error
        main_guard(bug, os_hint=OS_HINT)


def test_missing_host_tool_names_the_package_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real = hosttools.which
    monkeypatch.setattr(hosttools, "which", lambda t: None if t == "mksquashfs" else real(t))
    with pytest.raises(ToolError) as info:
        hosttools.check_host()
    assert "squashfs-tools" in info.value.message
    assert "make image-deps" in info.value.hint and "apt-get install" in info.value.hint


def test_not_root_says_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentFault) as info:
        hosttools.check_host()
    assert "sudo make image" in info.value.hint


def test_a_release_build_refuses_uncommitted_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.image import build

    monkeypatch.setattr(build, "check_host", lambda: None)
    monkeypatch.setattr(build, "source_state", lambda: ("ab" * 20, True))
    with pytest.raises(UsageError) as err:
        build.plan("qemu-arm64", False, release=True)
    assert "uncommitted changes" in err.value.message and "commit" in err.value.hint
    monkeypatch.setattr(build, "source_state", lambda: (None, False))
    with pytest.raises(UsageError, match="clean git checkout"):
        build.plan("qemu-arm64", False, release=True)
    assert build.version("ab" * 20, True).endswith("+gabababababab.dirty")
    assert build.version("ab" * 20, False).endswith("+gabababababab")
