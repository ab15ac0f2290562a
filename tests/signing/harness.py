"""Runs scripted ceremony steps in one process inside the test's own namespaces.

``test_ceremony.py`` starts this under ``unshare -n -m`` after mounting a tmpfs per key holder:
those mounts stand in for the holders' USB sticks, which the fake pyudev backend below reports
as removable disks (loop devices cannot be marked removable and no udevd runs here).  Each step
is one ``coalmine-sign`` command with its answers (mount points, passphrases) as stdin lines.

Usage: python -m tests.signing.harness PLAN.json RESULT.json MEDIUM_DIR...
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from signing import cli, media
from signing.ceremony import Console


class FakeUdev:
    def __init__(self, removable: list[Path]) -> None:
        self.disks = {os.stat(p).st_dev: media.Disk(f"/dev/fake-{p.name}", True, "test stick")
                      for p in removable}
        self.disks[os.stat("/").st_dev] = media.Disk("/dev/system", False, "system disk")

    def disk_of(self, device_number: int) -> media.Disk | None:
        return self.disks.get(device_number)


def main() -> int:
    plan, result, mounts = Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
    udev = FakeUdev(mounts)
    out = []
    for step in json.loads(plan.read_text()):
        answers: Iterator[str] = iter(step.get("stdin", []))
        text = io.StringIO()

        def answer(prompt: str, text: io.StringIO = text,
                   answers: Iterator[str] = answers) -> str:
            text.write(prompt + "\n")
            return next(answers, "")

        errors = io.StringIO()
        sys.stderr = errors
        try:
            rc = cli.main(step["argv"], udev=udev, console=Console(text, answer, answer))
        finally:
            sys.stderr = sys.__stderr__
        out.append({"argv": step["argv"], "rc": rc, "out": text.getvalue(),
                    "err": errors.getvalue()})
    out.append({"media": {str(m): sorted(f"{p.name} {oct(p.stat().st_mode & 0o777)}"
                                         for p in m.iterdir()) for m in mounts}})
    result.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
