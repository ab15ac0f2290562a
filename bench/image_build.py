"""Image figures: cold build (empty download and stage caches), warm rebuild (caches present),
root filesystem and .img.xz sizes, and QEMU start -> first heartbeat at a host console.

Slow (the cold build alone is many minutes), so ``make bench`` skips it unless asked:
``make bench BENCH=image_build``.  Goals from the issue: cold <= 15 min, warm <= 5 min,
.img.xz <= 100 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.image import armed, build
from scripts.lab import Lab

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def timed_build(board: str, out: Path, env: dict[str, str], *extra: str) -> float:
    start = time.monotonic()
    log = out.parent / f"{out.name}.log"
    with log.open("wb") as f:
        subprocess.run(build.command(board, out, *extra), cwd=REPO, env=env, stdout=f,
                       stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - start


def sizes(board: str, out: Path) -> None:
    squash = build.work_dir(out) / "root.squashfs"
    xz = out / f"coalmine-{board}.img.xz"
    print(f"   {board}: root squashfs {squash.stat().st_size / MIB:.1f} MiB, "
          f".img.xz {xz.stat().st_size / MIB:.1f} MiB "
          f"({xz.stat().st_size / 1e6:.1f} MB; goal <= 100 MB)")


def boot_figure(out: Path, work: Path) -> None:
    (work / "lab").mkdir(parents=True, exist_ok=True)
    with Lab(work / "lab", with_device=False) as lab:
        guest = armed.boot(lab, out, work)
        try:
            armed.arm(lab, guest)
        finally:
            guest.stop()
    print(f"   qemu-arm64 (TCG, 2 vCPUs): start -> device key on serial "
          f"{guest.key_seen - guest.started:.1f}s, start -> first heartbeat at the console "
          f"{guest.armed - guest.started:.1f}s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--board", default="qemu-arm64")
    parser.add_argument("--skip-cold", action="store_true", help="no cold build")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coalmine-bench-") as tmp:
        base = Path(tmp)
        env = dict(os.environ)
        warm = timed_build(args.board, base / "warm", env)  # fills the caches if empty
        warm2 = timed_build(args.board, base / "warm2", env)
        print(f"   warm rebuild (download + stage cache present): {warm2 / 60:.1f} min "
              f"(first build of this run: {warm / 60:.1f} min; goal <= 5 min)")
        sizes(args.board, base / "warm2")
        if not args.skip_cold:
            cold_env = {**env, "COALMINE_DL": str(base / "cold-cache" / "dl")}
            cold = timed_build(args.board, base / "cold", cold_env, "--no-stage-cache")
            print(f"   cold build (empty download and stage caches): {cold / 60:.1f} min "
                  f"(goal <= 15 min)")
        if args.board == "qemu-arm64":
            boot_figure(base / "warm2", base / "boot")


if __name__ == "__main__":
    main(sys.argv[1:])
