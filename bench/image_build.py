"""Image figures: cold build (empty download and stage caches), warm rebuild (caches present),
root filesystem and .img.xz sizes, and QEMU start -> paired -> first heartbeat and event at a
host console, and the button's path to the console.

Slow (the cold build alone is many minutes), so ``make bench`` skips it unless asked:
``make bench BENCH=image_build``.  Goals from the issue: cold <= 15 min, warm <= 5 min,
.img.xz <= 100 MB.

The boot figure runs the device as shipped, from a fresh card's first boot through pairing
(the code approved as an operator would) to its first heartbeat and first stored event, then
presses its button through QEMU's power button (GPIO line 3).  Its provisioning is the one the
image tests use (scripts/image/armed.py, as a defender would write coalmine.toml) minus the
lab's ``max_backoff = 2.0``, which keeps tests quick but would hide what a defender waits for:
while unpaired the agent retries every 5 s at most, once paired it backs off up to the shipped
60 s (+-20 %) whenever the console does not answer.  py-ref (bench/_reference.py) is sampled
during every timed step as the machine reference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any
from unittest import mock

import tomli_w

from bench._reference import Sampler
from firmware.config import ConsoleLink
from firmware.shared.cli import main_guard
from firmware.shared.proc import run
from scripts.image import armed, build
from scripts.lab import Lab

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
BUILD_TIMEOUT = 3600.0  # a cold build under arm64 emulation takes ~10 minutes


LAB_PROVISIONING = armed.provisioning  # what the image tests use (max_backoff = 2.0)
SHIPPED_MAX_BACKOFF = ConsoleLink.max_backoff


def in_ref(minutes: float, py_us: float) -> str:
    """A build time as the ratio to the machine reference sampled during it: the time in units
    of a million py-ref runs (py-ref ~100 µs: 1 unit ~ 1.7 min).  The figure to track."""
    return f"{minutes * 60e6 / (py_us * 1e6):.2f} Mref" if py_us else "no py-ref"


def timed_build(board: str, out: Path, env: dict[str, str], *extra: str) -> tuple[float, float]:
    """(minutes, py-ref µs sampled during the build)."""
    start = time.monotonic()
    log = out.parent / f"{out.name}.log"
    with Sampler(period=1.0) as ref:
        proc = run(build.command(board, out, *extra), cwd=REPO, env=env, capture=True,
                   timeout=BUILD_TIMEOUT)
    log.write_bytes(proc.stdout + proc.stderr)
    return (time.monotonic() - start) / 60, ref.py_us


def shipped_provisioning(lab: Lab, node: str, heartbeat: float,
                         limits: dict[str, Any] | None = None) -> str:
    """armed.provisioning without the lab's max_backoff override: the agent's shipped default."""
    doc = tomllib.loads(LAB_PROVISIONING(lab, node, heartbeat, limits))
    doc["console"].pop("max_backoff", None)
    return tomli_w.dumps(doc)


def sizes(board: str, out: Path) -> None:
    squash = build.work_dir(out) / "root.squashfs"
    xz = out / f"coalmine-{board}.img.xz"
    print(f"   {board}: root squashfs {squash.stat().st_size / MIB:.1f} MiB, "
          f".img.xz {xz.stat().st_size / MIB:.1f} MiB "
          f"({xz.stat().st_size / 1e6:.1f} MB; goal <= 100 MB)")


def boot_figure(out: Path, work: Path) -> None:
    """The shipped device from power-on to armed, through pairing, then the button's path."""
    (work / "lab").mkdir(parents=True, exist_ok=True)
    with Lab(work / "lab", with_device=False) as lab, Sampler(period=1.0) as ref:
        # armed.boot writes armed.provisioning(...) into the image: the shipped settings instead
        with mock.patch.object(armed, "provisioning", shipped_provisioning):
            guest = armed.boot(lab, out, work)
        try:
            armed.arm(lab, guest)
            first = lab.wait_event(lambda e: True, timeout=300)
            stored = time.monotonic()
            press = press_figure(lab, guest)
        finally:
            guest.stop()
    print(f"   qemu-arm64 (TCG, 2 vCPUs), shipped max_backoff {SHIPPED_MAX_BACKOFF:g} s, first "
          f"boot of a fresh card (config mode by itself):\n"
          f"     start -> pairing code on serial {guest.code_seen - guest.started:.1f} s, "
          f"-> pairing pending at the console {guest.pending - guest.started:.1f} s\n"
          f"     approved -> first heartbeat {guest.armed - guest.approved:.1f} s, "
          f"-> first event stored {stored - guest.approved:.1f} s (logtype {first['logtype']})\n"
          f"     start -> first heartbeat at the console {guest.armed - guest.started:.1f} s\n"
          f"     {press}\n"
          f"     (py-ref during the boot {ref.py_us:.1f} µs)")


def press_figure(lab: Lab, guest: armed.Guest) -> str:
    """A short press (leave config mode), then a 3.5 s press: from the start of the long press
    to CONFIG_MODE_ENTERED stored at the console (long_press is 3 s of it)."""
    guest.press(0.3)
    lab.wait_event(lambda e: e["logtype"] == 1105, timeout=120)
    start = time.monotonic()
    guest.press(3.5)
    lab.wait_event(lambda e: e["logtype"] == 1104 and e["logdata"]["REASON"] == "button",
                   timeout=120)
    return (f"long press (3.5 s, enters at 3 s) started -> config mode entered, stored at the "
            f"console {time.monotonic() - start:.1f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--board", default="qemu-arm64")
    parser.add_argument("--skip-cold", action="store_true", help="no cold build")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coalmine-bench-") as tmp:
        base = Path(tmp)
        env = dict(os.environ)
        warm, ref1 = timed_build(args.board, base / "warm", env)  # fills the caches if empty
        warm2, ref2 = timed_build(args.board, base / "warm2", env)
        print(f"   warm rebuild (download + stage cache present): {warm2:.1f} min = "
              f"{in_ref(warm2, ref2)}, py-ref during it {ref2:.1f} µs (first build of this run: "
              f"{warm:.1f} min = {in_ref(warm, ref1)}; goal <= 5 min)")
        sizes(args.board, base / "warm2")
        if not args.skip_cold:
            cold_env = {**env, "COALMINE_DL": str(base / "cold-cache" / "dl")}
            cold, ref3 = timed_build(args.board, base / "cold", cold_env, "--no-stage-cache")
            print(f"   cold build (empty download and stage caches): {cold:.1f} min = "
                  f"{in_ref(cold, ref3)}, py-ref during it {ref3:.1f} µs (goal <= 15 min)")
        if args.board == "qemu-arm64":
            boot_figure(base / "warm2", base / "boot")


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
