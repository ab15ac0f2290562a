"""``make check-repro``: build the same commit twice and compare every output's SHA-256.

The first build is a normal one (it may take the rootfs base from the stage cache); the second
starts from empty stage directories and bypasses the stage cache, so mmdebstrap, the layer, the
initramfs and every filesystem are made again.  Only the download cache is shared (it holds
exactly the locked, hash-checked .debs).  The second build also varies what another builder
would (``VARIED``, after reprotest's list): umask, locale, time zone, host name (in a UTS
namespace of its own) and the build path.  When outputs differ, the intermediate artefacts are
compared too, to point at the stage that is not reproducible (then run diffoscope on them).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from firmware.shared.cli import main_guard, module_command
from firmware.shared.errors import InputError
from firmware.shared.proc import run
from scripts.image import build
from scripts.image.common import OS_HINT, REPO, sha256_file, stage

STAGE_FILES = ["rootfs-base.tar", "initrd.img", "root.squashfs", "boot.vfat"]
VARIED = {"umask": "077", "LANG": "fr_FR.UTF-8", "LC_ALL": "fr_FR.UTF-8",
          "TZ": "Pacific/Chatham", "hostname": "elsewhere-builder"}


def varied(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` as another builder would run it: (command, environment overrides)."""
    script = (f'umask {VARIED["umask"]} && hostname {VARIED["hostname"]} && exec "$@"')
    env = {k: v for k, v in VARIED.items() if k.isupper()}
    return ["unshare", "--uts", "sh", "-c", script, "sh", *argv], env


def sums(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        out[name] = digest
    return out


def differing(first: Path, second: Path) -> list[str]:
    """Names whose SHA-256 differs, or that only one side lists, between two SHA256SUMS."""
    a, b = sums(first), sums(second)
    return sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))


def compare(board: str, base: Path) -> list[str]:
    """Two builds into base/1 and base/2; returns the differing output names."""
    shutil.rmtree(base, ignore_errors=True)
    runs = []
    for n in (1, 2):
        out, work = base / str(n), base / f"work-{n}"
        if n == 1:
            stage("check-repro: build 1 of 2 (stage cache allowed)")
            build.build(board, debug=False, out_dir=out, work=work, stage_cache=True)
        else:
            stage(f"check-repro: build 2 of 2 (no caches; another builder: {VARIED})")
            argv, env = varied(build.command(board, out, "--no-stage-cache"))  # work-2
            run(argv, env=env, timeout=None)
        runs.append((out, work))
    differ = differing(runs[0][0] / "SHA256SUMS", runs[1][0] / "SHA256SUMS")
    if not differ:
        return []
    # Diagnosis only: rootfs-base.tar still names its stage directory in apt's sources.list,
    # which the layer removes, so stage files may differ while the outputs do not.
    for name in STAGE_FILES:
        a, b = runs[0][1] / name, runs[1][1] / name
        if a.is_file() and b.is_file() and sha256_file(a) != sha256_file(b):
            differ.append(f"(stage) {name}")
    return differ


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=module_command("scripts.image.repro"),
                                     description="Build twice, compare SHA-256 of the outputs.")
    parser.add_argument("--board", default="rpi4")
    parser.add_argument("--dir", type=Path, default=REPO / "out" / "repro",
                        help="where the two builds go (default out/repro)")
    args = parser.parse_args(argv)

    def work() -> None:
        base = args.dir / args.board
        differ = compare(args.board, base)
        if differ:
            raise InputError(
                f"the two builds of {args.board} differ: {', '.join(differ)}",
                hint=f"compare them with diffoscope: {base}/1 and {base}/2 "
                     f"(stage files in {base}/work-1 and work-2)")
        stage(f"check-repro: {args.board} is reproducible; both builds give:")
        print((base / "1" / "SHA256SUMS").read_text(), end="")

    sys.exit(main_guard(work, os_hint=OS_HINT))


if __name__ == "__main__":
    main(sys.argv[1:])
