"""Two builds of the same commit give the same bytes (what `make check-repro` checks too).

The session's qemu-arm64 build may take the rootfs base from the stage cache; this second build
starts from empty stage directories and bypasses that cache, so mmdebstrap and every later
stage run again, and it runs as another builder would (scripts.image.repro.VARIED: umask 077,
another locale, time zone, host name and build path).  Only the download cache (locked,
hash-checked .debs) is shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.image.repro import differing, sums
from tests.image.conftest import build

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]  # builds take minutes


def test_second_build_from_scratch_is_identical(
        qemu_out: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    again = build("qemu-arm64", tmp_path_factory.mktemp("repro") / "qemu-arm64",
                  "--no-stage-cache", varied=True)
    assert set(sums(qemu_out / "SHA256SUMS")) >= {
        "coalmine-qemu-arm64.img", "coalmine-qemu-arm64.img.xz", "coalmine-qemu-arm64.bmap",
        "coalmine-qemu-arm64.spdx.json"}
    differ = differing(qemu_out / "SHA256SUMS", again / "SHA256SUMS")
    assert not differ, f"not reproducible: {differ}"
