"""Shared plumbing for the device runtime's command-line entry points.

Only entry points print errors and exit: they call ``main_guard`` around their work, which turns
a ``CoalmineError`` into its message, its hint and its exit code.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from firmware.config import DEFAULT_PATH
from firmware.errors import CoalmineError


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", type=Path, metavar="FILE",
                        help=f"device.toml; repeat to layer overrides (default {DEFAULT_PATH})")


def config_paths(args: argparse.Namespace) -> list[Path]:
    return list(args.config or [DEFAULT_PATH])


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr (the journal); SIGUSR1 dumps every thread's stack there (stuck daemons)."""
    faulthandler.register(signal.SIGUSR1, file=2, all_threads=True)  # fd 2, even when captured
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def report(exc: CoalmineError) -> int:
    """Print ``exc`` as message + hint on stderr; return its exit code."""
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return exc.exit_code


def main_guard(work: Callable[[], int | None]) -> int:
    """Run ``work``; report a CoalmineError as message + hint and return its exit code."""
    try:
        return work() or 0
    except CoalmineError as exc:
        return report(exc)
    except KeyboardInterrupt:
        return 130
