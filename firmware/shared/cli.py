"""The one guard around every command-line entry point (device runtime, console, build scripts).

Library code raises; only entry points print errors and exit.  ``main_guard`` turns a
``CoalmineError`` into its message, its hint and its exit code, an ``OSError`` that escaped the
library (full disk, permissions, a missing file) into the operating system's own words with
what to check, and Ctrl-C into exit status 130.  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable

from firmware.shared.errors import CoalmineError

EX_OSERR = 71
OS_HINT = "check free space (df -h) and permissions of the paths involved, then run it again"


def module_command(module: str) -> str:
    """How a person runs ``module`` with this very interpreter, for usage lines and hints.

    On the build host the project's Python lives in a virtual environment (.venv/): a hint
    saying "python3 -m console" would send the user to a Python without the libraries.
    """
    exe = sys.executable or "python3"
    if exe == shutil.which("python3"):
        return f"python3 -m {module}"
    rel = os.path.relpath(exe)
    return f"{rel if not rel.startswith('..') else exe} -m {module}"


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr (the journal); SIGUSR1 dumps every thread's stack there (stuck daemons)."""
    faulthandler.register(signal.SIGUSR1, file=2, all_threads=True)  # fd 2, even if captured
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def report(exc: CoalmineError) -> int:
    """Print ``exc`` as message + hint on stderr; return its exit code."""
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return exc.exit_code


def main_guard(work: Callable[[], int | None], *, os_hint: str = OS_HINT) -> int:
    """Run ``work``; every expected failure becomes a message, a hint and an exit code."""
    try:
        return work() or 0
    except CoalmineError as exc:
        return report(exc)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        print(f"hint: {os_hint}", file=sys.stderr)
        return EX_OSERR
    except KeyboardInterrupt:
        return 130
