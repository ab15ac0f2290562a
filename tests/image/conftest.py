"""Image tests: each board is built once per test session, always from the current tree.

No reuse of an earlier out/: a test must never pass on stale output.  The expensive rootfs base
(mmdebstrap under emulation) comes from the stage cache keyed by its inputs, so a warm session
costs one quick build per board; a cold one (CI) builds the base once for both boards.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from scripts.image import repro
from scripts.image.build import command

REPO = Path(__file__).resolve().parents[2]


def build(board: str, out: Path, *extra: str, varied: bool = False) -> Path:
    """Run the real entry point (``varied``: as another builder would, see
    scripts.image.repro.VARIED); on failure show the end of its log."""
    log = out.parent / f"build-{out.name}.log"
    argv, env = command(board, out, *extra), dict[str, str]()
    if varied:
        argv, env = repro.varied(argv)
    with log.open("wb") as f:
        proc = subprocess.run(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=False,
                              env={**os.environ, **env})
    if proc.returncode:
        pytest.fail(f"image build failed ({proc.returncode}):\n"
                    + log.read_text(errors="replace")[-4000:])
    return out


@pytest.fixture(scope="session")
def qemu_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("qemu-arm64", tmp_path_factory.mktemp("img") / "qemu-arm64")


@pytest.fixture(scope="session")
def rpi4_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("rpi4", tmp_path_factory.mktemp("img") / "rpi4")


def partitions(img: Path) -> list[dict[str, int | str]]:
    out = subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, check=True,
                         text=True).stdout
    table = json.loads(out)["partitiontable"]
    parts: list[dict[str, int | str]] = table["partitions"]
    for p in parts:
        p["label-id"] = table["id"]
    return parts


def extract(img: Path, part: dict[str, int | str], dest: Path) -> Path:
    """Copy one partition out of the disk image."""
    start, size = int(part["start"]) * 512, int(part["size"]) * 512
    with img.open("rb") as src, dest.open("wb") as out:
        src.seek(start)
        left = size
        while left:
            block = src.read(min(left, 4 << 20))
            if not block:
                break
            out.write(block)
            left -= len(block)
    return dest


def cpio_files(data: bytes) -> dict[str, bytes]:
    """name -> content of a "newc" cpio archive (the initramfs format)."""
    files: dict[str, bytes] = {}
    pos = 0
    while True:
        header = data[pos:pos + 110]
        assert header[:6] == b"070701", f"not newc at {pos}"
        size, namesize = int(header[54:62], 16), int(header[94:102], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return files
        files[name] = data[pos:pos + size]
        pos = (pos + size + 3) & ~3
