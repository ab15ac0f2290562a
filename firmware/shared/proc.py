"""The one way coalmine runs another program: an argv list, a timeout, checked, logged once.

Build steps, the lab, benchmarks and tests all shell out (mmdebstrap, mksquashfs, unbound,
OpenSSH ...).  ``run`` logs the exact command with ``shlex.join`` (always, or only with V=1 when
``quiet``), never uses a shell, bounds the wait with a timeout, and turns a failure into one
``ToolError`` that names the command, its exit status and the end of its output.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from firmware.shared.errors import ToolError

VERBOSE = os.environ.get("V", "") not in ("", "0")
DEFAULT_TIMEOUT = 3600.0


def run(argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None,
        cwd: Path | None = None, stdin: bytes | None = None, capture: bool = False,
        quiet: bool = False, check: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """Run one command; stdout/stderr are captured when ``capture`` or ``quiet`` (unless V=1)."""
    args = [str(a) for a in argv]
    if VERBOSE or not quiet:
        print(f"    $ {shlex.join(args)}", file=sys.stderr if capture else sys.stdout,
              flush=True)
    pipe = subprocess.PIPE if capture or (quiet and not VERBOSE) else None
    try:
        proc = subprocess.run(args, env={**os.environ, **(env or {})}, cwd=cwd, input=stdin,
                              stdout=pipe, stderr=pipe, check=False, timeout=timeout)
    except FileNotFoundError:
        raise ToolError(f"{args[0]} is not installed",
                        hint="install the host tools: make deps (or make image-deps)") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"command timed out after {timeout:.0f}s: {shlex.join(args)}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or b"").decode(errors="replace")[-3000:] if pipe else ""
        raise ToolError(f"command failed ({proc.returncode}): {shlex.join(args)}\n"
                        f"{detail}".rstrip(), hint="rerun with V=1 for the full output")
    return proc


def output(argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None,
           cwd: Path | None = None, stdin: bytes | None = None, quiet: bool = True,
           timeout: float | None = DEFAULT_TIMEOUT) -> str:
    """``run`` with stdout captured and returned as text."""
    proc = run(argv, env=env, cwd=cwd, stdin=stdin, capture=True, quiet=quiet, timeout=timeout)
    return (proc.stdout or b"").decode(errors="replace")
