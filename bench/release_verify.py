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

Run: python3 -m bench.release_verify [--mib 384]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._common import table
from bench._reference import Reference
from firmware.protocol import envelope as env
from firmware.protocol import trust
from firmware.shared.cli import main_guard
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=384, help="size of the root slot")
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
    print(f"  one holder key unlock (Argon2id {params.memlimit >> 20} MiB, {params.opslimit} "
          f"passes, the shipped parameters): {time.perf_counter() - start:.2f} s")
    print(table(["hashing the root slot", "throughput", f"{args.mib} MiB", "whole release"],
                rows))
    print(f"  reference: {ref.line()}")


if __name__ == "__main__":
    sys.exit(main_guard(main))
