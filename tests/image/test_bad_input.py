"""Bad input to the image build gives a clear error and the fix, before any slow work."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from firmware.errors import InputError
from scripts.image import lock
from scripts.image.common import boards

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


def test_make_image_unknown_board() -> None:
    proc = subprocess.run(["make", "-s", "image", "BOARD=nope"], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=600)
    assert proc.returncode != 0
    assert "unknown BOARD='nope'" in proc.stderr and "qemu-arm64, rpi4" in proc.stderr


def test_help() -> None:
    proc = run_build("--help")
    assert proc.returncode == 0 and "--board" in proc.stdout and "--debug" in proc.stdout


PIN = lock.Pin("root", "libfoo1", "1.0-1", "arm64", 5, "a" * 64,
               "pool/main/libf/libfoo/libfoo1_1.0-1_arm64.deb")


def test_lock_not_served_by_archive_names_packages_and_fix() -> None:
    index = {("libfoo1", "1.0-2"): {"SHA256": "b" * 64, "Filename": "pool/x.deb"},
             ("libbar", "2"): {"SHA256": "c" * 64, "Filename": "pool/bar.deb"}}
    bar = lock.Pin("root", "libbar", "2", "arm64", 1, "d" * 64, "pool/bar.deb")
    with pytest.raises(InputError) as err:
        lock.check_served([PIN, bar], index)
    text = err.value.message
    assert "libfoo1 1.0-1: not served (archive has: 1.0-2)" in text
    assert "libbar 2: archive SHA-256 cccccccccccccccc... != locked dddddddddddddddd..." in text
    assert "2 packages" in text
    assert "make lock" in err.value.hint


@pytest.fixture
def fake_archive(tmp_path: Path) -> Iterator[str]:
    """A local HTTP 'mirror' serving a .deb whose bytes differ from the lock."""
    deb = tmp_path / PIN.filename
    deb.parent.mkdir(parents=True)
    deb.write_bytes(b"other")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_with_wrong_hash_is_refused(fake_archive: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COALMINE_MIRROR", fake_archive)
    index = {(PIN.name, PIN.version): {"SHA256": PIN.sha256, "Filename": PIN.filename}}
    cache = tmp_path / "dl"
    with pytest.raises(InputError) as err:
        lock.fetch([PIN], cache, index=index)
    assert "libfoo1 1.0-1 has SHA-256" in err.value.message
    assert "make lock" in err.value.hint
    assert not list(cache.iterdir()), "nothing unverified is left in the cache"
