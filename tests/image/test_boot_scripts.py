"""The device's boot-time scripts, run on the host: no image build, no emulator.

``growdata`` runs as root on every boot in front of the data partition: it must format only the
zeros the build wrote, keep an ext4 filesystem, and leave anything else untouched (failing loudly)
-- it runs here against regular files (and a loop device when root may make one), which it
treats like a partition that needs no growing.  The initramfs ``/init`` of a production build
must not contain the debug switch or its shell.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.image.kernel import init_script

REPO = Path(__file__).resolve().parents[2]
GROWDATA = REPO / "overlay/usr/libexec/coalmine/growdata"
MIB = 1 << 20


def growdata(*args: str | Path, tries: int = 3, marker: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GROWDATA_TRIES": str(tries), "GROWDATA_DELAY": "0",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "GROWDATA_FRESH_MARKER": str(marker or Path(tempfile.mkdtemp()) / "fresh-card")}
    return subprocess.run(["sh", str(GROWDATA), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def fs_type(dev: Path) -> str:
    return subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", str(dev)],
                          capture_output=True, text=True, check=False).stdout.strip()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blank(path: Path, size: int = 64 * MIB) -> Path:
    """What the build writes: a partition whose first MiB is zeros (the rest is a hole)."""
    with path.open("wb") as f:
        f.truncate(size)
    return path


def foreign(path: Path, kind: str) -> Path:
    """A partition that holds something else: another filesystem, or bytes blkid cannot name."""
    blank(path)
    if kind == "vfat":
        subprocess.run(["mkfs.vfat", str(path)], check=True, capture_output=True)
    else:
        with path.open("r+b") as f:
            f.seek(4096)
            f.write(os.urandom(4096))
    return path


@pytest.fixture(params=["file", "loop"])
def device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A backing file for the test to fill, seen either as itself or through a loop device."""
    backing = tmp_path / "data.img"
    blank(backing)
    if request.param == "file":
        yield backing
        return
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("a loop device needs root and losetup")
    try:
        loop = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                              text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"no loop device here: {exc.stderr.strip()}")
    try:
        yield Path(loop)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_blank_partition_is_formatted_and_the_card_marked_fresh(device: Path, tmp_path: Path
                                                                 ) -> None:
    marker = tmp_path / "run" / "fresh-card"
    assert growdata("--probe", device, marker=marker).stdout.strip() == "blank"
    assert not marker.exists()
    proc = growdata(device, marker=marker)
    assert proc.returncode == 0, proc.stderr
    assert "making the data filesystem" in proc.stdout
    assert fs_type(device) == "ext4"
    assert marker.exists(), "this boot formatted the partition: a fresh card (config mode)"
    marker.unlink()
    assert growdata(device, marker=marker).returncode == 0
    assert not marker.exists(), "a card that holds its filesystem is not fresh"


def test_ext4_is_kept(device: Path) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", str(device)], check=True)
    before = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", str(device)],
                            capture_output=True, text=True, check=True).stdout
    assert growdata("--probe", device).stdout.strip() == "ext4"
    proc = growdata(device)
    assert proc.returncode == 0, proc.stderr
    assert "making" not in proc.stdout + proc.stderr
    after = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", str(device)],
                           capture_output=True, text=True, check=True).stdout
    assert after == before, "the filesystem (and so the device's key and queue) survives"


@pytest.mark.parametrize("kind", ["vfat", "random"])
def test_anything_else_is_left_untouched_and_reported(device: Path, tmp_path: Path,
                                                     kind: str) -> None:
    backing = tmp_path / "data.img"
    foreign(backing, kind)
    before = digest(backing)
    expect = "vfat" if kind == "vfat" else "unrecognised"
    assert growdata("--probe", device, tries=1).stdout.strip() == f"other:{expect}"
    proc = growdata(device, tries=3)
    assert proc.returncode != 0
    assert "probing again (1/3)" in proc.stderr and "probing again (2/3)" in proc.stderr
    assert f"holds '{expect}'" in proc.stderr and "left untouched" in proc.stderr
    assert digest(backing) == before, "not one byte of a partition that might hold data changes"


def test_zeros_must_cover_the_whole_first_mib(tmp_path: Path) -> None:
    part = blank(tmp_path / "data.img")
    with part.open("r+b") as f:
        f.seek(MIB - 1)
        f.write(b"\x01")
    assert growdata("--probe", part, tries=1).stdout.strip() == "other:unrecognised"
    assert growdata(part, tries=1).returncode != 0


def test_production_initramfs_has_no_debug_switch() -> None:
    production = init_script(debug=False)
    assert "exec sh" not in production
    assert "coalmine.debug)" not in production
    assert "@debug-only" in production  # the explanation stays, the code goes
    debug = init_script(debug=True)
    assert "coalmine.debug) debug=1 ;;" in debug and "exec sh" in debug
    assert "# @debug-only" not in debug.replace('"@debug-only"', "")
    for script in (production, debug):
        proc = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True,
                              check=False)
        assert proc.returncode == 0, proc.stderr
