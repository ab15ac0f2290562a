"""``make bench``: run every benchmark under bench/ and print its figures.

Benchmarks print numbers; they never pass or fail on timing.  ``BENCH=name`` runs one.  Every
figure is printed beside a reference measured in the same run (bench/_reference.py), because
our machines differ by 2x from one run to the next: the ratio is the figure to track.  Modules
whose name starts with ``_`` are helpers, not benchmarks.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
from pathlib import Path

from firmware.shared.cli import main_guard


def main() -> int:
    only = os.environ.get("BENCH", "")
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if not m.name.startswith("_"))
    for name in names:
        if only and name != only:
            continue
        if name.startswith("image") and not only:
            print(f"== {name}: skipped (slow; run `make bench BENCH={name}`)")
            continue
        print(f"== {name}")
        module = importlib.import_module(f"bench.{name}")
        start = time.monotonic()
        module.main([])
        print(f"   ({time.monotonic() - start:.1f}s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
