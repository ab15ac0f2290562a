"""Release verification: what a device spends believing an update before it installs it.

A release manifest signed 3 of 5 (firmware.protocol.trust.verify_release: envelope parse,
three Ed25519 signatures, the manifest's rules), then its 384 MiB root slot streamed from a
file on disk through ``ComponentCheck`` (1 MiB reads: storage included; the page cache is
dropped first when the kernel lets us, else the row says "warm").  The shipped hash is
BLAKE2b-256; SHA-256 is measured on the same file beside it, because the Pi 4's Cortex-A72
cores have no SHA instructions (Python's SHA-256 is then plain C, BLAKE2b's 64-bit design the
faster one; this x86 builder may have SHA-NI, which flatters SHA-256 here).  Each row is also
run with the other core kept busy by a second process.  Figures on the emulated arm64 board
would measure QEMU's translator, not a Pi, so none are printed.

Also printed: the time one holder key takes to open with the shipped Argon2id parameters (what
each holder waits for at the ceremony, and what each passphrase guess costs an attacker).

With ``--arm64-root DIR`` (default: the image build's root tree, out/work/qemu-arm64/root, when
it exists) the same verification and hashing also run on the image's own Python and libraries
under qemu-user (cortex-a72 model, OpenSSL's ARMv8 crypto instructions switched off as the Pi 4
lacks them).  Those are emulator figures: only the ratio between the two hashes means anything.

Run: python3 -m bench.release_verify [--mib 384] [--arm64-root DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._common import ROOT, table
from bench._reference import Reference
from firmware.protocol import envelope as env
from firmware.protocol import trust
from firmware.shared.cli import main_guard
from firmware.shared.proc import output
from signing import keyfile
from tests.protocol.test_trust import NOW, Repo, signed

CHUNK = 1 << 20


def _spin(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10_000))


@contextlib.contextmanager
def other_core_busy(on: bool) -> Iterator[None]:
    if not on:
        yield
        return
    stop = multiprocessing.Event()
    proc = multiprocessing.Process(target=_spin, args=(stop,))
    proc.start()
    try:
        yield
    finally:
        stop.set()
        proc.join()


def drop_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def stream(path: Path, update: Callable[[bytes], None]) -> float:
    start = time.perf_counter()
    with path.open("rb", buffering=0) as fh:
        while chunk := fh.read(CHUNK):
            update(chunk)
    return time.perf_counter() - start


ARM64_ROOT = ROOT / "out" / "work" / "qemu-arm64" / "root"
ARM64_SCRIPT = """
import hashlib, sys, time
sys.path.insert(0, "/tmp/coalmine-bench")
from firmware.protocol import trust
here = "/tmp/coalmine-bench/"
root = trust.first_root(open(here + "root.json", "rb").read())
data = open(here + "release.json", "rb").read()
start = time.process_time()
for _ in range(20):
    rel = trust.verify_release(root, data, board="rpi4", now=NOW, floor=trust.Floor())
print(f"  manifest 3 of 5: {(time.process_time() - start) / 20 * 1000:.2f} ms")
for name in ("blake2b-256", "sha-256"):
    h = hashlib.blake2b(digest_size=32) if name.startswith("blake") else hashlib.sha256()
    start = time.perf_counter()
    with open(here + "slot", "rb", buffering=0) as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    dt = time.perf_counter() - start
    print(f"  {name}: {MIB / dt:,.0f} MiB/s ({dt:.2f} s for {MIB} MiB)")
"""


def arm64(tree: Path, root_data: bytes, release_data: bytes, slot: Path, mib: int) -> None:
    """The verification on the image's arm64 Python, under qemu-user (emulator figures)."""
    work = tree / "tmp" / "coalmine-bench"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ROOT / "firmware", work / "firmware",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (work / "root.json").write_bytes(root_data)
    (work / "release.json").write_bytes(release_data)
    shutil.copyfile(slot, work / "slot")
    script = ARM64_SCRIPT.replace("NOW", str(NOW)).replace("MIB", str(mib))
    try:
        out = output(["chroot", tree, "/usr/bin/python3", "-c", script], timeout=1800,
                     env={"QEMU_CPU": "cortex-a72", "OPENSSL_armcap": "0",
                          "PYTHONDONTWRITEBYTECODE": "1"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("  emulated arm64 (qemu-user, the image's Python 3.13; emulator speed, not a Pi's):")
    print(out.rstrip())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=384, help="size of the root slot")
    ap.add_argument("--arm64-root", type=Path, default=ARM64_ROOT if ARM64_ROOT.is_dir() else None,
                    help="an arm64 root tree with python3 (default: the image build's)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coalmine-bench-", dir="/var/tmp") as tmp:
        ref = Reference.measure(Path(tmp))
        slot = Path(tmp) / "root.squashfs"
        digest = hashlib.blake2b(digest_size=32)
        with slot.open("wb") as fh:
            block = os.urandom(CHUNK)
            for i in range(args.mib):
                piece = bytes([i & 0xFF]) + block[1:]
                fh.write(piece)
                digest.update(piece)
        root = trust.first_root(signed("root", Repo().root_payload(1), [0, 1]))
        payload = env.canonical({
            "type": "release", "version": 7, "expires": NOW + 86400, "boards": ["rpi4"],
            "components": {"root": {"length": args.mib * CHUNK, trust.HASH: digest.hexdigest()}}})
        data = signed("release", payload, [3, 5, 7])
        rounds = 200
        start = time.process_time()
        for _ in range(rounds):
            release = trust.verify_release(root, data, board="rpi4", now=NOW, floor=trust.Floor())
        sig_ms = (time.process_time() - start) / rounds * 1000
        rows = []
        for busy in (False, True):
            for name in ("blake2b-256 (shipped)", "sha-256"):
                cold = drop_cache()
                with other_core_busy(busy):
                    if name.startswith("blake2b"):
                        check = trust.ComponentCheck("root", release.components["root"])
                        seconds = stream(slot, check.update)
                        check.finish()
                    else:
                        h = hashlib.sha256()
                        seconds = stream(slot, h.update)
                rows.append([f"{name}, {'cold' if cold else 'warm'} cache"
                             f"{', other core busy' if busy else ''}",
                             f"{args.mib / seconds:,.0f} MiB/s", f"{seconds:.2f} s",
                             f"{seconds * 1000 + sig_ms:,.0f} ms"])
        print(f"  manifest 3 of 5 signatures: {sig_ms:.2f} ms CPU per verification "
              f"({sig_ms * 1000 / ref.py_us:.1f} ref)")
        params = keyfile.KdfParams()
        sealed = keyfile.seal(bytes(32), "release", "bench", "correct horse battery", params)
        start = time.perf_counter()
        keyfile.unseal(sealed, "correct horse battery")
        print(f"  one holder key unlock (Argon2id {params.memlimit >> 20} MiB, "
              f"{params.opslimit} passes, the shipped parameters): "
              f"{time.perf_counter() - start:.2f} s")
        print(table(["hashing the root slot", "throughput", f"{args.mib} MiB", "whole release"],
                    rows))
        if args.arm64_root is not None:
            arm64(args.arm64_root, signed("root", Repo().root_payload(1), [0, 1]), data, slot,
                  args.mib)
    print(f"  reference: {ref.line()}")

if __name__ == "__main__":
    sys.exit(main_guard(main))
