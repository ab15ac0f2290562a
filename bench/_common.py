"""Helpers every benchmark shares: server CPU, checkouts and their consoles, figures, tables.

Machine references (the figure every benchmark prints its results beside) live in
bench/_reference.py, which imports nothing of the project so an older checkout can use it too.

Old and new code are measured side by side: a ``Checkout`` is a source tree (this one, or an
older commit checked out elsewhere) whose console runs as its own process with that tree on
PYTHONPATH and without writing byte code into it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from firmware.shared.proc import output
from scripts.lab import HOST

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


# --- processes --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


@dataclass(frozen=True)
class Checkout:
    """A source tree whose console and protocol code a benchmark runs in its own processes."""

    label: str
    root: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.root), "PYTHONDONTWRITEBYTECODE": "1"}

    def python(self, *args: str | Path) -> list[str]:
        return [sys.executable, "-B", *map(str, args)]

    def output(self, *args: str | Path, timeout: float = 600) -> str:
        """Run ``python3 ARGS`` in this checkout; its stdout."""
        return output(self.python(*args), env=self.env(), cwd=self.root, timeout=timeout)

    def stats(self, state: Path) -> dict[str, int]:
        """The console's counters as ``console stats`` prints them (as of its last flush)."""
        text = self.output("-m", "console", "stats", "--state", state, timeout=120)
        return {k: int(v) for k, v in re.findall(r"^(\w+)\t(\d+)$", text, re.MULTILINE)}


class ConsoleServer:
    """``python3 -m console serve`` of a checkout on 127.0.0.1 (any free port)."""

    def __init__(self, checkout: Checkout, state: Path) -> None:
        self.proc = subprocess.Popen(
            checkout.python("-m", "console", "serve", "--state", state, "--listen", f"{HOST}:0"),
            cwd=checkout.root, env=checkout.env(), stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        match = re.search(rf"{re.escape(HOST)}:(\d+)", self.proc.stdout.readline())
        if match is None:
            self.stop()
            raise SystemExit(f"the {checkout.label} console did not start")
        self.port = int(match.group(1))

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM: the console flushes its state and statistics, then exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def console_server(checkout: Checkout, state: Path) -> Iterator[ConsoleServer]:
    server = ConsoleServer(checkout, state)
    try:
        yield server
    finally:
        server.stop()


# --- figures ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A plain text table; the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                         strict=True)]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)
